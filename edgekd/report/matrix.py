"""The per-student matrix: one line per exported file (format/quant), one column per number.

Columns are size, retention, teacher agreement, then p50 latency wherever the file ran: "this host"
(each format on its own runtime here: torch-eager, tflite, onnxruntime, ...), an attached device
(`android:<delegate>`) and each simulated target. Renderers (HTML, Markdown, terminal) only lay out
what this module decides."""

from __future__ import annotations

from dataclasses import dataclass

from edgekd.report import cells
from edgekd.types import UNCALIBRATED, Measurement

HOST = "this host"
FORMAT_ORDER = ("torch", "tflite", "onnx", "coreml")
QUANT_ORDER = ("fp32", "fp16", "int8")
METRICS = ("size", "retention", "teacher agreement")


@dataclass(frozen=True)
class Cell:
    text: str
    detail: str = ""  # what a hover (title) or footnote adds: the runtime, or the whole failure reason
    sub: str = ""  # a second, smaller line: accelerator share on an accelerator target
    failed: bool = False


@dataclass(frozen=True)
class Column:
    name: str
    note: str = ""  # "p50 ms", "p50 ms, CPU only", ...


@dataclass(frozen=True)
class FileLine:
    label: str  # "tflite/int8"
    artifact: str
    cells: tuple[Cell, ...]  # one per Matrix.columns
    ships: tuple[str, ...] = ()  # the platforms the gate chose this file for


@dataclass(frozen=True)
class Matrix:
    model: str
    columns: tuple[Column, ...]
    files: tuple[FileLine, ...]

    def footnotes(self) -> dict[str, int]:
        """Each distinct failure reason in the matrix, numbered from 1 in reading order."""
        reasons = (c.detail for f in self.files for c in f.cells if c.failed)
        return {reason: n for n, reason in enumerate(dict.fromkeys(reasons), 1)}


def column_of(row: Measurement) -> str:
    """The latency column a row fills: its target, its device runner, or this host."""
    if row.target:
        return row.target
    if row.runner and ":" in row.runner:  # "android:gpu": a device, not a runtime on this host
        return row.runner
    return HOST


def host_row(rows: list[Measurement], model: str, artifact: str) -> Measurement | None:
    """The row measured here: it carries the file's accuracy, retention and agreement."""
    mine = (r for r in rows if r.model == model and r.artifact == artifact and column_of(r) == HOST)
    return next(mine, None)


def build(rows: list[Measurement], ships: dict[tuple[str, str], tuple[str, ...]]) -> list[Matrix]:
    """One matrix per student, students and columns in the order the bench wrote them; `ships` maps
    (student, artifact) to the platforms that ship it."""
    cpu_only = cpu_only_columns(rows)
    uncalibrated = uncalibrated_columns(rows)
    matrices = []
    for model in _unique(r.model for r in rows):
        mine = [r for r in rows if r.model == model]
        latency = _unique(sorted((column_of(r) for r in mine), key=_column_rank(rows)))
        columns = [Column(m) for m in METRICS]
        columns += [Column(c, _latency_note(c, cpu_only, uncalibrated)) for c in latency]
        artifacts = sorted(_unique(r.artifact for r in mine), key=lambda a: _file_rank(mine, a))
        files = [_file_line(mine, model, a, latency, ships.get((model, a), ())) for a in artifacts]
        matrices.append(Matrix(model, tuple(columns), tuple(files)))
    return matrices


def cpu_only_columns(rows: list[Measurement]) -> set[str]:
    """Targets whose profile has no accelerator (every simulated row there says so)."""
    sims = [r for r in rows if r.kind == "simulated" and r.ok]
    names = {column_of(r) for r in sims}
    return {n for n in names if not any(r.accelerator for r in sims if column_of(r) == n)}


def uncalibrated_columns(rows: list[Measurement]) -> set[str]:
    """Simulated targets whose profile was never held against a real device (a calibrated profile's row
    may lack a band for its file's kernels alone: that says nothing of the column)."""
    return {column_of(r) for r in rows if r.kind == "simulated" and r.ok and r.latency_band_ms is None
            and r.no_band in (None, UNCALIBRATED)}


def _file_line(rows: list[Measurement], model: str, artifact: str, latency: list[str],
               ships: tuple[str, ...]) -> FileLine:
    mine = [r for r in rows if r.artifact == artifact]
    host = host_row(mine, model, artifact)
    sized = next((r.size_bytes for r in mine if r.size_bytes is not None), None)
    size_cell = Cell(cells.size(sized), f"{sized} bytes" if sized is not None else "")
    metrics = [size_cell, *_quality_cells(host)]
    by_column = {}
    for r in mine:
        by_column.setdefault(column_of(r), r)
    timings = [_latency_cell(by_column.get(c)) for c in latency]
    return FileLine(cells.file_label(mine[0]), artifact, tuple(metrics + timings), ships)


def _quality_cells(host: Measurement | None) -> list[Cell]:
    if host is None:
        return [Cell(cells.NONE), Cell(cells.NONE)]
    if host.failed:
        failed = Cell("failed", host.failed, failed=True)
        return [failed, failed]
    return [Cell(cells.ratio(host.retention), _accuracy_detail(host)),
            Cell(cells.ratio(host.teacher_agreement))]


def _accuracy_detail(host: Measurement) -> str:
    return "" if host.accuracy is None else f"accuracy {host.accuracy:.4f} on the test split"


def _latency_cell(row: Measurement | None) -> Cell:
    if row is None:
        return Cell("")  # not run there: the target does not take this format
    if row.failed:
        return Cell("failed", row.failed, failed=True)
    share = row.accelerator_residency if row.accelerator else None
    sub = f"{share['ops']:.0%} accel" if share else ""
    return Cell(cells.ms(row.latency_ms_p50), _latency_detail(row), sub)


def _latency_detail(row: Measurement) -> str:
    parts = [row.kind]
    if row.latency_ms_p90 is not None:  # measured; a simulated row is one estimate with a band
        parts.append(f"p90 {cells.ms(row.latency_ms_p90)} ms")
    if row.runtime_version:
        parts.append(f"{row.runner} {row.runtime_version}")
    if row.threads:
        parts.append(f"{row.threads} thread{'s' if row.threads > 1 else ''}")
    if row.kind == "simulated":
        parts.append(f"accelerator: {cells.residency(row)}")
        band = row.latency_band_ms
        parts.append(f"80% band {cells.ms(band[0])}-{cells.ms(band[1])} ms (the profile's calibration)"
                     if band else f"no error band ({row.no_band or UNCALIBRATED})")
    return "; ".join(parts)


def _latency_note(column: str, cpu_only: set[str], uncalibrated: set[str] = frozenset()) -> str:
    if column == HOST:
        return "p50 ms, measured"
    note = "p50 ms, CPU only" if column in cpu_only else "p50 ms"
    return note + (", uncalibrated" if column in uncalibrated else "")


def _column_rank(rows: list[Measurement]):
    """This host first, then devices, then simulated targets, each in the bench's order."""
    first_seen = {c: i for i, c in reversed(list(enumerate(column_of(r) for r in rows)))}

    def rank(column: str) -> tuple[int, int]:
        group = 0 if column == HOST else 1 if ":" in column else 2
        return group, first_seen[column]

    return rank


def _file_rank(rows: list[Measurement], artifact: str) -> tuple:
    row = next(r for r in rows if r.artifact == artifact)
    fmt = FORMAT_ORDER.index(row.format) if row.format in FORMAT_ORDER else len(FORMAT_ORDER)
    quant = QUANT_ORDER.index(row.quant) if row.quant in QUANT_ORDER else len(QUANT_ORDER)
    return fmt, row.format, quant, row.quant, artifact


def _unique(items) -> list:
    return list(dict.fromkeys(items))
