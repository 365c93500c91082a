"""What every exporter shares: the metadata and the registry. (The exported graph is
`models.WithProbabilities`.)"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable

from edgekd.registry import Registry


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
