"""scikit-learn's 8x8 handwritten digits (1797 images, shipped with scikit-learn)."""

from __future__ import annotations

from pathlib import Path

from edgekd.data.source import DATASETS, RawData


@DATASETS.register("digits")
def digits(path: Path | None = None, seed: int = 42) -> RawData:
    """Images (N, 1, 8, 8) in [0, 1], stratified 80/20 split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = d.images[:, None, :, :] / 16.0
    xtr, xte, ytr, yte = train_test_split(x, d.target, test_size=0.2, random_state=seed, stratify=d.target)
    return RawData(xtr, ytr, xte, yte, tuple(str(i) for i in range(10)))
