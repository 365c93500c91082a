"""What a data source is: a function registered by name that returns `RawData`.

A source reads its files (or generates its samples) and checks them; `edgekd.data.load_dataset` then
normalises every source the same way and fingerprints the result. A source is called as
`source(path=..., seed=..., **options)`, where its options are the keyword-only parameters it names
(for example `image_size`); it never sees options it does not name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from edgekd.registry import Registry


@dataclass(frozen=True)
class RawData:
    # (N, C, L) signals, (N, C, H, W) images, (N, 1, F) table rows: raw scale; (N, 2, L) int64 token rows
    x_train: np.ndarray
    y_train: np.ndarray  # class ids (N,), 0..len(labels)-1
    x_test: np.ndarray
    y_test: np.ndarray
    labels: tuple[str, ...]
    # (n, seed) -> n unlabeled raw inputs from the task's own distribution; None = mixup of x_train.
    sample_unlabeled: Callable[[int, int], np.ndarray] | None = None
    notes: dict = field(default_factory=dict)  # what the source counted (sentences cut to length, ...)
    text_test: tuple[str, ...] | None = None  # text sources: the test split's sentences, in order


DATASETS: Registry[Callable[..., RawData]] = Registry("dataset")
