"""`edgekd compare`: bench.json -> a terminal table, report.md and a self-contained report.html with
PNG plots (retention vs latency and vs size, Pareto front marked, one panel per runner/target)."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from edgekd.fileio import atomic_path, read_json

COLUMNS = [("artifact", "artifact"), ("where", "runner/target"), ("size_bytes", "size B"),
           ("latency_ms_p50", "p50 ms"), ("latency_ms_p90", "p90 ms"), ("accuracy", "acc"),
           ("retention", "retention"), ("teacher_agreement", "agree"), ("residency", "accel ops/time")]


def load_bench(directory: Path) -> dict:
    path = Path(directory)
    return read_json(path / "bench.json" if path.is_dir() else path, "bench.json", "run `edgekd bench` first")


def where(row: dict) -> str:
    return row.get("target") or row.get("runner") or row.get("format", "?")


def _cell(row: dict, key: str) -> str:
    if key == "where":
        return where(row)
    if key == "residency":
        r = row.get("accelerator_residency")
        return f"{r['ops']:.0%}/{r['time']:.0%}" if r else ""
    v = row.get(key)
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4f}" if key in ("accuracy", "retention", "teacher_agreement") else f"{v:.4g}"
    return str(v)


def table_rows(bench: dict) -> list[list[str]]:
    out = []
    for r in bench["rows"]:
        if "failed" in r:
            out.append([r.get("artifact", "?"), where(r), "FAILED: " + r["failed"][:80]] + [""] * (len(COLUMNS) - 3))
        else:
            out.append([_cell(r, k) for k, _ in COLUMNS])
    return out


def text_table(bench: dict) -> str:
    head = [h for _, h in COLUMNS]
    rows = table_rows(bench)
    widths = [max(len(head[i]), *(len(r[i]) for r in rows)) if rows else len(head[i]) for i in range(len(head))]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([line(head), line(["-" * w for w in widths]), *map(line, rows)])


def pareto(points: list[tuple[float, float]]) -> set[int]:
    """Indices of points not dominated: lower cost (x) and higher retention (y) win."""
    front = set()
    for i, (x, y) in enumerate(points):
        if not any((x2 <= x and y2 >= y) and (x2 < x or y2 > y) for j, (x2, y2) in enumerate(points) if j != i):
            front.add(i)
    return front


def _plot(bench: dict, xkey: str, xlabel: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in bench["rows"] if "failed" not in r and r.get(xkey) is not None and r.get("retention") is not None]
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(where(r) if xkey.startswith("latency") else "all files", []).append(r)
    n = max(1, len(groups))
    cols = min(3, n)
    fig, axes = plt.subplots((n + cols - 1) // cols, cols, figsize=(5 * cols, 3.6 * ((n + cols - 1) // cols)),
                             squeeze=False)
    for ax, (name, rs) in zip(axes.flat, groups.items()):
        pts = [(r[xkey], r["retention"]) for r in rs]
        front = pareto(pts)
        for i, (r, (x, y)) in enumerate(zip(rs, pts)):
            ax.scatter(x, y, s=60 if i in front else 25, marker="*" if i in front else "o",
                       color="C3" if i in front else "C0", zorder=3)
            ax.annotate(f"{r.get('model', '')} {r['format']}/{r['quant']}", (x, y), fontsize=6, xytext=(3, 3),
                        textcoords="offset points")
        fx = sorted((pts[i] for i in front))
        if len(fx) > 1:
            ax.plot([p[0] for p in fx], [p[1] for p in fx], color="C3", lw=1, ls="--", zorder=2)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("retention (acc / teacher acc)")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(groups):]:
        ax.axis("off")
    fig.suptitle(f"{bench['model']}: retention vs {xlabel} (red stars: Pareto front)", fontsize=11)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def write_report(bench: dict, out_dir: Path) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    plots = {"latency": _plot(bench, "latency_ms_p50", "p50 latency (ms)"), "size": _plot(bench, "size_bytes", "size (bytes)")}
    for name, png in plots.items():
        with atomic_path(out_dir / f"retention_vs_{name}.png") as tmp:
            tmp.write_bytes(png)
    head = [h for _, h in COLUMNS]
    rows = table_rows(bench)
    md = [f"# edgekd report: {bench['model']}", "",
          f"Teacher accuracy: {bench.get('teacher_accuracy')}. Measured rows ran here; simulated rows are the "
          "roofline simulator's prediction for that target (see targets/).", "",
          "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    md += ["| " + " | ".join(c.replace("|", "/") for c in r) + " |" for r in rows]
    md += ["", "![retention vs latency](retention_vs_latency.png)", "", "![retention vs size](retention_vs_size.png)", ""]
    with atomic_path(out_dir / "report.md") as tmp:
        tmp.write_text("\n".join(md))
    imgs = "".join(f'<h2>Retention vs {n}</h2><img alt="retention vs {n}" src="data:image/png;base64,'
                   f'{base64.b64encode(p).decode()}">' for n, p in plots.items())
    table = "<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>" + "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows) + "</table>"
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>edgekd report: {html.escape(bench['model'])}"
            "</title><style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:13px}"
            "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}img{max-width:100%}</style></head><body>"
            f"<h1>edgekd report: {html.escape(bench['model'])}</h1><p>Teacher accuracy: "
            f"{html.escape(str(bench.get('teacher_accuracy')))}</p>{table}{imgs}</body></html>")
    with atomic_path(out_dir / "report.html") as tmp:
        tmp.write_text(page)
    return out_dir / "report.md", out_dir / "report.html"
