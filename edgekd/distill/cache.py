"""Teacher outputs computed once and kept on disk (memory-mapped), keyed by the teacher's weights and
the inputs' bytes, so every student and every later run reuses them."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch
from numpy.lib.format import open_memmap

from edgekd.distill.distributed import World
from edgekd.fileio import atomic_dir, atomic_path
from edgekd.inputs import is_tokens
from edgekd.models import eval_mode

# Rows per teacher batch: 256 keeps a batch's activations in the CPU's caches (the MNIST-1D teacher ran
# 1.65x faster per row than at 1024 on one core); per-row outputs do not depend on the batch size
# (checked bit for bit on that teacher).
BATCH_ROWS = 256


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
def cached_teacher_outputs(teacher, teacher_sha256: str, x, cache_dir: Path | None,
                           batch_size: int = BATCH_ROWS, fill=None) -> tuple[np.ndarray, np.ndarray, bool]:
    """Teacher logits (N, C) and features (N, D) for `x`, as read-only memory maps of a cache entry that
    is written batch by batch and sealed (renamed into place) only when complete: a transfer set of
    millions of rows, or a teacher with 1,000 classes, never has to fit in memory. Returns (logits,
    features, hit); a damaged or partial entry is recomputed, never trusted.

    `fill(entry_dir, x, batch_size)` computes every row into the entry's allocated files (`fill_rows`),
    e.g. in shards in several processes; by default this process computes them in order."""
    path = cache_entry(cache_dir, teacher_sha256, x)
    opened = _open_entry(path, len(x))
    if opened is not None:
        return (*opened, True)
    with atomic_dir(path) as tmp:
        allocate_entry(teacher, x, tmp)
        if fill is None:
            fill_rows(teacher, x, tmp, 0, len(x), batch_size)
        else:
            fill(tmp, x, batch_size)
    opened = _open_entry(path, len(x))
    if opened is None:
        raise OSError(f"{path}: the teacher-output cache entry just written does not read back")
    return (*opened, False)


def ranks_teacher_outputs(world: World, teacher, teacher_sha256: str, x, cache_dir: Path | None,
                          batch_size: int = BATCH_ROWS) -> tuple[np.ndarray, np.ndarray, bool]:
    """`cached_teacher_outputs` on every rank of a run: each rank computes its shard (`shard_bounds`) of
    the entry rank 0 allocated, on its device; rank 0 seals it; then every rank opens it."""
    if torch.device(world.device).type == "cuda" and torch.cuda.is_bf16_supported():
        teacher_sha256 += "+bf16"  # bf16-rounded outputs never stand in for a CPU run's fp32 ones
    teacher.to(world.device)
    try:
        if world.main:
            def fill(entry: Path, x, batch_size: int) -> None:
                world.broadcast(str(entry))
                fill_rows(teacher, x, entry, *shard_bounds(len(x), world.size, batch_size)[0], batch_size,
                          world.device)
                world.barrier()

            out = cached_teacher_outputs(teacher, teacher_sha256, x, cache_dir, batch_size, fill=fill)
            world.broadcast(None)  # sealed (or it was there): the others open it
            return out
        while (entry := world.broadcast(None)) is not None:  # rank 0 missed: compute this rank's shard
            fill_rows(teacher, x, Path(entry), *shard_bounds(len(x), world.size, batch_size)[world.rank],
                      batch_size, world.device)
            world.barrier()
        return cached_teacher_outputs(teacher, teacher_sha256, x, cache_dir, batch_size)  # sealed: opened
    finally:
        teacher.cpu()


def cache_entry(cache_dir: Path | None, teacher_sha256: str, x) -> Path:
    return Path(cache_dir or default_cache_dir()) / "logits" / inputs_key(teacher_sha256, x)[:32]


@torch.no_grad()
def allocate_entry(teacher, x, entry: Path) -> None:
    """Empty logits.npy (N, C) and features.npy (N, D) files in `entry`, the widths read from the
    teacher's outputs on one row: allocated on disk, never in memory."""
    eval_mode(teacher)
    dtype = _row_dtype(x)
    probe = np.array(x[:1], dtype=dtype) if len(x) else np.zeros((1, *x.shape[1:]), dtype)
    param = next(teacher.parameters(), None)
    lb, fb = run_teacher(teacher, torch.from_numpy(probe).to(param.device if param is not None else "cpu"))
    for name, width in (("logits", lb.shape[1]), ("features", fb.shape[1])):
        open_memmap(entry / f"{name}.npy", "w+", np.float32, (len(x), width)).flush()


def _row_dtype(x) -> type:
    """What the teacher is fed: token rows as int64 (its embedding looks them up), anything else float32."""
    return np.int64 if is_tokens(x) else np.float32


def shard_bounds(rows: int, shards: int, batch_size: int) -> list[tuple[int, int]]:
    """`shards` contiguous row ranges covering `rows`, cut on batch boundaries, so every batch holds the
    same rows however many shards there are: a cache built in N shards is byte-identical to one built
    in one (each batch is the same arithmetic). Balanced to within one batch; a shard may be empty."""
    batches = -(-rows // batch_size)
    cuts = [min(rows, round(k * batches / shards) * batch_size) for k in range(shards + 1)]
    return list(zip(cuts[:-1], cuts[1:]))


@torch.no_grad()
def fill_rows(teacher, x, entry: Path, start: int, stop: int, batch_size: int = BATCH_ROWS,
              device: str = "cpu") -> None:
    """Compute rows [start, stop) of an allocated entry, a batch at a time (the entry's files may be
    written by other processes at the same time: each writes only its own rows). On a GPU (the teacher
    already there) in bf16 autocast where it has it."""
    if start >= stop:
        return
    eval_mode(teacher)
    dev = torch.device(device)
    bf16 = dev.type == "cuda" and torch.cuda.is_bf16_supported()
    logits = np.load(entry / "logits.npy", mmap_mode="r+")
    features = np.load(entry / "features.npy", mmap_mode="r+")
    for i in range(start, stop, batch_size):
        xb = np.array(x[i:min(i + batch_size, stop)], dtype=_row_dtype(x))  # a writable copy (x: read-only)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            lb, fb = run_teacher(teacher, torch.from_numpy(xb).to(dev))
        lb, fb = lb.float().cpu(), fb.float().cpu()
        logits[i:i + len(lb)], features[i:i + len(fb)] = lb.numpy(), fb.numpy()
    logits.flush()
    features.flush()


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
