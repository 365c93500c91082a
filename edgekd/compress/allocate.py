"""Where the bits and the zeros go, layer by layer, by sensitivity (Han et al. 2015 chose each layer's
pruning rate from a sensitivity scan the same way).

- Mixed precision: how much each layer alone costs at the low bit width, then the low width for the
  layers that cost least per weight until the average bits per weight meets the budget.
- Sparsity: how much each layer alone costs at each of a ladder of sparsities (on its palette grid), then
  zeros added a rung at a time where they cost least per weight zeroed, until the network's share of
  zeros meets the target. On the Fashion-MNIST 10x student (50% of its weights zero, pal4, 3 epochs of
  fine-tuning, seed 0, teacher-only targets): agreement with the float student 0.945 by sensitivity
  against 0.919 with the same share in every tensor (Core ML's magnitude pruner's rule); one global
  magnitude cut over the BatchNorm-folded weights was worse than either (86.3% accuracy against 88.1%
  uniform). benchmarks/compress_aware.py, 3 seeds, fidelity 0.5: 10x 0.958-0.963, 30x 0.902-0.928.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from edgekd.compress.fake import Palette
from edgekd.errors import InputError


@torch.no_grad()
def _logits(model: nn.Module, x: np.ndarray, batch_size: int = 1024) -> torch.Tensor:
    return torch.cat([model(torch.from_numpy(np.asarray(x[i:i + batch_size])))
                      for i in range(0, len(x), batch_size)])


@torch.no_grad()
def _logits_with(model: nn.Module, layer: nn.Module, weight: torch.Tensor, x: np.ndarray) -> torch.Tensor:
    """The network's logits on x with `layer`'s weight replaced by `weight` (then put back)."""
    w = layer.weight.detach().clone()
    layer.weight.copy_(weight)
    try:
        return _logits(model, x)
    finally:
        layer.weight.copy_(w)


def _kl(p: torch.Tensor, z: torch.Tensor) -> float:
    """Mean KL(p || softmax(z)) over the rows; p: log-probabilities (N, C), z: logits (N, C)."""
    return max((p.exp() * (p - z.log_softmax(-1))).sum(-1).mean().item(), 0.0)


@torch.no_grad()
def layer_sensitivity(model: nn.Module, layers: dict[str, nn.Module], x: np.ndarray, y: np.ndarray,
                      bits: int, per_channel: bool) -> dict[str, dict]:
    """For each layer alone palettised to `bits` (post-training k-means, the rest in float): the mean
    KL(float || compressed) of the class distributions on x (N, ...), the accuracy drop in points on
    labels y (N,), the top-1 agreement with the float network, and the layer's weight count."""
    model.eval()
    base = _logits(model, x)
    p = base.log_softmax(-1)
    base_acc = (base.argmax(-1).numpy() == y).mean()
    out = {}
    for name, layer in layers.items():
        w = layer.weight.detach()
        z = _logits_with(model, layer, Palette(w, bits, per_channel).snap(w), x)
        out[name] = {"kl": _kl(p, z), "weights": w.numel(),
                     "accuracy_drop_points": round(100 * (base_acc - (z.argmax(-1).numpy() == y).mean()), 3),
                     "agreement": float((z.argmax(-1) == base.argmax(-1)).float().mean())}
    return out


def average_bits(bits: dict[str, int], weights: dict[str, int]) -> float:
    return sum(bits[n] * weights[n] for n in bits) / sum(weights.values())


def allocate_bits(sensitivity: dict[str, dict], low: int, high: int, budget: float) -> dict[str, int]:
    """Bits per layer: `high` everywhere, then `low` for the layers with the least KL per weight saved
    until the weighted average is at most `budget` (a greedy knapsack)."""
    weights = {n: s["weights"] for n, s in sensitivity.items()}
    bits = {n: high for n in sensitivity}
    for n in sorted(sensitivity, key=lambda n: (sensitivity[n]["kl"] / weights[n], n)):
        if average_bits(bits, weights) <= budget:
            break
        bits[n] = low
    if average_bits(bits, weights) > budget + 1e-9:
        raise InputError(f"compress.average_bits={budget} is below the low bit width {low}: no choice of "
                         f"{low}/{high} bits per layer meets it; raise compress.average_bits")
    return bits


SPARSITY_LADDER = (0.0, 0.25, 0.5, 0.625, 0.75, 0.875, 0.95)  # the rungs a layer's sparsity climbs


@torch.no_grad()
def sparsity_sensitivity(model: nn.Module, layers: dict[str, nn.Module], x: np.ndarray, bits: int,
                         per_channel: bool) -> dict[str, dict]:
    """For each layer alone on its palette grid at each rung of SPARSITY_LADDER (post-training, the rest
    in float): the mean KL(float || compressed) of the class distributions on x (N, ...), per rung, and
    the layer's weight count."""
    model.eval()
    p = _logits(model, x).log_softmax(-1)
    out = {}
    for name, layer in layers.items():
        w = layer.weight.detach()
        out[name] = {"kl": [_kl(p, _logits_with(model, layer, Palette(w, bits, per_channel, s).snap(w), x))
                            for s in SPARSITY_LADDER], "weights": w.numel()}
    return out


def allocate_sparsity(sensitivity: dict[str, dict], target: float) -> dict[str, float]:
    """Sparsity per layer whose zeros are `target` of all the weights: every layer starts dense, then the
    layer whose next rung of SPARSITY_LADDER adds the least KL per weight zeroed climbs one rung, until
    the target is met (a greedy knapsack); the last layer to climb stops between its rungs, where the
    share is met exactly (to a weight)."""
    ladder, weights = SPARSITY_LADDER, {n: s["weights"] for n, s in sensitivity.items()}
    rung = dict.fromkeys(sensitivity, 0)
    need = target * sum(weights.values())  # weights to zero

    def cost(n: str) -> float:  # KL added per weight zeroed by layer n's next rung
        kl, r = sensitivity[n]["kl"], rung[n]
        return (kl[r + 1] - kl[r]) / ((ladder[r + 1] - ladder[r]) * weights[n])

    zeros = 0.0
    while zeros < need - 0.5:  # within half a weight: Palette rounds each layer's count
        open_ = [n for n in rung if rung[n] + 1 < len(ladder)]
        if not open_:
            raise InputError(f"compress.sparsity={target} is above {ladder[-1]:g}, the most any layer is "
                             f"pruned; lower compress.sparsity")
        n = min(open_, key=lambda n: (cost(n), n))
        rung[n] += 1
        zeros += (ladder[rung[n]] - ladder[rung[n] - 1]) * weights[n]
    share = {m: ladder[r] for m, r in rung.items()}
    if zeros > need:  # the last climb: only as far as the target
        share[n] -= (zeros - need) / weights[n]
    return share
