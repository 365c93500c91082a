"""Teacher outputs computed once and kept on disk (memory-mapped), keyed by the teacher's weights and
the inputs' bytes, so every student and every later run reuses them."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch
from numpy.lib.format import open_memmap

from edgekd.fileio import atomic_dir, atomic_path
from edgekd.models import eval_mode


def default_cache_dir() -> Path:
    return Path(os.environ.get("EDGEKD_CACHE_DIR") or Path.home() / ".cache" / "edgekd")


def run_teacher(teacher, xb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher logits (B, C) and penultimate features (B, D) of one batch. A network without
    `features`/`head` (your own, or a torch.export program) gives logits only: features (B, 0)."""
    if callable(getattr(teacher, "features", None)) and hasattr(teacher, "head"):
        f = teacher.features(xb)
        return teacher.head(f), f
    return teacher(xb), torch.zeros(len(xb), 0)


def inputs_key(teacher_sha256: str, x, chunk_rows: int = 65536) -> str:
    """sha256 of the teacher's weights and the inputs' float32 bytes, read a chunk at a time."""
    h = hashlib.sha256(teacher_sha256.encode())
    for i in range(0, len(x), chunk_rows):
        h.update(np.ascontiguousarray(x[i:i + chunk_rows], np.float32).tobytes())
    return h.hexdigest()


@torch.no_grad()
def cached_teacher_outputs(teacher, teacher_sha256: str, x, cache_dir: Path | None, batch_size: int = 1024
                           ) -> tuple[np.ndarray, np.ndarray, bool]:
    """Teacher logits (N, C) and features (N, D) for `x`, as read-only memory maps of a cache entry that
    is written batch by batch and sealed (renamed into place) only when complete: a transfer set of
    millions of rows, or a teacher with 1,000 classes, never has to fit in memory. Returns (logits,
    features, hit); a damaged or partial entry is recomputed, never trusted."""
    path = Path(cache_dir or default_cache_dir()) / "logits" / inputs_key(teacher_sha256, x)[:32]
    opened = _open_entry(path, len(x))
    if opened is not None:
        return (*opened, True)
    eval_mode(teacher)
    with atomic_dir(path) as tmp:
        logits = features = None
        for i in range(0, len(x), batch_size):
            xb = np.array(x[i:i + batch_size], dtype=np.float32)  # a writable copy: x may be a read-only map
            lb, fb = run_teacher(teacher, torch.from_numpy(xb))
            if logits is None:  # shapes are known after the first batch: allocate on disk, not in memory
                logits = open_memmap(tmp / "logits.npy", "w+", np.float32, (len(x), lb.shape[1]))
                features = open_memmap(tmp / "features.npy", "w+", np.float32, (len(x), fb.shape[1]))
            logits[i:i + len(lb)], features[i:i + len(fb)] = lb.numpy(), fb.numpy()
        if logits is None:  # no rows: the teacher's widths from an empty batch
            lb, fb = run_teacher(teacher, torch.zeros(0, *x.shape[1:]))
            logits = open_memmap(tmp / "logits.npy", "w+", np.float32, (0, lb.shape[1]))
            features = open_memmap(tmp / "features.npy", "w+", np.float32, (0, fb.shape[1]))
        logits.flush()
        features.flush()
        del logits, features
    opened = _open_entry(path, len(x))
    if opened is None:
        raise OSError(f"{path}: the teacher-output cache entry just written does not read back")
    return (*opened, False)


def _open_entry(path: Path, rows: int) -> tuple[np.ndarray, np.ndarray] | None:
    try:
        logits = np.load(path / "logits.npy", mmap_mode="r")
        features = np.load(path / "features.npy", mmap_mode="r")
    except Exception:  # noqa: BLE001 - absent or damaged: computed again
        return None
    if len(logits) != rows or len(features) != rows:
        return None
    return logits, features


def cached_array(cache_dir: Path | None, name: str, make,
                 row_shape: tuple[int, ...] | None = None) -> np.ndarray:
    """A generated array (e.g. a transfer set) kept on disk under `name` (which must cover every input
    that shapes it). An entry that does not load, or whose rows are not `row_shape`, is rebuilt."""
    path = Path(cache_dir or default_cache_dir()) / "arrays" / f"{name}.npy"
    if path.is_file():
        try:
            arr = np.load(path, allow_pickle=False, mmap_mode="r")  # read as batches need it
            if row_shape is None or tuple(arr.shape[1:]) == tuple(row_shape):
                return arr
        except Exception:  # noqa: BLE001 - a damaged entry (truncated, garbage) is rebuilt, never fatal
            pass
    arr = make()
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, arr)
    return np.load(path, allow_pickle=False, mmap_mode="r")
