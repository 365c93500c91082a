"""Image folders: one sub-folder of PNG/JPEG files per class (class names: the sorted folder names),
optionally under `train/` and `test/` (otherwise a seeded, stratified 20% of each class is held out).

Every image is read with Pillow, turned upright by its EXIF orientation, converted to grey or RGB and
resized (bilinear, antialiased when shrinking) to `image_size` [height, width]: (N, C, H, W) in [0, 1].
`channels` 1 or 3 forces grey or RGB; None gives grey when every image is grey, else RGB.
Files of other extensions (.txt, .DS_Store, ...) and hidden folders are ignored.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekd.data.checks import existing
from edgekd.data.source import DATASETS, RawData
from edgekd.data.split import stratified_holdout
from edgekd.errors import InputError

EXTENSIONS = (".png", ".jpg", ".jpeg")
_WHAT = "a folder with one sub-folder of PNG/JPEG images per class"


@DATASETS.register("imagefolder")
def imagefolder(path: Path | None = None, seed: int = 42, *, image_size: list[int] | None = None,
                channels: int | None = None) -> RawData:
    """Images (N, C, H, W) in [0, 1] from the class folders of `path`; see the module's docstring."""
    folder = existing(path, "folder", "imagefolder", _WHAT)
    height, width = _size(image_size, folder)
    if channels not in (None, 1, 3):
        raise InputError(f"{folder}: data.channels is {channels!r}; give 1 (grey), 3 (RGB) or leave it unset")
    classes, files_train, files_test = _listing(folder)
    files = files_train + (files_test or [])
    images, grey = zip(*(_read(f, (width, height), {1: "L", 3: "RGB"}.get(channels)) for f, _ in files))
    c = channels or (1 if all(grey) else 3)
    x = np.stack([a if a.shape[-1] == c else np.repeat(a, c, axis=-1) for a in images])  # (N, H, W, C)
    x = (x.transpose(0, 3, 1, 2) / np.float32(255.0)).astype(np.float32)  # (N, C, H, W)
    y = np.array([label for _, label in files], np.int64)
    if files_test is None:
        tr, te = stratified_holdout(y, seed)
    else:
        tr, te = np.arange(len(files_train)), np.arange(len(files_train), len(files))
    return RawData(x[tr], y[tr], x[te], y[te], classes)


def _listing(folder: Path) -> tuple[tuple[str, ...], list[tuple[Path, int]], list[tuple[Path, int]] | None]:
    """(class names, training files, test files or None when the folder has no train/ and test/)."""
    train, test = folder / "train", folder / "test"
    if not (train.is_dir() or test.is_dir()):
        classes = _classes(folder)
        return classes, _files(folder, classes, classes), None
    if not (train.is_dir() and test.is_dir()):
        have, lack = (train, test) if train.is_dir() else (test, train)
        raise InputError(f"{folder}: has {have.name}/ but no {lack.name}/; give both (each with one "
                         "sub-folder per class), or neither (20% of each class is then held out)")
    classes = _classes(train)
    test_names = _test_classes(test, classes, train)
    return classes, _files(train, classes, classes), _files(test, test_names, classes)


def _size(image_size, folder: Path) -> tuple[int, int]:
    if image_size is None:
        raise InputError(f"{folder}: dataset 'imagefolder' needs data.image_size in the recipe: "
                         "the [height, width] every image is resized to, e.g. image_size: [32, 32]")
    size = list(image_size)
    if len(size) != 2 or not all(isinstance(v, int) and v >= 1 for v in size):
        raise InputError(f"{folder}: data.image_size is {image_size!r}; give [height, width] in pixels, "
                         "e.g. [32, 32]")
    return size[0], size[1]


def _subfolders(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _classes(folder: Path) -> tuple[str, ...]:
    names = _subfolders(folder)
    if len(names) < 2:
        found = f"one class folder ({names[0]!r})" if names else "no class folders"
        raise InputError(f"{folder}: {found}; a classifier needs at least 2 classes: put each class's "
                         "images in a sub-folder named after the class")
    return tuple(names)


def _test_classes(test: Path, classes: tuple[str, ...], train: Path) -> tuple[str, ...]:
    names = _subfolders(test)
    unknown = sorted(set(names) - set(classes))
    if unknown:
        raise InputError(f"{test / unknown[0]}: class {unknown[0]!r} has no folder in {train}; "
                         "test classes must be training classes: rename or remove it")
    if not names:
        raise InputError(f"{test}: no class folders; give it one sub-folder per class, as in {train}")
    return tuple(names)


def _files(folder: Path, names: tuple[str, ...], classes: tuple[str, ...]) -> list[tuple[Path, int]]:
    """(image file, class id) for the class folders `names` of `folder`; a class's id is its position
    in `classes` (the training classes, of which the test split may have fewer)."""
    out = []
    for name in names:
        root = folder / name
        found = sorted(p for p in root.rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file()
                       and not any(part.startswith(".") for part in p.relative_to(root).parts))
        if not found:
            raise InputError(f"{folder / name}: no PNG or JPEG images ({', '.join(EXTENSIONS)}); "
                             "add images or remove the folder")
        out += [(p, classes.index(name)) for p in found]
    return out


def _read(file: Path, size_wh: tuple[int, int], mode: str | None) -> tuple[np.ndarray, bool]:
    """One image as uint8 (H, W, C), and whether the file was grey. `mode` "L" or "RGB" forces one;
    None keeps grey files grey (C = 1) and makes the rest RGB."""
    from PIL import Image, ImageOps

    try:
        with Image.open(file) as im:
            im = ImageOps.exif_transpose(im)
            if im.mode == "I" or im.mode.startswith("I;16"):  # 16-bit grey: keep the top byte
                im = Image.fromarray((np.clip(np.asarray(im), 0, 65535) >> 8).astype(np.uint8), "L")
            grey = im.mode in ("1", "L", "LA")
            im = im.convert(mode or ("L" if grey else "RGB"))
            if im.size != size_wh:
                im = im.resize(size_wh, Image.Resampling.BILINEAR)
            a = np.asarray(im, np.uint8)
    except Exception as e:  # noqa: BLE001 - Pillow raises many types for a damaged file
        raise InputError(f"{file}: not a readable PNG/JPEG image ({type(e).__name__}: {e}); "
                         "replace or remove the file") from None
    return (a[:, :, None] if a.ndim == 2 else a), grey
