"""The compress step as named steps, per student and mode: fold BatchNorm -> choose bits (mixed: by
sensitivity) -> fine-tune on the grid with the KD loss -> snap -> check -> save.

The teacher supervises the compressed student (Apple's on-device models recover accuracy lost to
palettisation by training; here the same teacher outputs the distillation used), beside the float
student itself: a share of the soft target (`fidelity`) is the student's own outputs before compression,
since the file is judged by how often it agrees with that student. The result is an
ordinary checkpoint whose weights already lie on the file's grid, so export stores them as they are
and its parity check compares the file with exactly the network that was trained.
"""

from __future__ import annotations

import time
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import torch
from torch.nn.utils import parametrize

from edgekd.checkpoint import extra_file, load_checkpoint, read_checkpoint, save_checkpoint
from edgekd.compress.allocate import (
    SPARSITY_LADDER,
    allocate_bits,
    allocate_sparsity,
    average_bits,
    layer_sensitivity,
    sparsity_sensitivity,
)
from edgekd.compress.fake import Int8, Palette, distinct_per_group
from edgekd.compress.fold import fold, unfold, weighted_layers
from edgekd.data import Dataset, load_checked
from edgekd.distill.batches import Blend, Chain
from edgekd.distill.stage import finished, teacher_outputs, transfer_inputs
from edgekd.distill.train import accuracy, train
from edgekd.errors import InputError, TrainingError
from edgekd.fileio import json_sha256, relative_to
from edgekd.metrics import retention
from edgekd.models import qat
from edgekd.types import Checkpoint, CompressResult, CompressSpec

# weight grids (edgekd.compress.fake), and int8 weights with int8 activations (edgekd.models.qat: TFLite's
# full-int8 and ONNX's static-int8 files, each trained for on its own)
CALIBRATION_ROWS = 1024  # training rows the activation ranges start from (post-training export: 128)
MODES = ("int8", "pal2", "pal4", "pal6", "pal8", "prune-pal4", "mixed-pal", *qat.MODES)


def compressed_name(student: str, mode: str) -> str:
    return f"{student}.{mode}-kd"


def compress_student(data: Dataset, teacher: Checkpoint, teacher_model, student: Path, out_dir: Path,
                     spec: CompressSpec, *, transfer_samples: int, cache_dir: Path | None) -> CompressResult:
    """Fine-tune the student checkpoint at `student` for `spec.mode` and save it to
    `out_dir/STUDENT.MODE-kd` (reused when the same inputs already made it)."""
    if spec.mode not in MODES:
        raise InputError(f"unknown compression {spec.mode!r}; choose one of {', '.join(MODES)}")
    if spec.mode in qat.MODES and data.is_text:
        raise qat.text_refused(spec.mode)
    src, model = load_checkpoint(student)
    name = compressed_name(src.name, spec.mode)
    dest = Path(out_dir) / name
    inputs = dict(spec=_recorded(spec), student=src.weights_sha256, teacher=teacher.weights_sha256,
                  data=data.fingerprint, n=transfer_samples)
    if spec.mode in qat.MODES:  # (added only here: the other modes' checkpoints keep their keys)
        inputs["calibration"] = CALIBRATION_ROWS
    if spec.sparsity > 0 and spec.sparsity_by == "sensitivity":  # the rungs decide the allocation
        inputs["ladder"] = SPARSITY_LADDER
    key = json_sha256(inputs)
    student_acc = src.accuracy if src.accuracy is not None else accuracy(model, data.x_test, data.y_test)
    if finished(dest, key) and _intact(done := read_checkpoint(dest), spec.mode):
        return _result(done, src, student_acc, teacher, 0.0)

    t0 = time.perf_counter()
    xu = transfer_inputs(data, transfer_samples, seed=0, cache_dir=cache_dir)
    x, y = Chain(data.x_train, xu), Chain(data.y_train, np.full(len(xu), -1, np.int64))
    state = Path(out_dir) / f".{name}.{key[:12]}.state.pt"

    # the float student's own outputs, before anything below changes `model` in place
    own = (teacher_outputs(data, src, model, xu, cache_dir)[0] if spec.epochs > 0 and spec.fidelity > 0
           else None)

    def fine_tune(net) -> None:  # KD on the grid against the teacher outputs distillation cached (and own)
        if spec.epochs > 0:  # 0: the same grid after training only (a post-training baseline to compare)
            logits = (own if spec.fidelity == 1 else
                      teacher_outputs(data, teacher, teacher_model, xu, cache_dir)[0])
            if 0 < spec.fidelity < 1:
                logits = Blend(logits, own, spec.fidelity, spec.temperature)
            train(net, x, y, epochs=spec.epochs, batch_size=spec.batch_size, lr=spec.lr,
                  weight_decay=spec.weight_decay, seed=spec.seed, teacher_logits=logits,
                  temperature=spec.temperature, alpha=spec.alpha, state_path=state, desc=name)

    layers = weighted_layers(model)
    if spec.mode in qat.MODES:
        extras, acc = _train_activations(model, data, fine_tune)
        bits, sensitivity = {n: spec.bits for n in layers}, {}
    else:
        steps = spec.epochs * -(-len(y) // spec.batch_size)
        acc, bits, sensitivity = _train_weights(model, src.name, layers, data, spec, steps, fine_tune)
        extras = None
    weights = {n: layer.weight.numel() for n, layer in layers.items()}
    compression = {"mode": spec.mode, "bits": bits, "average_bits": round(average_bits(bits, weights), 4),
                   "fidelity": spec.fidelity, "per_channel": spec.per_channel, "sparsity": spec.sparsity,
                   "sensitivity": sensitivity}
    if spec.sparsity > 0:  # what the network holds: the share of zeros overall, and per layer
        zeros = {n: int((layer.weight == 0).sum()) for n, layer in layers.items()}
        compression["sparsity"] = round(sum(zeros.values()) / sum(weights.values()), 4)
        compression["layer_sparsity"] = {n: round(zeros[n] / weights[n], 4) for n in weights}
    save_checkpoint(model, dest, name=name, role="student", arch=src.arch, width=src.width, depth=src.depth,
                    input_shape=src.input_shape, labels=src.labels, mean=src.mean, std=src.std,
                    data_fingerprint=src.data_fingerprint, accuracy=acc, spec=src.spec, extras=extras,
                    provenance={**src.provenance, "key": key, "compression": compression,
                                "compressed_from": relative_to(src.path, dest),
                                "student_accuracy": student_acc,
                                "teacher": relative_to(teacher.path, dest)})
    state.unlink(missing_ok=True)
    return _result(read_checkpoint(dest), src, student_acc, teacher, time.perf_counter() - t0)


# fields added to CompressSpec after keys were first written; at their defaults they train as before them
NEUTRAL = {f.name: f.default for f in fields(CompressSpec) if f.name in ("fidelity", "sparsity_by")}


def _recorded(spec: CompressSpec) -> dict:
    """The spec as its checkpoint's key records it: a field of NEUTRAL at its neutral value is left out,
    so checkpoints made before it stay valid."""
    return {k: v for k, v in asdict(spec).items() if not (k in NEUTRAL and v == NEUTRAL[k])}


def _train_weights(model, label: str, layers: dict, data: Dataset, spec: CompressSpec, steps: int,
                   fine_tune):
    """Weights on a grid (int8, palettes, sparse palettes, mixed bits): fold BatchNorm -> choose bits ->
    fine-tune with fake compression -> snap -> unfold -> check. Returns (accuracy, bits, sensitivity)."""
    folded = fold(model, label)  # BatchNorm scales into the weights the grid holds
    sensitivity, rows = {}, spec.sensitivity_samples  # mixed-pal: per layer at 2 widths; prune-pal4: per rung
    if spec.mode == "mixed-pal":
        sensitivity = layer_sensitivity(model, layers, data.x_train[:rows], data.y_train[:rows],
                                        spec.mixed_bits[0], spec.per_channel)
        bits = allocate_bits(sensitivity, *spec.mixed_bits, spec.average_bits)
    else:
        bits = {n: spec.bits for n in layers}
    sparsity = dict.fromkeys(layers, spec.sparsity)
    if spec.sparsity > 0 and spec.sparsity_by == "sensitivity":
        sensitivity = sparsity_sensitivity(model, layers, data.x_train[:rows], spec.bits, spec.per_channel)
        sparsity = allocate_sparsity(sensitivity, spec.sparsity)
    for n, layer in layers.items():  # fake compression on every weight the exporters quantise
        fake = (Int8() if spec.mode == "int8" else
                Palette(layer.weight, bits[n], spec.per_channel, sparsity[n], ramp_steps=steps // 2))
        parametrize.register_parametrization(layer, "weight", fake)
    fine_tune(model)
    _snap(layers)
    unfold(model, folded)
    _check_grid(layers, bits, spec)
    return accuracy(model, data.x_test, data.y_test), bits, sensitivity


def _train_activations(model, data: Dataset, fine_tune) -> tuple[dict, float]:
    """int8 weights and activations (PT2E QAT): fake quantisers on the BatchNorm-folded graph -> fine-tune
    -> the trained weights back into `model` (its BatchNorms exact identities) -> freeze. Returns the
    checkpoint's extra file (the trained ranges) and the accuracy of the program the file computes."""
    graph = qat.prepare(model, data.x_train[:2])
    rows = np.sort(np.random.default_rng(0).permutation(len(data.x_train))[:CALIBRATION_ROWS])
    qat.calibrate(graph, data.x_train[rows])  # training starts from the data's ranges (a file may be sorted)
    fine_tune(graph)
    trained = qat.state(graph)
    qat.unfolded(model, graph)
    program = qat.freeze(graph)
    return {qat.STATE: trained}, accuracy(program, data.x_test, data.y_test)


def _intact(ckpt: Checkpoint, mode: str) -> bool:
    """The checkpoint records the files its mode needs, and each is there, unchanged (else it is trained
    again)."""
    if mode in qat.MODES and qat.STATE not in ckpt.extras:
        return False
    try:
        for fname in ckpt.extras:
            extra_file(ckpt, fname)
    except InputError:
        return False
    return True


@torch.no_grad()
def _snap(layers: dict) -> None:
    """Each weight becomes its grid value (computed from the float weight, not `w + (q - w)`, which is
    not always exactly q in floating point) and the parametrization is removed."""
    for layer in layers.values():
        fake = layer.parametrizations.weight[0]
        value = fake.snap(layer.parametrizations.weight.original)
        parametrize.remove_parametrizations(layer, "weight", leave_parametrized=False)
        layer.weight.copy_(value)


def _check_grid(layers: dict, bits: dict, spec: CompressSpec) -> None:
    """The snapped weights hold no more distinct values per palette than the file can index (Core ML's
    `unique` mode would otherwise skip the weight silently)."""
    if spec.mode == "int8":
        return
    for n, layer in layers.items():
        distinct = distinct_per_group(layer.weight, spec.per_channel)
        if distinct > 2 ** bits[n]:
            raise TrainingError(f"compress {spec.mode}: layer {n!r} holds {distinct} distinct float16 values "
                                f"in a palette of {2 ** bits[n]}; this is a bug in edgekd, please report it")


def _result(ckpt: Checkpoint, src: Checkpoint, student_acc: float, teacher: Checkpoint,
            train_s: float) -> CompressResult:
    c = ckpt.provenance["compression"]
    return CompressResult(name=ckpt.name, checkpoint=ckpt.path, student=src.name, mode=c["mode"],
                          accuracy=ckpt.accuracy, student_accuracy=student_acc,
                          retention=retention(ckpt.accuracy, teacher.accuracy), bits=c["bits"],
                          average_bits=c["average_bits"], sparsity=c["sparsity"], train_s=round(train_s, 2),
                          sensitivity=c.get("sensitivity", {}), layer_sparsity=c.get("layer_sparsity", {}))


def compress_job(source: dict, fingerprint: str, teacher: Checkpoint, student: Path, out_dir: Path,
                 spec: CompressSpec, kwargs: dict) -> CompressResult:
    """`compress_student` in a job process of its own (edgekd.distill.jobs), from the data's record."""
    _, model = load_checkpoint(teacher.path)
    data = load_checked(source, fingerprint)
    return compress_student(data, teacher, model, student, out_dir, spec, **kwargs)
