"""Write the report: verdict first, a matrix per student, Pareto plots, every row last.

    rows (+ verdict) -> headline, matrices, plots, full table -> report.md, report.html, PNGs"""

from __future__ import annotations

from pathlib import Path

from edgekd.fileio import atomic_path
from edgekd.gate.verdict import Verdict
from edgekd.report import html, markdown, matrix, plots, table
from edgekd.report.compression import compression_rows
from edgekd.report.dropped import dropped_rows
from edgekd.report.headline import headline, shipped_files
from edgekd.types import Measurement

PLOTS = {  # heading -> (file name, figure)
    "Retention vs latency, per runner and target": ("retention_vs_latency.png", plots.retention_vs_latency),
    "Retention vs size": ("retention_vs_size.png", plots.retention_vs_size),
}


def write_report(rows: list[Measurement], out_dir: Path, *, title: str, teacher_accuracy: float | None,
                 verdict: Verdict | None = None, compression: list[dict] = (),
                 dropped: list[dict] = ()) -> tuple[Path, Path]:
    """Write `out_dir/report.md`, a self-contained `out_dir/report.html` and the PNG plots, each
    atomically; return (report.md, report.html). `verdict` None: the gate has not run yet.
    `compression`: compress.json's rows (the compression-aware students), listed after the matrices;
    `dropped`: the files export did not keep (artifacts.json's failures, each with its `model`)."""
    out_dir = Path(out_dir)
    head = headline(verdict, rows)
    matrices = matrix.build(rows, shipped_files(verdict))
    full = table.full_rows(rows)
    comp = compression_rows(list(compression))
    drop = dropped_rows(list(dropped))
    pngs = {heading: draw(rows) for heading, (_, draw) in PLOTS.items()}
    names = {heading: PLOTS[heading][0] if png else None for heading, png in pngs.items()}
    for heading, png in pngs.items():
        path = out_dir / PLOTS[heading][0]
        if png:
            _write(path, png)
        else:
            path.unlink(missing_ok=True)  # a plot from an earlier run must not outlive its numbers
    md_path, html_path = out_dir / "report.md", out_dir / "report.html"
    md = markdown.render(title, teacher_accuracy, head, matrices, names, full, comp, drop)
    _write(md_path, md.encode())
    _write(html_path, html.render(title, teacher_accuracy, head, matrices, pngs, full, comp, drop).encode())
    return md_path, html_path


def _write(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
