"""Fold BatchNorm before compressing. Converters fold a BatchNorm's scale into the convolution before it
(Core ML's `fuse_conv_batchnorm`, TFLite's fusions), which would move every trained grid value. So the
scale is folded here first, into the weights that are then trained on the grid, and the BatchNorm is
left as a pure shift (scale 1, mean 0, variance 1 - eps): the converters' fold multiplies by exactly
1.0 and the file keeps the trained values. The network keeps its modules, so a compressed checkpoint
loads with the student's own spec.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights, fuse_linear_bn_weights

from edgekd.errors import InputError
from edgekd.models import WEIGHTED
from edgekd.models.zoo import neutral_variance

NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


class Shift(nn.Module):
    """What a folded BatchNorm computes: x + b per channel (dim 1). Trained during fine-tuning."""

    def __init__(self, bias: torch.Tensor):
        super().__init__()
        self.bias = nn.Parameter(bias.detach().clone())

    def forward(self, x):
        return x + self.bias.view(1, -1, *[1] * (x.dim() - 2))


class Frozen(nn.Module):
    """A BatchNorm that follows no foldable layer: its statistics stay fixed (eval mode) while training."""

    def __init__(self, bn: nn.Module):
        super().__init__()
        self.bn = bn

    def forward(self, x):
        bn = self.bn
        return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)


@dataclass
class Folded:
    """The BatchNorms taken out of a network (qualified name -> module), to put back by `unfold`."""

    norms: dict[str, nn.Module]


def weighted_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every Conv1d/Conv2d/Linear by qualified name: the weights the exporters quantise."""
    return {n: m for n, m in model.named_modules() if isinstance(m, WEIGHTED)}


def _norm_inputs(model: nn.Module, label: str) -> dict[str, str]:
    """BatchNorm name -> the weighted layer whose only consumer it is (from an fx trace)."""
    import torch.fx

    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception as e:  # noqa: BLE001 - the user's network: report what the tracer said
        raise InputError(f"compress: model {label!r} cannot be traced with torch.fx to find which layer "
                         f"each BatchNorm follows ({type(e).__name__}: {str(e)[:160]}); remove its "
                         "data-dependent control flow or drop it from `compress`") from None
    modules = dict(model.named_modules())
    pairs = {}
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), NORMS):
            continue
        src = node.args[0] if node.args else None
        if (isinstance(src, torch.fx.Node) and src.op == "call_module"
                and isinstance(modules.get(src.target), WEIGHTED) and len(src.users) == 1):
            pairs[node.target] = src.target
    return pairs


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


@torch.no_grad()
def fold(model: nn.Module, label: str) -> Folded:
    """In place: each BatchNorm's scale into the layer before it, the BatchNorm replaced by its `Shift`
    (or, with no layer to fold into, by `Frozen`) for training. The outputs stay the same."""
    model.eval()
    pairs = _norm_inputs(model, label)
    modules = dict(model.named_modules())
    norms = {}
    for name, bn in list(modules.items()):
        if not isinstance(bn, NORMS):
            continue
        norms[name] = bn
        if name not in pairs:
            _set(model, name, Frozen(bn))
            continue
        layer = modules[pairs[name]]
        fuse = fuse_linear_bn_weights if isinstance(layer, nn.Linear) else fuse_conv_bn_weights
        gamma = bn.weight if bn.affine else torch.ones_like(bn.running_var)
        beta = bn.bias if bn.affine else torch.zeros_like(bn.running_var)
        weight, bias = fuse(layer.weight, layer.bias, bn.running_mean, bn.running_var, bn.eps, gamma, beta)
        layer.weight.copy_(weight)
        if layer.bias is not None:
            layer.bias.zero_()  # the whole shift goes to the BatchNorm's bias (a folded BatchNorm: x + b)
        _set(model, name, Shift(bias))
    return Folded(norms)


@torch.no_grad()
def unfold(model: nn.Module, folded: Folded) -> None:
    """Put the BatchNorms back: a folded one as a pure shift (scale exactly 1.0 in the converters' fold)."""
    for name, bn in folded.norms.items():
        current = model.get_submodule(name)
        if isinstance(current, Shift):
            if not bn.affine:
                raise InputError(f"compress: BatchNorm {name!r} has no affine shift to hold the folded "
                                 "bias; give it affine=True")
            bn.weight.fill_(1.0)
            bn.bias.copy_(current.bias)
            bn.running_mean.zero_()
            bn.running_var.fill_(neutral_variance(bn.eps))
        _set(model, name, bn)
    model.eval()
