"""Students by budget: the zoo width (and depth, from an allowed range) whose parameter count lands
closest to a target, so a student called "30x" is 30x (within 10%)."""

from __future__ import annotations

from edgekd.errors import InputError
from edgekd.models.zoo import build_model, count_params

TOLERANCE = 0.10  # the achieved count may miss the target by this share


def params_at(arch: str, input_shape: tuple[int, ...], num_classes: int, width: float,
              depth: int | None) -> int:
    return count_params(build_model(arch, input_shape, num_classes, width=width, depth=depth))


def fit_width(arch: str, input_shape: tuple[int, ...], num_classes: int, target_params: float,
              depths: list[int | None], where: str) -> tuple[float, int | None, int]:
    """(width, depth, params) of the zoo family `arch` closest to `target_params`; the count grows with
    the width (in steps, as channels are whole), so a bisection per allowed depth finds it."""
    best = None
    for depth in depths:
        lo, hi = 1e-3, 16.0
        for _ in range(40):
            mid = (lo * hi) ** 0.5  # bisect in log space: widths span orders of magnitude
            if params_at(arch, input_shape, num_classes, mid, depth) < target_params:
                lo = mid
            else:
                hi = mid
        for width in (lo, hi):
            n = params_at(arch, input_shape, num_classes, width, depth)
            miss = abs(n - target_params) / target_params
            if best is None or miss < best[0]:
                best = (miss, round(width, 4), depth, n)
    miss, width, depth, n = best
    if miss > TOLERANCE:
        raise InputError(f"{where}: no width of {arch!r} (depths {depths}) lands within {TOLERANCE:.0%} of "
                         f"{target_params:,.0f} parameters (closest: {n:,} at width {width}); "
                         "allow other depths or choose another budget")
    return width, depth, n
