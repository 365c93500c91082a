"""Training batches from arrays that need not fit in memory: rows of parallel arrays (in-memory, or
memory-mapped cache files, or a chain of both) read a batch at a time through a DataLoader.

    x (N, *input_shape), y (N,), teacher logits (N, C), teacher features (N, D)  ->  dicts of tensors

The batch order comes from the training seed alone (a seeded RandomSampler: the same permutation as
`torch.randperm(N, generator)`), whatever the number of loader workers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler


class Chain:
    """Two arrays with the same row shape read as one (the labelled set, then the transfer set),
    without copying either into memory."""

    def __init__(self, first, second):
        if tuple(first.shape[1:]) != tuple(second.shape[1:]):
            raise ValueError(f"rows differ: {first.shape[1:]} and {second.shape[1:]}")
        self.first, self.second = first, second
        self.shape = (len(first) + len(second), *first.shape[1:])
        self.dtype = first.dtype

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, idx) -> np.ndarray:
        idx = np.asarray(idx)
        out = np.empty((len(idx), *self.shape[1:]), self.dtype)
        low = idx < len(self.first)
        out[low] = take(self.first, idx[low])
        out[~low] = take(self.second, idx[~low] - len(self.first))
        return out


class Blend:
    """Soft targets of two networks on the same rows, mixed: logits (N, C) whose softmax at `temperature` is
    `(1 - share) * softmax(first / T) + share * softmax(second / T)`, computed a batch at a time. The KD
    loss is linear in its target distribution, so distilling towards the blend is the same gradient as
    `(1 - share) * KD(first) + share * KD(second)`, with one cross-entropy instead of two."""

    def __init__(self, first, second, share: float, temperature: float):
        if tuple(first.shape) != tuple(second.shape):
            raise ValueError(f"logits differ in shape: {tuple(first.shape)} and {tuple(second.shape)}")
        if not 0 < share < 1:
            raise ValueError(f"share {share}: a blend needs 0 < share < 1 (else use one of the two)")
        self.first, self.second, self.share, self.t = first, second, share, temperature
        self.shape, self.dtype = tuple(first.shape), np.dtype(np.float32)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, idx) -> np.ndarray:
        idx = np.asarray(idx)
        a, b = (_log_softmax(read_rows(arr, idx).astype(np.float64) / self.t)
                for arr in (self.first, self.second))
        mixed = np.logaddexp(np.log1p(-self.share) + a, np.log(self.share) + b)
        return (self.t * mixed).astype(np.float32)


def read_rows(a, idx: np.ndarray) -> np.ndarray:
    """Rows `idx` of an array, a memory map (`take`) or a `Chain`/`Blend` (which read their own)."""
    return take(a, idx) if isinstance(a, np.ndarray) else a[idx]


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def take(a, idx: np.ndarray) -> np.ndarray:
    """Rows `idx` of an array or a memory map, read in ascending order (sequential on disk) and
    returned in the order asked."""
    if len(idx) == 0:
        return np.empty((0, *a.shape[1:]), a.dtype)
    if not isinstance(a, np.memmap):  # in memory: no disk order to respect
        return a[idx]
    order = np.argsort(idx, kind="stable")
    rows = np.asarray(a[idx[order]])
    out = np.empty_like(rows)
    out[order] = rows
    return out


@dataclass(frozen=True)
class Augment:
    """Image augmentation applied as batches are read (training rows only): a random crop after
    zero-padding by `crop` pixels, and a horizontal flip with probability 0.5 when `flip`."""

    crop: int = 0
    flip: bool = False

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:  # (B, C, H, W)
        if self.crop:
            b, _, h, w = x.shape
            padded = torch.nn.functional.pad(x, (self.crop,) * 4)
            dy = torch.randint(0, 2 * self.crop + 1, (b,), generator=gen)
            dx = torch.randint(0, 2 * self.crop + 1, (b,), generator=gen)
            x = torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(b)])
        if self.flip:
            mask = (torch.rand(len(x), generator=gen) < 0.5).to(x.device)
            x = torch.where(mask[:, None, None, None], x.flip(-1), x)
        return x


class Rows(torch.utils.data.Dataset):
    """Parallel arrays as a map-style dataset that serves whole batches (`__getitems__`)."""

    def __init__(self, x, y, logits=None, features=None):
        self.arrays = {"x": x, "y": y, "logits": logits, "features": features}
        n = {k: len(a) for k, a in self.arrays.items() if a is not None}
        if len(set(n.values())) != 1:
            raise ValueError(f"arrays of different lengths: {n}")
        self.n = n["x"]

    def __len__(self) -> int:
        return self.n

    def __getitems__(self, idx: list[int]) -> dict[str, torch.Tensor]:
        idx = np.asarray(idx)
        batch = {k: torch.from_numpy(np.ascontiguousarray(read_rows(a, idx)))
                 for k, a in self.arrays.items() if a is not None}
        batch["y"] = batch["y"].long()
        return batch


class ShuffledBatches(Sampler[list[int]]):
    """Each epoch: one `torch.randperm(n, generator)`, cut into batches (the last one may be short).

    Across `world` ranks (DDP), every rank draws the same permutation (the generator is seeded alike) and
    takes every world-th row of each global batch from its `rank` on: DistributedSampler's striding, done
    per batch, so the global batches are those of one process at any world size, and a run resumes from
    an epoch boundary with another world size. A final batch with fewer rows than ranks repeats rows, as
    DistributedSampler pads, so that every rank takes every step."""

    def __init__(self, n: int, batch_size: int, generator: torch.Generator, rank: int = 0, world: int = 1):
        self.n, self.batch_size, self.generator = n, batch_size, generator
        self.rank, self.world = rank, world

    def __iter__(self):
        perm = torch.randperm(self.n, generator=self.generator)
        for i in range(0, self.n, self.batch_size):
            batch = perm[i:i + self.batch_size]
            if self.world > 1:
                batch = batch.repeat(-(-self.world // len(batch)))[:max(len(batch), self.world)]
                batch = batch[self.rank::self.world]
            yield batch.tolist()

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)


def _as_is(batch):
    return batch


def batches(rows: Rows, batch_size: int, generator: torch.Generator, workers: int = 0, rank: int = 0,
            world: int = 1) -> DataLoader:
    """An epoch of shuffled batches (this rank's share of each); each `iter()` draws the next permutation
    from `generator` (in this process, so the order does not depend on `workers`)."""
    return DataLoader(rows, batch_sampler=ShuffledBatches(len(rows), batch_size, generator, rank, world),
                      collate_fn=_as_is, num_workers=workers, pin_memory=False)
