"""Models from anywhere, through one spec: a zoo entry, a Python factory with weights, or a
`torch.export` program. Every stage resolves a `ModelSpec` here and never asks which kind it was given.

    {arch: cnn1d, width: 0.25}                                   # the zoo
    {factory: "pkg.module:function", kwargs: {...},              # your own network
     weights: model.safetensors | model.pt, rename: {"^module\\.": ""}}
    {program: model.pt2}                                         # a torch.export program
    {folder: all-minilm-l6-v2, kwargs: {layers: [0, 2, 4]}}      # a Hugging Face BERT folder (models.hf)

A PyTorch weights file is read with `torch.load(weights_only=True)`: tensors and plain containers only,
never pickled code.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from edgekd.errors import InputError
from edgekd.models.zoo import build_model, eval_mode
from edgekd.registry import Registry
from edgekd.types import ModelSpec

SOURCES: Registry[Callable[[ModelSpec, tuple[int, ...], int], nn.Module]] = Registry("model source")


def resolve(spec: ModelSpec, input_shape: tuple[int, ...], num_classes: int,
            where: str = "model") -> nn.Module:
    """The network a spec names, with its weights when the spec gives a file (eval mode)."""
    model = SOURCES.get(spec.kind, f"{where}: kind")(spec, tuple(input_shape), num_classes)
    if spec.weights is not None:
        load_weights(model, Path(spec.weights), spec.rename, where)
    return eval_mode(model)



@SOURCES.register("zoo")
def _zoo(spec: ModelSpec, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return build_model(spec.arch, input_shape, num_classes, width=spec.width, depth=spec.depth)


@SOURCES.register("factory")
def _factory(spec: ModelSpec, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    fn = import_factory(spec.factory)
    try:
        model = fn(**spec.kwargs)
    except Exception as e:  # noqa: BLE001 - the user's code: any error is theirs to see, with where it came from
        raise InputError(f"model factory {spec.factory!r} failed with kwargs {spec.kwargs}: "
                         f"{type(e).__name__}: {e}") from None
    if not isinstance(model, nn.Module):
        raise InputError(f"model factory {spec.factory!r} returned {type(model).__name__}, "
                         "not a torch nn.Module")
    return model


@SOURCES.register("program")
def _program(spec: ModelSpec, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    path = Path(spec.program)
    if not path.is_file():
        raise InputError(f"{path}: no such torch.export program (model.program); "
                         "save one with torch.export.save")
    try:
        return torch.export.load(str(path)).module()
    except Exception as e:  # noqa: BLE001 - a damaged or foreign file
        raise InputError(f"{path}: not a readable torch.export program ({type(e).__name__}: {e})") from None


def import_factory(ref: str) -> Callable[..., nn.Module]:
    """`package.module:function` -> the function; every failure names the reference and the fix."""
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise InputError(f"model factory {ref!r} must read 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # noqa: BLE001 - ImportError, or the module's own code failing at import
        raise InputError(f"model factory {ref!r}: module {module_name!r} does not import "
                         f"({type(e).__name__}: {e}); install it or fix PYTHONPATH") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise InputError(f"model factory {ref!r}: {module_name!r} has no callable {attr!r}")
    return fn


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors by name from a safetensors file or a PyTorch state dict (weights only, no code)."""
    if not path.is_file():
        raise InputError(f"{path}: no such weights file (model.weights)")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise InputError(f"{path}: corrupt safetensors file ({e})") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - UnpicklingError for code, others for damage
        raise InputError(f"{path}: refused: not a plain weights file ({type(e).__name__}); it may hold "
                         "pickled code, which edgekd never runs. Save `model.state_dict()` with torch.save, "
                         "or as safetensors") from None
    for key in ("state_dict", "model", "model_state_dict"):  # common checkpoint wrappers
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"{path}: not a state dict of tensors; save `model.state_dict()`")
    return state


def rename_keys(state: dict[str, torch.Tensor], rename: dict[str, str]) -> dict[str, torch.Tensor]:
    """Apply each `pattern: replacement` (regular expressions, in order) to every key."""
    out = {}
    for key, value in state.items():
        for pattern, repl in rename.items():
            key = re.sub(pattern, repl, key)
        out[key] = value
    return out


def load_weights(model: nn.Module, path: Path, rename: dict[str, str], where: str = "model") -> None:
    """Load a weights file into `model` strictly; a mismatch names the first bad key and the fix."""
    state = rename_keys(read_state_dict(path), rename)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        if wrong:
            k = wrong[0]
            first = f"{k!r} has shape {list(state[k].shape)} in the file, {list(own[k].shape)} in the model"
        elif missing:
            first = f"the model's {missing[0]!r} is not in the file"
        else:
            first = f"the file's {unexpected[0]!r} is not in the model"
        raise InputError(f"{path}: weights do not fit the {where} ({len(missing)} missing, {len(unexpected)} "
                         f"unexpected, {len(wrong)} of another shape; first: {first}); check the factory's "
                         "kwargs, or map the file's names with model.rename")
    model.load_state_dict(state, strict=True)
