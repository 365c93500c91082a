"""Int8 weights and activations as a full-integer file computes them, trainable: PT2E quantisation-aware
training (Jacob et al. 2018; torchao's prepare_qat_pt2e), for the compress step's `full-int8` (TFLite) and
`static-int8` (ONNX) modes.

One quantiser serves post-training export and training: litert-torch's PT2E config, int8 symmetric
per-channel weights and int8 per-tensor activations. The compress step trains `prepare`'s graph (each
activation and weight passes through a fake quantiser whose range follows the data, straight-through
gradients), then `freeze` turns it into the quantise/dequantise program the exporters convert as it is:
the file carries the ranges training settled on, not ranges recalibrated on a few samples afterwards.

The trained ranges are kept as the prepared graph's state (`STATE` in the checkpoint folder, beside the
float weights) and `restore` rebuilds the same graph from the checkpoint's network and loads it, strictly:
a network whose graph differs from the one trained is refused, never quantised afresh.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgekd.errors import InputError

STATE = "activations.safetensors"  # the prepared graph's state (weights and every quantiser's range)


def quantizer(qat: bool = False):
    """litert-torch's PT2E quantiser: int8 per-channel weights, int8 activations (fake quantisers with
    moving-average ranges when `qat`, histogram observers for post-training calibration otherwise)."""
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config

    class Folded(PT2EQuantizer):
        # BatchNorm is folded before the graph is exported (`prepare`), so the QAT-only conv-bn patterns
        # match nothing; their annotator also fails under torch 2.13 (it exports a bare function)
        STATIC_QAT_ONLY_OPS: list = []

    return (Folded() if qat else PT2EQuantizer()).set_global(
        get_symmetric_quantization_config(is_per_channel=True, is_qat=qat))


def prepare(model: nn.Module, example: np.ndarray) -> torch.fx.GraphModule:
    """The network with BatchNorm folded (fixed statistics, as in the file), exported with a free batch
    dimension and fake quantisers inserted; `.train()`/`.eval()` work on it. example: (>= 2, ...) inputs."""
    from torchao.quantization.pt2e import allow_exported_model_train_eval
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

    from edgekd.models.zoo import fold_batchnorm

    x = torch.from_numpy(np.asarray(example[:2]))
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(fold_batchnorm(model), (x,), dynamic_shapes=({0: batch},))
    graph = prepare_qat_pt2e(program.module(), quantizer(qat=True))
    allow_exported_model_train_eval(graph)
    return graph


@torch.no_grad()
def calibrate(graph: torch.fx.GraphModule, x: np.ndarray, batch_size: int = 256) -> None:
    """Run inputs x (N, ...) through the graph so each range starts from the data (moving averages)."""
    graph.eval()
    for i in range(0, len(x), batch_size):
        graph(torch.from_numpy(np.asarray(x[i:i + batch_size])))


def freeze(graph: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """The trained graph as the program the file computes: ranges fixed, quantise/dequantise pairs with
    float weights (the converters store them as int8 with these scales)."""
    from torchao.quantization.pt2e import allow_exported_model_train_eval, disable_observer
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    graph.apply(disable_observer)
    graph.eval()
    program = convert_pt2e(graph, fold_quantize=False)
    allow_exported_model_train_eval(program)
    program.eval()  # (the patched eval returns None)
    return program


def state(graph: torch.fx.GraphModule) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous() for k, v in graph.state_dict().items()}


def restore(model: nn.Module, example: np.ndarray, path: Path) -> torch.fx.GraphModule:
    """The frozen program a compress step trained, from the checkpoint's network and its `STATE` file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        saved = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise InputError(f"{path}: unreadable trained int8 ranges ({e}); re-run the compress step") from None
    graph = prepare(model, example)
    try:
        graph.load_state_dict(saved, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[1].strip() if "\n" in str(e) else str(e)
        raise InputError(f"{path}: the trained int8 ranges do not fit this network's graph ({first}); "
                         "re-run the compress step with this edgekd") from None
    return freeze(graph)


def unfolded(model: nn.Module, graph: torch.fx.GraphModule) -> None:
    """Write the trained weights of `prepare`'s graph back into `model` (in place) so that the model
    folds to exactly them: each conv keeps its trained weight and bias, and its BatchNorm becomes an exact
    identity (scale 1, variance 1 - eps so that var + eps == 1; a conv without a bias keeps it there)."""
    from edgekd.models.zoo import conv_bn_pairs

    trained = graph.state_dict()
    pairs = dict(conv_bn_pairs(model))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in trained:
                p.copy_(trained[name])
        for conv_name, bn in pairs.items():
            conv = model.get_submodule(conv_name)
            bias = trained[f"{conv_name}.bias"]
            if conv.bias is not None:
                conv.bias.copy_(bias)
                bn.bias.zero_()
            else:
                bn.bias.copy_(bias)
            bn.weight.fill_(1.0)
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0 - bn.eps)
            if (bn.running_var + bn.eps != 1.0).any():  # fp32: 1 - eps + eps is 1 for eps 1e-5 and 1e-3
                raise ValueError(f"BatchNorm after {conv_name!r}: eps {bn.eps} does not fold to an identity")
