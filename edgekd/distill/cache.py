"""Teacher outputs computed once and kept on disk, keyed by the teacher's weights and the inputs' bytes,
so every student and every later run reuses them."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch

from edgekd.fileio import atomic_path
from edgekd.models import eval_mode


def default_cache_dir() -> Path:
    return Path(os.environ.get("EDGEKD_CACHE_DIR") or Path.home() / ".cache" / "edgekd")


@torch.no_grad()
def teacher_outputs(teacher, x: np.ndarray, batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Run the teacher: logits (N, C) and penultimate features (N, D), float32. A network without
    `features`/`head` (your own, or a torch.export program) gives logits only: features (N, 0)."""
    eval_mode(teacher)
    split = callable(getattr(teacher, "features", None)) and hasattr(teacher, "head")
    logits, feats = [], []
    for i in range(0, len(x), batch_size):
        xb = torch.from_numpy(x[i:i + batch_size])
        f = teacher.features(xb) if split else torch.zeros(len(xb), 0)
        logits.append(teacher.head(f) if split else teacher(xb))
        feats.append(f)
    if not logits:
        n_out, n_feat = (teacher.head.out_features, teacher.feature_dim) if split else (0, 0)
        return np.zeros((0, n_out), np.float32), np.zeros((0, n_feat), np.float32)
    return torch.cat(logits).numpy(), torch.cat(feats).numpy()


def cached_teacher_outputs(teacher, teacher_sha256: str, x: np.ndarray, cache_dir: Path | None
                           ) -> tuple[np.ndarray, np.ndarray, bool]:
    """Teacher logits and features for `x`, from the cache when present. Returns (logits, features, hit)."""
    key = hashlib.sha256(teacher_sha256.encode() + np.ascontiguousarray(x, np.float32).tobytes()).hexdigest()
    path = Path(cache_dir or default_cache_dir()) / "logits" / f"{key[:32]}.npz"
    if path.is_file():
        try:
            with np.load(path) as z:
                if z["logits"].shape[0] == len(x):
                    return z["logits"], z["features"], True
        except Exception:  # noqa: BLE001 - a damaged cache entry is recomputed, never trusted
            pass
    logits, feats = teacher_outputs(teacher, x)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, logits=logits, features=feats)
    return logits, feats, False


def cached_array(cache_dir: Path | None, name: str, make,
                 row_shape: tuple[int, ...] | None = None) -> np.ndarray:
    """A generated array (e.g. a transfer set) kept on disk under `name` (which must cover every input
    that shapes it). An entry that does not load, or whose rows are not `row_shape`, is rebuilt."""
    path = Path(cache_dir or default_cache_dir()) / "arrays" / f"{name}.npy"
    if path.is_file():
        try:
            arr = np.load(path, allow_pickle=False)
            if row_shape is None or tuple(arr.shape[1:]) == tuple(row_shape):
                return arr
        except Exception:  # noqa: BLE001 - a damaged entry (truncated, garbage) is rebuilt, never fatal
            pass
    arr = make()
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, arr)
    return arr
