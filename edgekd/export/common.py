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
    # the compress step's record (edgekd.compress) when the weights already lie on a quantisation grid:
    # the exporter of that mode then stores them as they are instead of quantising again
    compression: dict | None = None
    # a text model: the graph takes input_ids and attention_mask (edgekd.inputs), not a normalised x
    text: bool = False

    def input_description(self) -> str:
        shape = "x".join(str(s) for s in (1, *self.input_shape))
        return f"float32 tensor {shape}, normalised as (x - {self.mean:.6g}) / {self.std:.6g}"

    def input_descriptions(self) -> dict[str, str]:
        """Each graph input's description, by name."""
        if self.text:
            n = self.input_shape[-1]
            return {"input_ids": f"int32 1x{n}: token ids from the bundled tokenizer, [PAD]-padded to {n}",
                    "attention_mask": f"int32 1x{n}: 1 for a token, 0 for padding"}
        return {"x": self.input_description()}

    def user_defined(self) -> dict[str, str]:
        d = {"edgekd.labels": json.dumps(list(self.labels)), "edgekd.mean": repr(self.mean),
             "edgekd.std": repr(self.std), "edgekd.input_shape": json.dumps(list(self.input_shape))}
        if self.compression:
            d["edgekd.compression"] = self.compression["mode"] + "-kd"
        return d

    def trained_for(self, quant: str) -> dict | None:
        return trained_for(self.compression, quant)


def trained_for(compression: dict | None, quant: str) -> dict | None:
    """The compress step's record when the checkpoint was fine-tuned for `quant`, else None."""
    return compression if compression and compression["mode"] == quant else None


@dataclass(frozen=True)
class Exporter:
    fmt: str
    suffix: str
    quants: tuple[str, ...]  # what `--quant` may ask for
    write: Callable[..., None]  # (model, sample, dest, quant, calib, meta, **options) -> None
    defaults: tuple[str, ...] = ()  # what a plain export writes (no --quant); empty: every mode in quants

    @property
    def default_quants(self) -> tuple[str, ...]:
        return self.defaults or self.quants


EXPORTERS: Registry[Exporter] = Registry("export format")


def register(fmt: str, suffix: str, quants: tuple[str, ...], defaults: tuple[str, ...] = ()):
    def add(fn):
        EXPORTERS.register(fmt)(Exporter(fmt, suffix, quants, fn, defaults))
        return fn
    return add


def file_name(meta: ExportMeta, fmt: str, quant: str) -> str:
    return f"{meta.name}-{quant}{EXPORTERS.get(fmt).suffix}"
