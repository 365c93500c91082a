"""User arrays in one NumPy .npz file."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from edgekd.data.checks import as_class_ids, as_inputs, existing, in_range, same_rows, same_width
from edgekd.data.source import DATASETS, RawData
from edgekd.errors import InputError


@DATASETS.register("npz")
def npz(path: Path | None = None, seed: int = 42) -> RawData:
    """An .npz with `x` (N, ...) and `y` (N,), optional `labels`, `x_test`/`y_test`,
    `x_unlabeled` (a transfer set). Without `x_test`, 20% of the rows are held out."""
    path = existing(path, "file", "npz", "your .npz")
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
    x, y = as_inputs(z["x"], path, "x"), as_class_ids(z["y"], path, "y")
    same_rows(x, y, path, "x", "y")
    if "labels" in z:
        labels = tuple(str(s) for s in np.atleast_1d(z["labels"]))
    else:
        labels = tuple(str(i) for i in range(int(y.max()) + 1)) if len(y) else ()
    in_range(y, labels, path, "y")
    if "x_test" in z:
        xte, yte = as_inputs(z["x_test"], path, "x_test"), as_class_ids(z["y_test"], path, "y_test")
        same_rows(xte, yte, path, "x_test", "y_test")
        same_width(xte, x, path, "x_test")
        in_range(yte, labels, path, "y_test")
    else:
        # a plain (unstratified) permutation: what this source has always done, so fingerprints hold
        perm = np.random.default_rng(seed).permutation(len(x))
        cut = int(0.8 * len(x))
        x, y, xte, yte = x[perm[:cut]], y[perm[:cut]], x[perm[cut:]], y[perm[cut:]]
    sampler = None
    if "x_unlabeled" in z:
        xu = as_inputs(z["x_unlabeled"], path, "x_unlabeled")
        same_width(xu, x, path, "x_unlabeled")

        def sampler(n: int, transfer_seed: int) -> np.ndarray:
            idx = np.random.default_rng(transfer_seed).permutation(len(xu))[: min(n, len(xu))]
            return xu[idx]

        sampler.fingerprint = hashlib.sha256(np.ascontiguousarray(xu).tobytes()).hexdigest()
    return RawData(x, y, xte, yte, labels, sampler)
