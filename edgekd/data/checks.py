"""Checks every source shares. Each raises InputError naming the file, the field and the fix."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekd.data.source import RawData
from edgekd.errors import InputError


def as_inputs(a: np.ndarray, path: Path, key: str) -> np.ndarray:
    """An input array as float (N, C, ...); (N, L) becomes (N, 1, L)."""
    if a.dtype.kind not in "biuf":
        raise InputError(f"{path}: array {key!r} holds {a.dtype} values; inputs must be numbers "
                         "(save it with a float or integer dtype)")
    if a.ndim not in (2, 3, 4):
        raise InputError(f"{path}: {key!r} has shape {a.shape}; expected (N, L), (N, C, L) or (N, C, H, W)")
    if len(a) == 0:
        raise InputError(f"{path}: {key!r} has 0 rows; it needs samples")
    a = a.astype(np.float32) if a.dtype.kind != "f" else a
    bad = ~np.isfinite(a)
    if bad.any():
        row = int(np.argwhere(bad)[0][0])
        raise InputError(f"{path}: {key!r} holds {int(bad.sum())} NaN/inf value(s) (first in row {row}); "
                         "remove or impute them")
    return a[:, None, :] if a.ndim == 2 else a


def as_class_ids(a: np.ndarray, path: Path, key: str) -> np.ndarray:
    """Class ids as int64 (N,); floats are accepted only when they are whole numbers."""
    if a.ndim != 1:
        raise InputError(f"{path}: {key!r} has shape {a.shape}; "
                         "class ids must be (N,) (flatten it: y.ravel())")
    if a.dtype.kind == "f":
        if not np.isfinite(a).all() or (a != np.round(a)).any():
            raise InputError(f"{path}: {key!r} holds non-integer values (e.g. {a[a != np.round(a)][:1]}); "
                             "class ids must be whole numbers 0..C-1")
    elif a.dtype.kind not in "biu":
        raise InputError(f"{path}: {key!r} holds {a.dtype} values; class ids must be integers 0..C-1 "
                         "(names go in 'labels')")
    return a.astype(np.int64)


def same_rows(x: np.ndarray, y: np.ndarray, path: Path, xk: str, yk: str) -> None:
    if len(x) != len(y):
        raise InputError(f"{path}: {xk!r} has {len(x)} rows but {yk!r} has {len(y)}; they must match")


def same_width(a: np.ndarray, x: np.ndarray, path: Path, key: str) -> None:
    if a.shape[1:] != x.shape[1:]:
        raise InputError(f"{path}: {key!r} rows have shape {list(a.shape[1:])} "
                         f"but 'x' rows {list(x.shape[1:])}; they must match")


def in_range(y: np.ndarray, labels: tuple[str, ...], path: Path, key: str) -> None:
    if len(y) and (y.min() < 0 or y.max() >= len(labels)):
        raise InputError(f"{path}: {key!r} holds class ids {y.min()}..{y.max()} but there are {len(labels)} "
                         f"labels (0..{len(labels) - 1}); fix the ids or the 'labels' array")


def check_splits(raw: RawData, where: str) -> None:
    """What any source must give: enough rows, two classes or more, finite inputs."""
    if len(raw.x_train) < 2 or len(raw.x_test) < 1:
        raise InputError(f"{where}: too few samples in 'x': {len(raw.x_train)} to train on "
                         f"and {len(raw.x_test)} to test on; "
                         "distillation needs at least 2 and 1 (many more, to mean anything)")
    present = np.unique(raw.y_train)
    if len(raw.labels) < 2 or len(present) < 2:
        raise InputError(f"{where}: 'y' holds {len(present)} class(es) ({len(raw.labels)} labels); "
                         "a classifier needs at least 2 (one class ships a trivial model)")
    for key, a in (("training inputs", raw.x_train), ("test inputs", raw.x_test)):
        if not np.isfinite(np.asarray(a, np.float64)).all():
            raise InputError(f"{where}: the {key} hold NaN/inf values; remove or impute them")


def existing(path: Path | str | None, kind: str, name: str, what: str) -> Path:
    """`path` (data.path) as a Path to an existing file or folder (`kind`), or InputError saying
    which source needed what."""
    if path is None:
        raise InputError(f"dataset {name!r} needs a {kind}: set data.path in the recipe to {what}")
    path = Path(path)
    try:
        found = path.is_file() if kind == "file" else path.is_dir()
    except OSError as e:  # a name too long for the file system, ...
        raise InputError(f"{str(path)[:120]}...: {e.strerror} (data.path in the recipe); "
                         "fix the path") from None
    if not found:
        raise InputError(f"{path}: no such {kind} (data.path in the recipe); set it to {what}")
    return path
