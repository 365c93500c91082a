"""Point labels that do not overlap: each label tries positions around its point, nearest first, and
takes the first one that stays inside the axes and clear of every label and marker placed so far
(in a panel too crowded for that, the position overlapping least). A far position gets a leader line
back to its point. adjustText does this iteratively; a greedy pass is enough for the handful of
Pareto points a panel labels, and adds no dependency."""

from __future__ import annotations

import math

ANGLES_DEG = (45, -45, 135, -135, 90, -90, 0, 180, 22.5, -22.5, 157.5, -157.5, 67.5, -67.5, 112.5, -112.5)
DIRECTIONS = tuple((math.cos(math.radians(a)), math.sin(math.radians(a))) for a in ANGLES_DEG)
DISTANCES_PT = (6, 14, 24, 36, 50, 66, 86, 110)
LEADER_FROM_PT = 20  # beyond this distance a thin line ties the label to its point
MARKER_HALF_PX = 5


def place_labels(ax, points: list[tuple[float, float, str]], renderer, fontsize: float = 7) -> None:
    """Annotate `points` (x, y, text) on `ax`. Call after the figure's layout is final: positions are
    checked in display (pixel) coordinates."""
    inside = ax.get_window_extent(renderer)
    taken = [_marker_box(ax, x, y) for x, y, _ in points]
    for x, y, text in points:
        label = _first_free(ax, x, y, text, renderer, inside, taken, fontsize)
        taken.append(text_extent(label, renderer))


def text_extent(label, renderer):
    """A label's text box in pixels (an Annotation's own extent also spans its leader line)."""
    from matplotlib.text import Text

    label.get_window_extent(renderer)  # lays the annotation out for this renderer
    return Text.get_window_extent(label, renderer)


def _first_free(ax, x, y, text, renderer, inside, taken, fontsize):
    """The nearest free position; if none is free, the one overlapping the least."""
    own = _marker_box(ax, x, y)
    others = [b for b in taken if not _same(b, own)]  # a label may touch its own marker, no other
    best, best_overlap = None, math.inf
    for d in DISTANCES_PT:
        for ux, uy in DIRECTIONS:
            label = _annotate(ax, x, y, text, ux * d, uy * d, fontsize)
            box = text_extent(label, renderer)
            overlap = sum(_area(box, b) for b in others) if _contains(inside, box) else math.inf
            if overlap == 0 and label.arrow_patch is not None and _crosses(own, box, others):
                overlap = 1  # free, but its leader line would run through another label
            if overlap == 0:
                if best is not None:
                    best.remove()
                return label
            if overlap < best_overlap:
                if best is not None:
                    best.remove()
                best, best_overlap = label, overlap
            else:
                label.remove()
    return best if best is not None else _annotate(ax, x, y, text, DISTANCES_PT[0], DISTANCES_PT[0], fontsize)


def _annotate(ax, x, y, text, dx, dy, fontsize):
    far = math.hypot(dx, dy) >= LEADER_FROM_PT
    arrow = {"arrowstyle": "-", "color": "0.5", "lw": 0.6} if far else None
    ha = "left" if dx > 0.5 else "right" if dx < -0.5 else "center"  # the text grows away from its point
    va = "bottom" if dy > 0.5 else "top" if dy < -0.5 else "center"
    return ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", ha=ha, va=va,
                       fontsize=fontsize, arrowprops=arrow, zorder=5,
                       bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8})


def _marker_box(ax, x, y):
    from matplotlib.transforms import Bbox

    px, py = ax.transData.transform((x, y))
    h = MARKER_HALF_PX
    return Bbox.from_extents(px - h, py - h, px + h, py + h)


def _same(a, b) -> bool:
    return tuple(a.extents) == tuple(b.extents)


def _crosses(own, box, others, samples: int = 12) -> bool:
    """Whether the straight line from a marker to its label's centre runs through another box."""
    (x0, y0), (x1, y1) = own.get_points().mean(axis=0), box.get_points().mean(axis=0)
    ts = (k / samples for k in range(1, samples))
    return any(b.contains(x0 + t * (x1 - x0), y0 + t * (y1 - y0)) for t in ts for b in others if b is not box)


def _area(a, b) -> float:
    """Overlap area of two boxes (0 when apart)."""
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    return max(w, 0) * max(h, 0)


def _contains(outer, inner) -> bool:
    return (outer.x0 <= inner.x0 and inner.x1 <= outer.x1 and outer.y0 <= inner.y0 and inner.y1 <= outer.y1)
