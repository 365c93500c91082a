"""Retention against cost as PNG: one panel per place the files ran (latency) and one for size.
Colour is the format, marker shape the student (both in the legend); only the Pareto front is
labelled, so labels stay few and never overlap (see labels.py).

matplotlib is imported inside the functions (heavy) and used through `Figure` + the Agg canvas,
never pyplot, so making a report changes no global backend or state."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

from edgekd.report.labels import place_labels
from edgekd.report.matrix import FORMAT_ORDER, HOST, column_of, cpu_only_columns
from edgekd.report.pareto import pareto_front
from edgekd.types import Measurement

PANEL_IN = (4.6, 3.4)  # width, height of one panel
LEGEND_IN = 1.9
MAX_COLUMNS = 3
MARKERS = "osD^vP<>hX"
LOG_SPAN = 20  # a cost axis spanning more than this factor is drawn log-scale
DPI = 110


@dataclass(frozen=True)
class Point:
    cost: float  # ms or KiB
    retention: float
    row: Measurement


def retention_vs_latency(rows: list[Measurement]) -> bytes | None:
    """One panel per latency column of the matrices (this host, devices, targets); None: no numbers."""
    panels: dict[str, list[Point]] = {}
    for r in rows:
        if r.ok and r.latency_ms_p50 is not None and r.retention is not None:
            panels.setdefault(column_of(r), []).append(Point(r.latency_ms_p50, r.retention, r))
    cpu_only = cpu_only_columns(rows)
    titled = {_panel_title(name, cpu_only): pts for name, pts in panels.items()}
    return _figure(titled, rows, "p50 latency (ms)") if titled else None


def retention_vs_size(rows: list[Measurement]) -> bytes | None:
    """Every file once (its row measured here): retention against size on disk."""
    points = [Point(r.size_bytes / 1024, r.retention, r) for r in rows
              if column_of(r) == HOST and r.ok and r.size_bytes and r.retention is not None]
    return _figure({"all files": points}, rows, "size (KiB)") if points else None


def _panel_title(name: str, cpu_only: set[str]) -> str:
    if name == HOST:
        return "this host (measured)"
    return f"{name} (simulated, CPU only)" if name in cpu_only else name


def _figure(panels: dict[str, list[Point]], rows: list[Measurement], xlabel: str) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    style = _Style(rows)
    cols = min(MAX_COLUMNS, len(panels))
    nrows = math.ceil(len(panels) / cols)
    spare_slot = nrows * cols > len(panels)  # the legend takes an empty grid slot, else a right margin
    legend_in = 0 if spare_slot else LEGEND_IN
    fig = Figure(figsize=(PANEL_IN[0] * cols + legend_in, PANEL_IN[1] * nrows), dpi=DPI)
    canvas = FigureCanvasAgg(fig)
    axes = list(fig.subplots(nrows, cols, squeeze=False).flat)
    fronts = [_panel(ax, title, pts, style, xlabel) for ax, (title, pts) in zip(axes, panels.items())]
    for ax in axes[len(panels):]:
        ax.set_axis_off()
    _legend(fig, axes[len(panels):], style)
    fig.tight_layout(rect=(0, 0, 1 - legend_in / fig.get_figwidth(), 1))
    renderer = canvas.get_renderer()  # labels go in last: they are placed in final pixel positions
    for ax, front in zip(axes, fronts):
        place_labels(ax, [(p.cost, p.retention, style.label(p.row)) for p in front], renderer)
    buf = io.BytesIO()
    canvas.print_png(buf)
    return buf.getvalue()


def _legend(fig, spare_axes: list, style: _Style) -> None:
    """In the first empty grid slot when there is one, else in the figure's right margin."""
    legend = {"handles": style.legend_handles(), "fontsize": 9, "frameon": False}
    if spare_axes:
        spare_axes[0].legend(loc="center", **legend)
    else:
        fig.legend(loc="center right", **legend)


def _panel(ax, title: str, points: list[Point], style: _Style, xlabel: str) -> list[Point]:
    """Draw one panel; return its Pareto points (labelled once the layout is final)."""
    front_idx = pareto_front([(p.cost, p.retention) for p in points])
    front = sorted((points[i] for i in front_idx), key=lambda p: (p.cost, p.retention))
    for i, p in enumerate(points):
        on_front = i in front_idx
        ax.scatter(p.cost, p.retention, s=55 if on_front else 28, marker=style.marker(p.row),
                   color=style.colour(p.row), edgecolors="black" if on_front else "none",
                   linewidths=0.9, zorder=3 if on_front else 2, alpha=1 if on_front else 0.75)
    if len(front) > 1:
        ax.step([p.cost for p in front], [p.retention for p in front], where="post", color="0.45",
                lw=0.9, ls="--", zorder=1)
    costs = [p.cost for p in points]
    if min(costs) > 0 and max(costs) / min(costs) > LOG_SPAN:
        ax.set_xscale("log")
    ax.margins(x=0.18, y=0.25)  # room for labels inside the axes
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel("retention", fontsize=9)
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.3)
    return front


class _Style:
    """Colour by format, marker by student, the same in every panel and in the legend."""

    def __init__(self, rows: list[Measurement]):
        rank = {f: i for i, f in enumerate(FORMAT_ORDER)}
        formats = sorted({r.format for r in rows}, key=lambda f: (rank.get(f, len(rank)), f))
        self.colours = {f: f"C{i % 10}" for i, f in enumerate(formats)}
        students = list(dict.fromkeys(r.model for r in rows))
        self.markers = {s: MARKERS[i % len(MARKERS)] for i, s in enumerate(students)}

    def colour(self, row: Measurement) -> str:
        return self.colours[row.format]

    def marker(self, row: Measurement) -> str:
        return self.markers[row.model]

    def label(self, row: Measurement) -> str:
        name = f"{row.format}/{row.quant}"
        return f"{row.model} {name}" if len(self.markers) > 1 else name

    def legend_handles(self) -> list:
        from matplotlib.lines import Line2D

        def handle(label, **kw):
            return Line2D([], [], ls="none", label=label, markersize=7, **kw)

        handles = [handle(f, marker="s", color=c) for f, c in self.colours.items()]
        if len(self.markers) > 1:
            handles += [handle(s, marker=m, color="0.4") for s, m in self.markers.items()]
        handles.append(handle("Pareto front\n(labelled)", marker="o", color="white", markeredgecolor="black"))
        return handles
