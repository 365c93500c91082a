"""How one number reads in the report: latency, size, ratios, accelerator share. Every renderer
(HTML, Markdown, terminal) formats through these, so a number reads the same everywhere."""

from __future__ import annotations

from edgekd.types import Measurement

NONE = "-"


def ms(value: float | None) -> str:
    """Three significant figures, never scientific notation: 0.0412, 1.23, 12.3, 123."""
    if value is None:
        return NONE
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def size(size_bytes: int | None) -> str:
    if size_bytes is None:
        return NONE
    if size_bytes < 1024:
        return f"{size_bytes} B"
    if size_bytes < 1024**2:
        return f"{size_bytes / 1024:.1f} KiB"
    return f"{size_bytes / 1024**2:.2f} MiB"


def ratio(value: float | None, digits: int = 3) -> str:
    """Retention and agreement are ratios (1.0 = as good as the teacher), printed as ratios."""
    return NONE if value is None else f"{value:.{digits}f}"


def residency(row: Measurement) -> str:
    """The share of ops / time on the target's accelerator. A CPU-only target has no accelerator to
    share, so it says so instead of printing a misleading 0%."""
    if row.kind == "simulated" and not row.accelerator:
        return "CPU only"
    share = row.accelerator_residency
    if not share:
        return NONE
    return f"{share['ops']:.0%} ops / {share['time']:.0%} time"


def file_label(row: Measurement) -> str:
    """What a file is, in the words of the export: `tflite/int8`."""
    return f"{row.format}/{row.quant}"


def short_reason(reason: str, limit: int = 100) -> str:
    """The first line of a failure, cut to `limit` characters (the full text stays in the title)."""
    first = reason.strip().splitlines()[0] if reason.strip() else "failed"
    return first if len(first) <= limit else first[: limit - 1] + "…"
