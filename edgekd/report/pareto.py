"""The Pareto front of (cost, retention) points: what no other file beats on both."""

from __future__ import annotations


def pareto_front(points: list[tuple[float, float]]) -> set[int]:
    """Indices of the points no other point dominates; lower cost (x) and higher retention (y) win.
    Of two identical points both are kept."""

    def dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
        return a[0] <= b[0] and a[1] >= b[1] and a != b

    return {i for i, p in enumerate(points) if not any(dominates(q, p) for q in points)}
