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

FORMATS = {"full-int8": "tflite", "static-int8": "onnx"}  # the modes trained here -> the format carrying it
MODES = tuple(FORMATS)
# Whether a mode's program holds its weights as int8 constants (else float, with quantise/dequantise
# pairs): litert-torch converts only the latter (given int8 constants its lowering fails: stablehlo's
# uniform_dequantize refuses a plain i8 tensor) and stores int8 itself; the ONNX exporter keeps a float
# weight as it is and quantises it at run time (onnxscript never folds QuantizeLinear), a file holding
# float32 weights: 108,950 B for the MNIST-1D 10x student against 22,760 B with int8 constants (and the
# exporter's debug record dropped, edgekd.export.onnx).
INT8_CONSTANTS = {"full-int8": False, "static-int8": True}
STATE = "activations.safetensors"  # the prepared graph's state (weights and every quantiser's range)


def text_refused(mode: str) -> InputError:
    """The refusal of `mode` for a text model, naming the recipe field it came from."""
    return InputError(f"compress.{FORMATS[mode]}: {mode!r} would quantise a text model's token ids and mask; "
                      "remove it (text students train for int8, pal2..pal8, prune-pal4 or mixed-pal)")


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

    folded = fold_batchnorm(model)
    norms = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
    left = next((n for n, m in folded.named_modules() if isinstance(m, norms)), None)
    if left is not None:  # training would switch it to batch statistics; the file has fixed ones
        raise InputError(f"int8-activation training (compress full-int8 / static-int8) folds each BatchNorm "
                         f"into the convolution before it inside an nn.Sequential, but {left!r} of "
                         f"{type(model).__name__} follows none; put it after its conv in an nn.Sequential "
                         "or remove full-int8 / static-int8 from compress.tflite / compress.onnx")
    x = torch.from_numpy(np.asarray(example[:2]))
    try:
        program = torch.export.export(folded, (x,), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
        graph = prepare_qat_pt2e(program.module(), quantizer(qat=True))
    except Exception as e:  # noqa: BLE001 - the user's network: report what torch.export said
        raise InputError(f"int8-activation training: {type(model).__name__} cannot be exported with a free "
                         f"batch dimension ({type(e).__name__}: {str(e)[:200]}); remove full-int8 / "
                         "static-int8 from compress.tflite / compress.onnx") from None
    allow_exported_model_train_eval(graph)
    return graph


@torch.no_grad()
def calibrate(graph: torch.fx.GraphModule, x: np.ndarray, batch_size: int = 256) -> None:
    """Run inputs x (N, ...) through the graph so each range starts from the data (moving averages)."""
    graph.eval()
    for i in range(0, len(x), batch_size):
        graph(torch.from_numpy(np.asarray(x[i:i + batch_size])))


def freeze(graph: torch.fx.GraphModule, int8_constants: bool = False) -> torch.fx.GraphModule:
    """The trained graph as the program the file computes: ranges fixed, quantise/dequantise pairs on
    every activation, each weight float with its quantise/dequantise pair or (`int8_constants`) stored as
    int8 with its dequantise (the same values)."""
    from torchao.quantization.pt2e import allow_exported_model_train_eval, disable_observer
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    graph.apply(disable_observer)
    graph.eval()
    program = convert_pt2e(graph, fold_quantize=int8_constants)
    allow_exported_model_train_eval(program)
    program.eval()  # (the patched eval returns None)
    return program


def state(graph: torch.fx.GraphModule) -> dict[str, torch.Tensor]:
    """The graph's state to save: copies, since quantisers that share one range (the inputs and output of
    an add or a concatenation) are one module under two names, which safetensors refuses to write."""
    return {k: v.detach().clone().contiguous() for k, v in graph.state_dict().items()}


def restore(model: nn.Module, example: np.ndarray, path: Path, mode: str) -> torch.fx.GraphModule:
    """The frozen program a compress step trained for `mode`, from the checkpoint's network and its
    `STATE` file, its weights as that mode's converter takes them (INT8_CONSTANTS)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        saved = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise InputError(f"{path}: unreadable trained int8 ranges ({e}); re-run the compress step") from None
    graph = prepare(model, example)
    folded = graph.state_dict()
    changed = [k for k, v in folded.items() if "post_process" not in k and k in saved
               and not torch.equal(v, saved[k])]
    if changed:  # model.safetensors and the ranges were not written by the same training
        raise InputError(f"{path}: its weights differ from the checkpoint's at {changed[0]!r}; "
                         "re-run the compress step")
    try:
        graph.load_state_dict(saved, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[1].strip() if "\n" in str(e) else str(e)
        raise InputError(f"{path}: the trained int8 ranges do not fit this network's graph ({first}); "
                         "re-run the compress step with this edgekd") from None
    return freeze(graph, INT8_CONSTANTS[mode])


def unfolded(model: nn.Module, graph: torch.fx.GraphModule) -> None:
    """Write the trained weights of `prepare`'s graph back into `model` (in place) so that the model
    folds to exactly them: each conv keeps its trained weight and bias, and its BatchNorm becomes an exact
    identity (scale 1, variance v with v + eps == 1 in float32; a conv without a bias keeps it there)."""
    from edgekd.models.zoo import WEIGHTED, conv_bn_pairs, neutral_variance

    trained = graph.state_dict()
    pairs = dict(conv_bn_pairs(model))
    missing = [n for n, m in model.named_modules()
               if isinstance(m, WEIGHTED) and f"{n}.weight" not in trained]
    if missing:  # the weights would stay the untrained ones
        raise ValueError(f"the trained graph has no weight for {missing[0]!r}; this is a bug in edgekd")
    with torch.no_grad():
        for name, t in [*model.named_parameters(), *model.named_buffers()]:
            if name in trained:
                t.copy_(trained[name])
        for conv_name, bn in pairs.items():
            conv = model.get_submodule(conv_name)
            bias = trained[f"{conv_name}.bias"]
            if conv.bias is not None:
                conv.bias.copy_(bias)
                if bn.affine:
                    bn.bias.zero_()
            elif bn.affine:
                bn.bias.copy_(bias)
            else:  # nowhere to keep the folded shift
                raise InputError(f"int8-activation training: the conv {conv_name!r} has no bias and its "
                                 "BatchNorm no affine shift to keep the trained one in; give the conv a bias")
            if bn.affine:
                bn.weight.fill_(1.0)
            bn.running_mean.zero_()
            bn.running_var.fill_(neutral_variance(bn.eps))
