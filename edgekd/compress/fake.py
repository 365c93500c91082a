"""Fake compression for compression-aware training: in the forward pass each compressed weight is its
nearest point on the grid the exported file stores, and the gradient passes straight through to a
float weight kept beside it (the straight-through estimator, Bengio et al. 2013; QAT as in Jacob et
al. 2018). The grids are exactly the exporters':

- int8: symmetric, one scale per output channel, scale = max|w_c| / 127. coremltools'
  `linear_symmetric` per-channel mode and ai-edge-quantizer's weight-only int8 compute the same scale,
  so the snapped weights re-quantise to themselves: the file carries what training produced.
- palettes: 2**bits float16 values per output channel (or one palette per tensor), k-means centroids
  refined by one Lloyd step per training forward; Core ML's `unique` palettisation then stores exactly
  these values (no k-means at export). With `sparsity`, the smallest weights of the tensor are exact
  zeros (magnitude pruning, ramped with Zhu & Gupta's 2017 cubic schedule) and one palette entry is
  kept at zero, so a channel holds at most 2**bits distinct values whether the file stores the zeros
  as a mask or as a palette entry.
"""

from __future__ import annotations

import torch
from torch import nn


def int8_grid(w: torch.Tensor) -> torch.Tensor:
    """w (C_out, ...) -> its nearest symmetric int8 per-channel value, scale max|w_c| / 127."""
    w = w.detach()
    scale = w.flatten(1).abs().amax(1).clamp_min(1e-12).div(127).view(-1, *[1] * (w.dim() - 1))
    return torch.round(w / scale).clamp(-127, 127) * scale


class Int8(nn.Module):
    """Parametrization: the weight as its int8 grid value (straight-through gradient)."""

    bits = 8

    def forward(self, w):
        return w + (int8_grid(w) - w).detach()

    def snap(self, w: torch.Tensor) -> torch.Tensor:
        return int8_grid(w)


class Palette(nn.Module):
    """Parametrization: the weight as its nearest palette value (straight-through gradient).

    `per_channel`: one palette per output channel (dim 0), else one per tensor. `sparsity`: share of the
    tensor's weights (smallest magnitude) that are zero once `ramp_steps` training forwards have run."""

    def __init__(self, w: torch.Tensor, bits: int, per_channel: bool, sparsity: float = 0.0,
                 ramp_steps: int = 0):
        super().__init__()
        self.bits, self.per_channel, self.sparsity, self.ramp_steps = bits, per_channel, sparsity, ramp_steps
        self.k = 2 ** bits - (1 if sparsity > 0 else 0)  # one entry stays at zero for pruned weights
        g = self._groups(w.detach())
        q = torch.linspace(0, 1, self.k, dtype=g.dtype)
        self.register_buffer("centroids", torch.quantile(g, q, dim=1).T.contiguous())  # (G, k)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        for _ in range(10):  # start from the post-training k-means palette
            self._lloyd(g, self._keep(w.detach(), final=False))

    def _groups(self, w: torch.Tensor) -> torch.Tensor:  # (G, n): G = C_out per channel, 1 per tensor
        return w.reshape(w.shape[0], -1) if self.per_channel else w.reshape(1, -1)

    def _keep(self, w: torch.Tensor, final: bool) -> torch.Tensor | None:
        """Weights not pruned (same shape as groups), or None when nothing is pruned yet."""
        if self.sparsity <= 0:
            return None
        done = 1.0 if final or self.ramp_steps <= 0 else min(1.0, self.step.item() / self.ramp_steps)
        n_prune = int(round(self.sparsity * (1 - (1 - done) ** 3) * w.numel()))
        if n_prune == 0:
            return None
        flat = w.abs().flatten()
        cut = flat.kthvalue(n_prune).values
        return self._groups((w.abs() > cut).to(w.dtype))

    def _assign(self, g: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Index (G, n) of each value's nearest centroid in c (G, k), c sorted along k."""
        mid = (c[:, 1:] + c[:, :-1]) / 2
        return torch.searchsorted(mid.contiguous(), g.contiguous())

    @torch.no_grad()
    def _lloyd(self, g: torch.Tensor, keep: torch.Tensor | None) -> None:
        c = self.centroids.sort(dim=1).values
        idx = self._assign(g, c)
        weight = keep if keep is not None else torch.ones_like(g)
        sums = torch.zeros_like(c).scatter_add_(1, idx, g * weight)
        counts = torch.zeros_like(c).scatter_add_(1, idx, weight)
        self.centroids.copy_(torch.where(counts > 0, sums / counts.clamp_min(1), c).sort(dim=1).values)

    def _value(self, w: torch.Tensor, final: bool) -> torch.Tensor:
        g = self._groups(w)
        keep = self._keep(w, final)
        c = self.centroids.half().float().sort(dim=1).values  # the file stores the palette in float16
        snapped = torch.gather(c, 1, self._assign(g, c))
        if keep is not None:
            snapped = snapped * keep
        return snapped.reshape(w.shape)

    def forward(self, w):
        if self.training:
            self._lloyd(self._groups(w.detach()), self._keep(w.detach(), final=False))
            self.step += 1
        return w + (self._value(w.detach(), final=False) - w).detach()

    def snap(self, w: torch.Tensor) -> torch.Tensor:
        """The final weight: every value a palette entry, the full sparsity applied."""
        return self._value(w.detach(), final=True)


def distinct_per_group(w: torch.Tensor, per_channel: bool) -> int:
    """The most distinct float16 values any palette group of w holds (what Core ML's `unique` mode counts)."""
    g = (w.reshape(w.shape[0], -1) if per_channel else w.reshape(1, -1)).half()
    return max(len(torch.unique(row)) for row in g)
