"""Core ML (coremltools 9, ML Program) with weight compression and W8A8.

Quantised variants start from the fp16 program (what the Neural Engine runs).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

from edgekd.errors import InputError
from edgekd.export.common import ExportMeta, register, trained_for
from edgekd.inputs import named_inputs

DEFAULTS = ("fp32", "fp16", "int8", "pal6", "pal4", "prune-pal4", "w8a8")
# pal2 and pal8 on request; mixed-pal only for a checkpoint the compress step trained for it (the bits
# per layer are its choice)
QUANTS = (*DEFAULTS, "pal2", "pal8", "mixed-pal")
PALETTES = ("pal2", "pal4", "pal6", "pal8", "mixed-pal")
# The oldest deployment target each mode can be expressed in.
MIN_TARGET = {"fp32": 15, "fp16": 15, "int8": 16, "pal2": 16, "pal4": 16, "pal6": 16, "pal8": 16,
              "mixed-pal": 16, "prune-pal4": 18, "w8a8": 17}
TARGETS = ("iOS15", "iOS16", "iOS17", "iOS18")


def check_target(quant: str, target: str, compression: dict | None = None) -> None:
    """Refuse (exit 2) a mode the target or the checkpoint cannot give; `compression`: the checkpoint's
    record from the compress step, if any."""
    if target not in TARGETS:
        raise InputError(f"unknown Core ML deployment target {target!r}; choose one of {', '.join(TARGETS)}")
    need = MIN_TARGET[quant]
    if int(target[3:]) < need:
        raise InputError(f"Core ML mode {quant!r} needs deployment target iOS{need} or later, "
                         f"but the target is {target}; raise --coreml-target or drop {quant!r}")
    trained = trained_for(compression, quant)
    if quant == "mixed-pal" and trained is None:
        raise InputError("Core ML mode 'mixed-pal' stores the bits per layer the compress step chose; export "
                         "a checkpoint it trained (recipe `compress.coreml: [mixed-pal]`) or pick pal2/pal4")
    if trained is not None and trained["per_channel"] and int(target[3:]) < 18:
        raise InputError(f"this checkpoint was trained with one palette per channel, which Core ML stores "
                         f"from iOS18 on; the target is {target}: raise --coreml-target or train with "
                         "compress.per_channel: false")


@register("coreml", ".mlpackage", QUANTS, DEFAULTS)
def write_coreml(model, sample: np.ndarray, dest: Path, quant: str, calib: np.ndarray, meta: ExportMeta,
                 target: str = "iOS18") -> None:
    import coremltools as ct
    import coremltools.optimize.coreml as cto
    import torch

    check_target(quant, target, meta.compression)
    trained = meta.trained_for(quant)  # weights already on the grid (edgekd.compress): store them as they are
    feeds = named_inputs(sample)
    traced = torch.jit.trace(model.eval(), tuple(torch.from_numpy(v) for v in feeds.values()))
    ml = ct.convert(
        traced, inputs=[ct.TensorType(name=k, shape=v.shape, dtype=v.dtype.type) for k, v in feeds.items()],
        convert_to="mlprogram",
        classifier_config=ct.ClassifierConfig(list(meta.labels)),
        compute_precision=ct.precision.FLOAT32 if quant == "fp32" else ct.precision.FLOAT16,
        minimum_deployment_target=getattr(ct.target, target))
    if quant == "w8a8":
        ml = _quantize_activations(ml, calib)
    if quant in ("int8", "w8a8"):
        ml = cto.linear_quantize_weights(ml, cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(
            mode="linear_symmetric", dtype="int8", granularity="per_channel", weight_threshold=0)))
    elif quant in PALETTES:
        config = _trained_palette(trained, model) if trained else _palette(int(quant[3:]), target)
        ml = cto.palettize_weights(ml, _per_tensor_embeddings(config))
    elif quant == "prune-pal4" and trained:  # the zeros and the palette are the trained ones; a layer the
        # sensitivity allocation left dense stays dense (a sparse mask of all ones costs a bit a weight)
        ml = cto.prune_weights(ml, cto.OptimizationConfig(global_config=cto.OpThresholdPrunerConfig(
            threshold=1e-12, minimum_sparsity_percentile=1e-6, weight_threshold=0)))
        ml = cto.palettize_weights(ml, cto.OptimizationConfig(global_config=_trained_palette(trained, model)),
                                   joint_compression=True)
    elif quant == "prune-pal4":
        # 25% magnitude sparsity: on the 14k-param MNIST-1D student, 50% without fine-tuning kept only
        # 80% top-1 agreement, 25% kept 98.4%.
        ml = cto.prune_weights(ml, cto.OptimizationConfig(global_config=cto.OpMagnitudePrunerConfig(
            target_sparsity=0.25, weight_threshold=0)))
        ml = cto.palettize_weights(ml, _per_tensor_embeddings(_palette(4, target)), joint_compression=True)
    if trained:
        _check_compressed(ml, trained)
    _describe(ml, meta, quant)
    with tempfile.TemporaryDirectory() as tmpd:
        tmp = Path(tmpd) / dest.name
        ml.save(str(tmp))
        _make_deterministic(tmp)
        shutil.move(str(tmp), dest)


def _make_deterministic(package: Path) -> None:
    """The same model must always give the same bytes (bundles are compared byte for byte), but
    coremltools names the package's items with random UUIDs and serialises protobuf maps (the metadata)
    in no fixed order. Derive the UUIDs from the item paths and re-serialise the spec deterministically."""
    import json
    import uuid

    from coremltools.proto import Model_pb2

    for spec_path in package.rglob("model.mlmodel"):
        spec = Model_pb2.Model()
        spec.ParseFromString(spec_path.read_bytes())
        spec_path.write_bytes(spec.SerializeToString(deterministic=True))

    path = package / "Manifest.json"
    manifest = json.loads(path.read_text())
    renamed = {old: str(uuid.uuid5(uuid.NAMESPACE_URL, "edgekd:" + item["path"]))
               for old, item in manifest["itemInfoEntries"].items()}
    manifest["itemInfoEntries"] = {renamed[k]: v for k, v in manifest["itemInfoEntries"].items()}
    manifest["rootModelIdentifier"] = renamed[manifest["rootModelIdentifier"]]
    path.write_text(json.dumps(manifest, indent=4, sort_keys=True) + "\n")


def _palette(nbits: int, target: str):
    """k-means palette. 4-bit: one palette per output channel from iOS18 on (per-tensor kept only 97.7%
    top-1 agreement on the MNIST-1D student, per-channel 100%, for 20% more bytes). 6-bit and older
    targets: one per tensor (a 64-entry palette per channel made the student's pal6 file as big as fp16)."""
    import coremltools.optimize.coreml as cto

    if nbits <= 4 and int(target[3:]) >= 18:
        return cto.OpPalettizerConfig(nbits=nbits, mode="kmeans", granularity="per_grouped_channel",
                                      group_size=1, weight_threshold=0)
    return cto.OpPalettizerConfig(nbits=nbits, mode="kmeans", weight_threshold=0)


def _per_tensor_embeddings(config):
    """`config` for every weight but an embedding table (a gather's): one palette per tensor there. Per
    output channel, a 30,522-row vocabulary is 30,522 k-means runs (46 s for a 32-wide table here), and
    a table's rows are looked up one at a time, not multiplied as channels."""
    import coremltools.optimize.coreml as cto

    if config.mode != "kmeans" or str(config.granularity).endswith("PER_TENSOR"):  # trained LUTs as trained
        return cto.OptimizationConfig(global_config=config)
    table = cto.OpPalettizerConfig(nbits=config.nbits, mode="kmeans", weight_threshold=0)
    return cto.OptimizationConfig(global_config=config, op_type_configs={"gather": table})


def _trained_palette(trained: dict, model):
    """The trained palette as it is: each weight group's LUT is its own distinct values, its bits the
    fewest that index its layer's groups (so mixed bits need no per-op configuration)."""
    import coremltools.optimize.coreml as cto

    lut = _TrainedLUT(model, trained)
    if trained["per_channel"]:
        return cto.OpPalettizerConfig(mode="custom", lut_function=lut, granularity="per_grouped_channel",
                                      group_size=1, weight_threshold=0)
    return cto.OpPalettizerConfig(mode="custom", lut_function=lut, weight_threshold=0)


class _TrainedLUT:
    """coremltools' `unique` mode, done here: it counts distinct values with numpy's float16 sort, which
    (numpy 2.3.5, AVX-512 here) misorders some arrays: a 128x64 weight holding 16 values was counted as
    24 and stored at 6 bits. Distinct values are taken in float32; a group is matched to its layer by
    its float16 bytes (the converter stores the same float16 values), so every group of a layer gets a
    LUT of the layer's length, as coremltools requires within an op."""

    BITS = (1, 2, 4, 6, 8)

    def __init__(self, model, trained: dict):
        from edgekd.models import WEIGHTED

        self.bits: dict[bytes, int] = {}
        self.fallback = max(trained["bits"].values())
        for m in model.modules():
            if isinstance(m, WEIGHTED):
                w = m.weight.detach().cpu().half().numpy()
                groups = list(w) if trained["per_channel"] else [w]
                most = max(len(np.unique(g.astype(np.float32))) for g in groups)
                nbits = next((b for b in self.BITS if most <= 2 ** b), 8)
                self.bits.update({np.ascontiguousarray(g).tobytes(): nbits for g in groups})

    def __call__(self, val: np.ndarray):
        nbits = self.bits.get(np.ascontiguousarray(val).tobytes(), self.fallback)
        values, indices = np.unique(val.reshape(-1).astype(np.float32), return_inverse=True)
        if len(values) > 2 ** nbits:
            from edgekd.errors import CheckFailed

            raise CheckFailed(f"the weights are not a trained palette: a group holds {len(values)} distinct "
                              f"values, more than 2**{nbits}; re-run the compress step that made them")
        lut = np.zeros(2 ** nbits, dtype=val.dtype)
        lut[:len(values)] = values.astype(val.dtype)
        return lut, indices.astype(np.uint8)


def _check_compressed(ml, trained: dict) -> None:
    """Every weight the compress step trained must be stored compressed at no more than its trained bits:
    coremltools skips a weight whose values are not a palette with only a warning, and a file that
    silently stored float16 would pass parity and lose its whole point."""
    from edgekd.errors import CheckFailed

    ops = [op for f in ml._mil_program.functions.values() for op in f.operations]
    if trained["mode"] == "int8":
        stored = [op for op in ops if op.op_type.startswith("constexpr_blockwise_shift_scale")
                  or op.op_type == "constexpr_affine_dequantize"]
        found = [8] * len(stored)
    else:
        stored = [op for op in ops if op.op_type.startswith("constexpr_lut_to_")]
        found = [int(round(np.log2(op.lut.shape[-2] if op.lut.rank >= 2 else op.lut.shape[0])))
                 for op in stored]
    want = sorted(trained["bits"].values())
    if len(found) != len(want) or any(f > w for f, w in zip(sorted(found), want)):
        raise CheckFailed(f"Core ML stored {len(found)} compressed weight(s) with bits {sorted(found)}; the "
                          f"compress step trained {len(want)} with bits {want}: the file would not carry the "
                          "trained compression")


def _describe(ml, meta: ExportMeta, quant: str) -> None:
    ml.author, ml.license, ml.version = meta.author, meta.license, meta.version
    ml.short_description = meta.description or f"{meta.name} classifier ({quant}), distilled with edgekd"
    for name, text in meta.input_descriptions().items():
        ml.input_description[name] = text
    spec = ml.get_spec()
    ml.output_description[spec.description.predictedFeatureName] = "most likely class label"
    ml.output_description[spec.description.predictedProbabilitiesName] = "probability of each class label"
    ml.user_defined_metadata.update({**meta.user_defined(), "edgekd.quant": quant})
    # the conversion date would make the same model's bytes differ from day to day
    ml.user_defined_metadata.pop("com.github.apple.coremltools.conversion_date", None)


def _op_vars(op) -> list:
    """An op's input and output variables (inputs may be tuples of variables)."""
    out = list(op.outputs)
    for v in op.inputs.values():
        out += list(v) if isinstance(v, (list, tuple)) else [v]
    return out


def _is_int(var) -> bool:
    from coremltools.converters.mil.mil import types

    try:
        dtype = var.dtype
    except (ValueError, AttributeError):  # a list variable has no single dtype
        return False
    return dtype is not None and (types.is_int(dtype) or dtype == types.bool)


def _quantize_activations(ml, calib: np.ndarray):
    """W8A8 on any OS. coremltools' `linear_quantize_activations` calibrates by calling Core ML's
    `predict`, which exists only on macOS; here the activation ranges come from edgekd's MIL executor
    and go into the same coremltools graph passes (insert quantize/dequantize pairs, then dedupe)."""
    import coremltools.optimize.coreml as cto
    from coremltools import _SPECIFICATION_VERSION_IOS_17
    from coremltools.converters.mil.frontend.milproto import load as milproto_load
    from coremltools.converters.mil.mil.passes.graph_pass import PassOption
    from coremltools.converters.mil.mil.passes.pass_registry import PASS_REGISTRY
    from coremltools.models import utils as model_utils

    from edgekd.runtimes.coreml_exec import MILExecutor

    with tempfile.TemporaryDirectory() as tmpd:
        path = Path(tmpd) / "float.mlpackage"
        ml.save(str(path))
        ex = MILExecutor(path)
        stats: dict = {}
        for i in range(len(calib)):
            ex.run(calib[i:i + 1], record=stats)
        for name, value in named_inputs(calib).items():
            if value.dtype.kind == "f":  # a float input's range; token ids are never quantised
                stats[name] = {"rmin": float(value.min()), "rmax": float(value.max())}
        for out in ml.get_spec().description.output:
            stats.pop(out.name, None)
        # ops on integer tensors (a text model's token ids and their index arithmetic) stay as they are:
        # Core ML quantises floats only
        on_ints = {o.name: None for o in ex.ops if any(_is_int(v) for v in _op_vars(o))}
        config = cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(mode="linear_symmetric"),
                                        op_name_configs=on_ints)
        passes = []
        for name in ("insert_prefix_quantize_dequantize_pair", "insert_suffix_quantize_dequantize_pair"):
            p = PASS_REGISTRY[f"compression::{name}"]
            p.set_options([PassOption("config", config)])
            p.set_options([PassOption("activation_stats", stats)])
            passes.append(p)
        passes.append(PASS_REGISTRY["common::dequantize_quantize_pair_elimination"])
        return model_utils._apply_graph_pass(ml, passes, spec_version=_SPECIFICATION_VERSION_IOS_17,
                                             pymil_load_func=milproto_load.load, skip_model_load=True)
