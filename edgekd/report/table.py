"""The full table: every bench row, one line each, for readers who want all the numbers. It goes
last in the report; the matrices above it are the readable view of the same rows."""

from __future__ import annotations

from edgekd.report import cells
from edgekd.types import Measurement

HEADERS = ("student", "file", "format/quant", "kind", "runner/target", "size B", "p50 ms", "p90 ms",
           "accuracy", "retention", "agreement", "accelerator")
FIRST_NUMBER = HEADERS.index("size B")  # a failed row's reason spans the columns from here on


def full_rows(rows: list[Measurement]) -> list[list[str]]:
    """One list of cells per row; a failed row ends in a single cell: "failed: <reason>"."""
    return [_identity(r) + (_failure(r) if r.failed else _numbers(r)) for r in rows]


def _identity(r: Measurement) -> list[str]:
    return [r.model, r.artifact, cells.file_label(r), r.kind, r.where]


def _failure(r: Measurement) -> list[str]:
    return [f"failed: {r.failed}"]


def _numbers(r: Measurement) -> list[str]:
    size = cells.NONE if r.size_bytes is None else str(r.size_bytes)
    quality = [cells.ratio(v, 4) for v in (r.accuracy, r.retention, r.teacher_agreement)]
    return [size, cells.ms(r.latency_ms_p50), cells.ms(r.latency_ms_p90), *quality, cells.residency(r)]
