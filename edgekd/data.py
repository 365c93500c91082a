"""Datasets by name. Each loader returns raw arrays; `load_dataset` normalises them and records the
statistics, so that an exported model's metadata can tell an app how to prepare its input.

Inputs are channel-first: (N, C, L) for signals, (N, C, H, W) for images.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from edgekd.errors import InputError
from edgekd.registry import Registry


@dataclass(frozen=True)
class RawData:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    labels: tuple[str, ...]
    # (n, seed) -> n unlabeled raw inputs from the task's own distribution; None = mixup of x_train.
    sample_unlabeled: Callable[[int, int], np.ndarray] | None = None


@dataclass(frozen=True)
class Dataset:
    name: str
    x_train: np.ndarray  # normalised float32, (N, *input_shape)
    y_train: np.ndarray  # int64 (N,)
    x_test: np.ndarray
    y_test: np.ndarray
    labels: tuple[str, ...]
    mean: float
    std: float
    fingerprint: str  # sha256 over the normalised arrays: keys the logit cache
    source: dict = field(default_factory=dict)  # {name, path, seed}: how to load this dataset again
    _sample_unlabeled: Callable[[int, int], np.ndarray] | None = field(default=None, repr=False)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def normalise(self, x: np.ndarray) -> np.ndarray:
        return ((np.asarray(x, dtype=np.float64) - self.mean) / self.std).astype(np.float32)

    def transfer_set(self, n: int, seed: int) -> np.ndarray:
        """`n` unlabeled inputs for distillation (normalised). From the task's generator when it has one;
        otherwise mixup of training inputs (Beyer et al. 2022, "a good teacher is patient and consistent")."""
        if n <= 0:
            return np.zeros((0, *self.input_shape), np.float32)
        if self._sample_unlabeled is not None:
            return self.normalise(self._sample_unlabeled(n, seed))
        rng = np.random.default_rng(seed)
        i = rng.integers(0, len(self.x_train), n)
        j = rng.integers(0, len(self.x_train), n)
        lam = rng.beta(1.0, 1.0, n).astype(np.float32).reshape(-1, *[1] * len(self.input_shape))
        return (lam * self.x_train[i] + (1 - lam) * self.x_train[j]).astype(np.float32)


DATASETS: Registry[Callable[..., RawData]] = Registry("dataset")


@DATASETS.register("mnist1d")
def _mnist1d(path: Path | None = None, seed: int = 42) -> RawData:
    """MNIST-1D (Greydanus 2020), generated offline: the standard 4000/1000 split of seed 42."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.seed = seed
    d = make_dataset(args)

    def sample_unlabeled(n: int, transfer_seed: int) -> np.ndarray:
        a = get_dataset_args()
        # Seeds far from the labelled split's so no transfer sample repeats a test sample's noise.
        a.seed, a.num_samples, a.train_split = 10_000 + transfer_seed, -(-n // 10) * 10, 1.0
        return make_dataset(a)["x"][:n, None, :]

    return RawData(
        d["x"][:, None, :], d["y"], d["x_test"][:, None, :], d["y_test"],
        tuple(str(i) for i in range(10)), sample_unlabeled,
    )


@DATASETS.register("digits")
def _digits(path: Path | None = None, seed: int = 42) -> RawData:
    """scikit-learn's 8x8 digits (1797 images), stratified 80/20 split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = d.images[:, None, :, :] / 16.0
    xtr, xte, ytr, yte = train_test_split(x, d.target, test_size=0.2, random_state=seed, stratify=d.target)
    return RawData(xtr, ytr, xte, yte, tuple(str(i) for i in range(10)))


@DATASETS.register("npz")
def _npz(path: Path | None = None, seed: int = 42) -> RawData:
    """User data: an .npz with `x` (N, ...) and `y` (N,), optional `labels`, `x_test`/`y_test`,
    `x_unlabeled` (a transfer set). Without `x_test`, 20% of the rows are held out."""
    if path is None:
        raise InputError("dataset 'npz' needs a file: set data.path in the recipe to your .npz")
    path = Path(path)
    try:
        found = path.is_file()
    except OSError as e:  # a name too long for the file system, ...
        raise InputError(f"{str(path)[:120]}...: {e.strerror} (data.path in the recipe); "
                         "fix the path") from None
    if not found:
        raise InputError(f"{path}: no such file (data.path in the recipe)")
    try:
        z = dict(np.load(path, allow_pickle=False))
    except Exception as e:  # noqa: BLE001 - numpy raises many types for a bad file
        raise InputError(f"{path}: not a readable .npz file ({e})") from None
    for key in ("x", "y"):
        if key not in z:
            raise InputError(f"{path}: missing array {key!r}; an edgekd .npz needs 'x' (N, ...) and 'y' (N,)")
    if ("x_test" in z) != ("y_test" in z):
        have, lack = ("x_test", "y_test") if "x_test" in z else ("y_test", "x_test")
        raise InputError(f"{path}: has {have!r} but no {lack!r}; "
                         "give both, or neither (20% of x is then held out)")
    x, y = _inputs(z["x"], path, "x"), _class_ids(z["y"], path, "y")
    _same_rows(x, y, path, "x", "y")
    if "labels" in z:
        labels = tuple(str(s) for s in np.atleast_1d(z["labels"]))
    else:
        labels = tuple(str(i) for i in range(int(y.max()) + 1)) if len(y) else ()
    _in_range(y, labels, path, "y")
    if "x_test" in z:
        xte, yte = _inputs(z["x_test"], path, "x_test"), _class_ids(z["y_test"], path, "y_test")
        _same_rows(xte, yte, path, "x_test", "y_test")
        _same_width(xte, x, path, "x_test")
        _in_range(yte, labels, path, "y_test")
    else:
        perm = np.random.default_rng(seed).permutation(len(x))
        cut = int(0.8 * len(x))
        x, y, xte, yte = x[perm[:cut]], y[perm[:cut]], x[perm[cut:]], y[perm[cut:]]
    sampler = None
    if "x_unlabeled" in z:
        xu = _inputs(z["x_unlabeled"], path, "x_unlabeled")
        _same_width(xu, x, path, "x_unlabeled")

        def sampler(n: int, transfer_seed: int) -> np.ndarray:
            idx = np.random.default_rng(transfer_seed).permutation(len(xu))[: min(n, len(xu))]
            return xu[idx]

        sampler.fingerprint = hashlib.sha256(np.ascontiguousarray(xu).tobytes()).hexdigest()
    return RawData(x, y, xte, yte, labels, sampler)


def _inputs(a: np.ndarray, path: Path, key: str) -> np.ndarray:
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


def _class_ids(a: np.ndarray, path: Path, key: str) -> np.ndarray:
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


def _same_rows(x: np.ndarray, y: np.ndarray, path: Path, xk: str, yk: str) -> None:
    if len(x) != len(y):
        raise InputError(f"{path}: {xk!r} has {len(x)} rows but {yk!r} has {len(y)}; they must match")


def _same_width(a: np.ndarray, x: np.ndarray, path: Path, key: str) -> None:
    if a.shape[1:] != x.shape[1:]:
        raise InputError(f"{path}: {key!r} rows have shape {list(a.shape[1:])} "
                         f"but 'x' rows {list(x.shape[1:])}; they must match")


def _in_range(y: np.ndarray, labels: tuple[str, ...], path: Path, key: str) -> None:
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


def load_dataset(name: str, path: Path | None = None, seed: int = 42) -> Dataset:
    raw = DATASETS.get(name, "data.name")(path=path, seed=seed)
    check_splits(raw, str(path) if path is not None else f"dataset {name!r}")
    x_train = np.asarray(raw.x_train, dtype=np.float64)
    mean, std = float(x_train.mean()), float(x_train.std()) or 1.0

    def norm(a: np.ndarray) -> np.ndarray:
        return ((np.asarray(a, dtype=np.float64) - mean) / std).astype(np.float32)

    xtr, xte = norm(raw.x_train), norm(raw.x_test)
    ytr, yte = np.asarray(raw.y_train, np.int64), np.asarray(raw.y_test, np.int64)
    h = hashlib.sha256()
    for a in (xtr, ytr, xte, yte):
        h.update(np.ascontiguousarray(a).tobytes())
    h.update("\n".join(raw.labels).encode())
    # the transfer set shapes every student: a source whose unlabeled inputs changed is other data
    h.update(str(getattr(raw.sample_unlabeled, "fingerprint", "")).encode())
    source = {"name": name, "path": None if path is None else str(Path(path).resolve()), "seed": seed}
    return Dataset(name, xtr, ytr, xte, yte, raw.labels, mean, std, h.hexdigest(), source,
                   raw.sample_unlabeled)

