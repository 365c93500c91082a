"""Fashion-MNIST (Xiao, Rasul and Vollgraf 2017; MIT): 60,000 + 10,000 grey 28x28 images of clothes in
ten classes, as IDX files. Debian's package `dataset-fashion-mnist` installs them in FASHION_MNIST_DIR."""

from __future__ import annotations

from pathlib import Path

from edgekd.data.idx import read_idx_folder
from edgekd.data.source import DATASETS, RawData
from edgekd.errors import InputError

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


@DATASETS.register("fashion-mnist")
def fashion_mnist(path: Path | None = None, seed: int = 42) -> RawData:
    """Images (N, 1, 28, 28) in [0, 1] from `path` (default FASHION_MNIST_DIR); its own train/test split."""
    folder = Path(path) if path is not None else FASHION_MNIST_DIR
    try:
        found = folder.is_dir()
    except OSError:  # a name too long for the file system, ...
        found = False
    if not found:
        raise InputError(f"{str(folder)[:200]}: no such folder, so no Fashion-MNIST (data.path in the "
                         "recipe); install it with `apt-get install dataset-fashion-mnist` (Debian package, "
                         f"MIT; files in {FASHION_MNIST_DIR}) or set data.path to a folder of its IDX files")
    return read_idx_folder(folder, CLASSES)
