"""MNIST-1D (Greydanus 2020): 1-D signals of ten digit templates, generated offline."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekd.data.source import DATASETS, RawData


@DATASETS.register("mnist1d")
def mnist1d(path: Path | None = None, seed: int = 42) -> RawData:
    """The standard 4000/1000 split of seed 42; signals (N, 1, 40). Its generator gives the transfer set."""
    from mnist1d.data import get_dataset_args

    args = get_dataset_args()
    args.seed = seed
    x, y = signals(args)
    split = int(len(y) * args.train_split)

    def sample_unlabeled(n: int, transfer_seed: int) -> np.ndarray:
        a = get_dataset_args()
        # Seeds far from the labelled split's so no transfer sample repeats a test sample's noise.
        a.seed, a.num_samples = 10_000 + transfer_seed, -(-n // 10) * 10
        return signals(a)[0][:n, None, :]

    return RawData(x[:split, None, :], y[:split], x[split:, None, :], y[split:],
                   tuple(str(i) for i in range(10)), sample_unlabeled)


def signals(args) -> tuple[np.ndarray, np.ndarray]:
    """`mnist1d.data.make_dataset(args)`'s signals and labels (before its train/test split), byte for byte:
    the same draws from numpy's global random stream in the same order, the same arithmetic, but the
    per-sample transforms (two scipy interpolators and a Gaussian filter per sample) done once per
    template and padding or on all rows at once: 5,000 signals in 0.09 s against the package's 1.38 s
    here; tests/test_data_models.py holds it equal to the package."""
    import random

    from mnist1d.data import get_templates
    from scipy.ndimage import gaussian_filter1d

    if args.shuffle_seq:  # the package then draws one more permutation; edgekd never asks for it
        raise ValueError("signals() does not shuffle the sequence axis (args.shuffle_seq)")

    templates = get_templates()
    random.seed(args.seed)  # mnist1d.utils.set_seed
    np.random.seed(args.seed)
    classes = len(templates["y"])
    rows = args.num_samples // classes * classes
    low, high = args.padding
    length = args.template_len + high
    pads, shift = np.empty(rows, np.int64), np.empty(rows, np.int64)
    scale, shear = np.empty(rows), np.empty(rows)
    corr, iid = np.empty((rows, length)), np.empty((rows, length))
    for r in range(rows):  # mnist1d.transform.transform's draws, in its order
        pads[r] = low + int(np.random.rand() * (high - low + 1))
        scale[r] = np.random.rand()
        shift[r] = np.random.choice(args.max_translation)
        corr[r] = np.random.randn(length)
        iid[r] = np.random.randn(length)
        shear[r] = np.random.rand()
    order = np.random.permutation(rows)
    grid = np.linspace(0, 1, length)
    dilated = {}  # a template padded with zeros, stretched back to `length` (transform's "dilate")
    for label in range(classes):
        for p in range(low, high + 1):
            x = np.concatenate([templates["x"][label] + 1e-8, np.zeros(p)])
            dilated[label, p] = np.interp(grid, np.linspace(0, 1, len(x)), x)
    labels = np.repeat(templates["y"], rows // classes)
    x = np.stack([dilated[label, p] for label, p in zip(labels, pads)])
    x *= (1 + args.scale_coeff * (scale - 0.5))[:, None]
    x = x[np.arange(rows)[:, None], (np.arange(length) - shift[:, None]) % length]  # translate
    mask = x != 0
    x = mask * x + (1 - mask) * gaussian_filter1d(args.corr_noise_scale * corr, 2, axis=-1)
    x = x + args.iid_noise_scale * iid
    x = x - (args.shear_scale * (shear - 0.5))[:, None] * np.linspace(-0.5, 0.5, length)
    final = np.linspace(0, 1, args.final_seq_length)
    xs = np.stack([np.interp(final, grid, row) for row in x])[order]
    return (xs - xs.mean()) / xs.std(), labels[order]
