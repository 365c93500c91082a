"""The IDX format of MNIST and Fashion-MNIST (LeCun et al.; http://yann.lecun.com/exdb/mnist/), gzipped
or not: a big-endian header, then the array.

    magic   4 bytes: 0x00 0x00 <type code> <number of dimensions>
    dims    one unsigned 32-bit integer per dimension
    data    prod(dims) values of the type (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
            0x0D float32, 0x0E float64), big-endian, last dimension fastest
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from edgekd.data.checks import as_class_ids, existing, same_rows
from edgekd.data.source import DATASETS, RawData
from edgekd.errors import InputError

IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
# split field -> file name in the folder (each may also be gzipped, with .gz appended)
IDX_FILES = {"x_train": "train-images-idx3-ubyte", "y_train": "train-labels-idx1-ubyte",
             "x_test": "t10k-images-idx3-ubyte", "y_test": "t10k-labels-idx1-ubyte"}
_WHAT = "a folder holding " + ", ".join(f"{f}[.gz]" for f in IDX_FILES.values())


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """The array in the IDX file `path` (gzipped or not, told by its first bytes), which must have
    `ndim` dimensions (3 for images (N, H, W), 1 for labels (N,))."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise InputError(f"{path}: cannot read it ({e.strerror}); check its permissions") from None
    if raw[:2] == b"\x1f\x8b":  # gzip's magic number
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise InputError(f"{path}: a damaged gzip file ({e}); download it again") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_TYPES or raw[3] != ndim:
        raise InputError(f"{path}: not an IDX file of {ndim} dimension(s): magic number 0x{raw[:4].hex()}, "
                         f"expected 0x0000TT{ndim:02x} (TT a type code, 08 for bytes); "
                         "check that this is the file its name says")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise InputError(f"{path}: the IDX header is cut short ({len(raw)} bytes); download the file again")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(IDX_TYPES[raw[2]])
    expected = header + math.prod(dims) * dtype.itemsize
    if len(raw) != expected:
        raise InputError(f"{path}: its header says dims {list(dims)} ({expected} bytes in all) but the file "
                         f"holds {len(raw)} bytes; it is truncated or not IDX: download it again")
    return np.frombuffer(raw, dtype, offset=header).reshape(dims)


def _file(folder: Path, name: str) -> Path:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise InputError(f"{folder / name}[.gz]: no such file (data.path in the recipe is {_WHAT})")


def _images(a: np.ndarray, path: Path) -> np.ndarray:
    """(N, H, W) -> (N, 1, H, W) float32 in [0, 1]."""
    if a.dtype == np.uint8:
        return (a[:, None, :, :] / np.float32(255.0)).astype(np.float32)
    if a.dtype.kind == "f" and len(a) and np.isfinite(a).all() and a.min() >= 0 and a.max() <= 1:
        return a[:, None, :, :].astype(np.float32)
    raise InputError(f"{path}: images of type {a.dtype}; edgekd reads unsigned bytes (type code 0x08) "
                     "or floats in [0, 1]: convert the file")


def _label_names(folder: Path, max_id: int) -> tuple[tuple[str, ...], str]:
    """Class names from `labels.txt` in the folder (one a line, class 0 first), else "0".."max_id";
    and where they came from, for messages."""
    names_file = folder / "labels.txt"
    if not names_file.is_file():
        return tuple(str(i) for i in range(max_id + 1)), "the labels"
    try:
        text = names_file.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{names_file}: cannot read it ({e}); make it a UTF-8 text file, "
                         "one class name a line") from None
    return tuple(s.strip() for s in text.splitlines() if s.strip()), str(names_file)


def _check_ids(y: np.ndarray, path: Path, labels: tuple[str, ...], names_from: str) -> None:
    if y.min() < 0:
        raise InputError(f"{path}: holds class id {y.min()}; class ids must be 0..C-1: fix the labels file")
    if y.max() >= len(labels):
        raise InputError(f"{path}: holds class ids up to {y.max()} but {names_from} names {len(labels)} "
                         f"classes; give a name to each class 0..{y.max()}")


def read_idx_folder(folder: Path, labels: tuple[str, ...] | None = None) -> RawData:
    """The four MNIST-layout IDX files of `folder` as RawData; class names `labels`, else from
    `labels.txt` in the folder, else "0".."C-1"."""
    paths = {field: _file(folder, name) for field, name in IDX_FILES.items()}
    x = {k: _images(read_idx(paths[k], 3), paths[k]) for k in ("x_train", "x_test")}
    y = {k: as_class_ids(read_idx(paths[k], 1), paths[k], "labels") for k in ("y_train", "y_test")}
    for xk, yk in (("x_train", "y_train"), ("x_test", "y_test")):
        if len(x[xk]) == 0:
            raise InputError(f"{paths[xk]}: holds 0 images; it needs samples")
        same_rows(x[xk], y[yk], f"{paths[xk].name} and {paths[yk].name} in {folder}", "images", "labels")
    if x["x_test"].shape[1:] != x["x_train"].shape[1:]:
        raise InputError(f"{paths['x_test']}: images of {list(x['x_test'].shape[2:])} pixels but "
                         f"{paths['x_train'].name} has {list(x['x_train'].shape[2:])}; they must match")
    names_from = "the dataset"
    if labels is None:
        labels, names_from = _label_names(folder, max(int(v.max()) for v in y.values()))
    for k in ("y_train", "y_test"):
        _check_ids(y[k], paths[k], labels, names_from)
    return RawData(x["x_train"], y["y_train"], x["x_test"], y["y_test"], labels)


@DATASETS.register("idx")
def idx(path: Path | None = None, seed: int = 42) -> RawData:
    """MNIST-layout IDX files in the folder `path` (the files' own train/test split; `seed` unused)."""
    return read_idx_folder(existing(path, "folder", "idx", _WHAT))
