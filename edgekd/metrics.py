"""Retention and agreement: computed here and nowhere else, so a figure means the same thing in the
distill log, bench.json, the gate and the bundle."""

from __future__ import annotations

import math

import numpy as np


def retention(accuracy: float, teacher_accuracy: float | None) -> float | None:
    """accuracy / teacher accuracy (a ratio, not a percent); None when the teacher's is unknown or 0."""
    if teacher_accuracy is None or not teacher_accuracy > 0:
        return None
    return accuracy / teacher_accuracy


def top1_agreement(a_top1: np.ndarray, b_top1: np.ndarray) -> float:
    """Share of inputs on which two models pick the same class. a_top1, b_top1: (N,) class ids."""
    a, b = np.asarray(a_top1), np.asarray(b_top1)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"top-1 arrays must both be (N,), got {a.shape} and {b.shape}")
    return float((a == b).mean()) if len(a) else float("nan")


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (Wilson 1927): sound near 0 and 1, where the normal
    approximation is not (an agreement of 0.99 on 256 inputs is 0.966..0.997)."""
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return (lo, hi)
