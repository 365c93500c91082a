"""Held-out test rows for sources that ship no test split."""

from __future__ import annotations

import numpy as np


def stratified_holdout(y: np.ndarray, seed: int, test_share: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, test rows) of class ids `y` (N,): `test_share` of each class is held out, at least one
    row of a class with two rows or more and never its last one. Deterministic in `seed`. Both come in
    a seeded order, not the file's: files are often sorted by label (the movie-review set lists its
    positive snippets first), and a prefix of the test split (a parity subset, a bundle's validation
    inputs) must hold every class."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(y):
        rows = rng.permutation(np.flatnonzero(y == c))
        k = min(max(int(round(test_share * len(rows))), 1), len(rows) - 1)
        test.append(rows[:k])
        train.append(rows[k:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))
