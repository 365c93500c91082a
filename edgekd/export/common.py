"""What every exporter shares: the model wrapper that ends in softmax, the metadata, the registry."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from edgekd.registry import Registry


class WithProbabilities(nn.Module):
    """The exported graph: logits -> softmax, so an app reads class probabilities directly.
    BatchNorm layers that follow a conv are folded into it (litert-torch otherwise keeps them as a MUL
    and an ADD per layer at run time)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = fold_batchnorm(model)

    def forward(self, x):  # (B, *input_shape) -> (B, C)
        return torch.softmax(self.model(x), dim=-1)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of `model` (eval mode) with every Conv -> BatchNorm pair inside an nn.Sequential fused."""
    import copy

    from torch.nn.utils.fusion import fuse_conv_bn_eval

    model = copy.deepcopy(model).eval()
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        names = list(seq._modules)
        for a, b in zip(names, names[1:]):
            conv, bn = seq._modules[a], seq._modules[b]
            if isinstance(conv, (nn.Conv1d, nn.Conv2d)) and isinstance(bn, (nn.BatchNorm1d, nn.BatchNorm2d)):
                seq._modules[a] = fuse_conv_bn_eval(conv, bn)
                seq._modules[b] = nn.Identity()
    return model


@dataclass(frozen=True)
class ExportMeta:
    name: str
    labels: tuple[str, ...]
    mean: float
    std: float
    input_shape: tuple[int, ...]
    version: str = "1.0.0"
    author: str = "edgekd"
    license: str = "Apache-2.0"
    description: str = ""

    def input_description(self) -> str:
        shape = "x".join(str(s) for s in (1, *self.input_shape))
        return f"float32 tensor {shape}, normalised as (x - {self.mean:.6g}) / {self.std:.6g}"

    def user_defined(self) -> dict[str, str]:
        return {"edgekd.labels": json.dumps(list(self.labels)), "edgekd.mean": repr(self.mean),
                "edgekd.std": repr(self.std), "edgekd.input_shape": json.dumps(list(self.input_shape))}


@dataclass(frozen=True)
class Exporter:
    fmt: str
    suffix: str
    quants: tuple[str, ...]
    write: Callable[..., None]  # (model, sample, dest, quant, calib, meta, **options) -> None


EXPORTERS: Registry[Exporter] = Registry("export format")


def register(fmt: str, suffix: str, quants: tuple[str, ...]):
    def add(fn):
        EXPORTERS.register(fmt)(Exporter(fmt, suffix, quants, fn))
        return fn
    return add


def file_name(meta: ExportMeta, fmt: str, quant: str) -> str:
    return f"{meta.name}-{quant}{EXPORTERS.get(fmt).suffix}"


def calibration_batches(calib: np.ndarray) -> list[np.ndarray]:
    return [calib[i:i + 1] for i in range(len(calib))]


def dir_size(path: Path) -> int:
    path = Path(path)
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
