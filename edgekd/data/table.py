"""What the table sources (csv, parquet) share: feature columns and a label column -> RawData.

Rows become inputs (N, 1, F), float32, in the file's column order without the label column. String
labels become class names (sorted); integer labels are class ids 0..C-1, named "0".."C-1". A seeded,
stratified 20% of each class is held out for testing.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import numpy as np

from edgekd.data.source import RawData
from edgekd.data.split import stratified_holdout
from edgekd.errors import InputError


def label_column_index(path: Path, columns: list[str], label_column: str) -> int:
    if label_column not in columns:
        raise InputError(f"{path}: no column {label_column!r} (data.label_column in the recipe); its "
                         f"columns are {', '.join(map(repr, columns[:20]))}: set data.label_column to the "
                         "class column")
    if len(columns) < 2:
        raise InputError(f"{path}: only the label column {label_column!r}; a table needs feature columns too")
    return columns.index(label_column)


def ints_or_names(values: list[str], path: Path, column: str) -> list:
    """Labels read as text (a CSV cell, a JSON value) as class ids when every one is a whole number (`2`
    and `2.0` alike, as Parquet's float columns), as names when any is not a number; numbers with a
    fraction are refused, as in Parquet."""
    nums = numbers(values)
    if nums is None:
        return values  # class names
    bad = next((v for v, n in zip(values, nums) if not whole(n)), None)
    if bad is not None:
        raise InputError(f"{path}: column {column!r} holds non-integer numbers (e.g. {bad!r}); class labels "
                         "must be integer ids 0..C-1 or names")
    return [int(n) for n in nums]


def numbers(values: list[str]) -> list[float] | None:
    """Labels read as text as numbers, or None when any is not a number."""
    try:
        return [float(v) for v in values]
    except ValueError:
        return None


def whole(n: float) -> bool:
    return math.isfinite(n) and n.is_integer()


def class_ids(values: list, path: Path, label_column: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """Labels as (ids (N,), class names): integers are ids, anything else a class name (sorted)."""
    present = sorted({str(v) for v in values})
    if len(present) < 2:
        raise InputError(f"{path}: column {label_column!r} holds {len(present)} class(es) "
                         f"({', '.join(map(repr, present))}); a classifier needs at least 2 "
                         "(is data.label_column the class column?)")
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        ids = np.asarray(values, np.int64)
        if len(ids) and ids.min() < 0:
            row = int(np.argmin(ids))
            raise InputError(f"{path}: column {label_column!r} holds class id {ids[row]} (row {row + 1}); "
                             "integer labels are class ids 0..C-1: renumber them")
        missing = sorted(set(range(int(ids.max()) + 1)) - set(ids.tolist())) if len(ids) else []
        if missing:  # a class with no row (1-based ids, a gap) would be trained as a class of its own
            raise InputError(f"{path}: column {label_column!r} holds class ids up to {int(ids.max())} but no "
                             f"row of class {', '.join(map(str, missing[:5]))}; integer labels are class ids "
                             "0..C-1, each with rows: renumber them (1-based? subtract 1) or use class names")
        return ids, tuple(str(i) for i in range(int(ids.max()) + 1 if len(ids) else 0))
    names = tuple(present)
    return np.searchsorted(np.array(names), np.array([str(v) for v in values])).astype(np.int64), names


def check_finite(x: np.ndarray, path: Path, columns: list[str], where: Callable[[int], str]) -> None:
    """x: (N, F). Names the first NaN/inf value's column and row."""
    bad = ~np.isfinite(x)
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        raise InputError(f"{path}: column {columns[col]!r} holds NaN/inf ({int(bad.sum())} value(s); first "
                         f"in {where(row)}); remove or impute them")


def to_raw(x: np.ndarray, y: np.ndarray, labels: tuple[str, ...], seed: int) -> RawData:
    """x: (N, F) float, y: (N,) ids -> RawData with inputs (N, 1, F) and a stratified 80/20 split."""
    x = x.astype(np.float32)[:, None, :]
    train, test = stratified_holdout(y, seed)
    return RawData(x[train], y[train], x[test], y[test], labels)
