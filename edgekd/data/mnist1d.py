"""MNIST-1D (Greydanus 2020): 1-D signals of ten digit templates, generated offline."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekd.data.source import DATASETS, RawData


@DATASETS.register("mnist1d")
def mnist1d(path: Path | None = None, seed: int = 42) -> RawData:
    """The standard 4000/1000 split of seed 42; signals (N, 1, 40). Its generator gives the transfer set."""
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
