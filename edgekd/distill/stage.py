"""The distillation stage as named steps: teacher (load or train, then the floor check), transfer set,
cached teacher outputs, student training, checkpoint."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgekd.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from edgekd.data import Dataset
from edgekd.distill.batches import Augment, Chain
from edgekd.distill.cache import cached_array, cached_teacher_outputs
from edgekd.distill.train import accuracy, train
from edgekd.errors import CheckFailed, InputError
from edgekd.fileio import json_sha256, relative_to, sha256_file
from edgekd.metrics import retention
from edgekd.models import resolve
from edgekd.types import Checkpoint, ModelSpec, StudentResult


def _finished(dest: Path, key: str) -> bool:
    """True when `dest` holds a readable checkpoint trained from exactly these inputs; a damaged or
    different one is trained again, never trusted."""
    try:
        return read_checkpoint(dest).provenance.get("key") == key
    except InputError:
        return False


def seeded_model(spec: ModelSpec, data: Dataset, seed: int) -> nn.Module:
    """The spec's network for this data, its fresh weights depending only on `seed` (a spec with a
    weights file: those weights). Its output must be one logit per class of the data."""
    torch.manual_seed(seed)
    model = resolve(spec, data.input_shape, data.num_classes)
    check_fits_data(model, data, spec.label)
    return model


def check_fits_data(model: nn.Module, data: Dataset, label: str) -> None:
    """One forward pass on a test input: the network must take the data's input shape and give one
    logit per class (a factory's kwargs or a program's shapes can disagree with the data)."""
    try:
        with torch.no_grad():
            out = model(torch.from_numpy(data.x_test[:2]))
    except Exception as e:  # noqa: BLE001 - the user's network: report what it said
        raise InputError(f"model {label!r} does not take the data's inputs of shape "
                         f"{list(data.input_shape)} ({type(e).__name__}: {str(e)[:200]})") from None
    if tuple(out.shape) != (2, data.num_classes):
        raise InputError(f"model {label!r} gives outputs of shape {list(out.shape)[1:]} for dataset "
                         f"{data.name!r}, which has {data.num_classes} classes; set its number of classes")


def model_key(spec: ModelSpec) -> dict:
    """What identifies a network in a training key: the zoo's (arch, width, depth) as before, or the
    whole spec with the weights file's hash."""
    if spec.kind == "zoo":
        return dict(arch=spec.arch, width=spec.width, depth=spec.depth)
    weights = sha256_file(Path(spec.weights)) if spec.weights else None
    return dict(model={**spec.to_dict(), "weights": weights})


def check_teacher_fits(ckpt: Checkpoint, data: Dataset) -> None:
    data.check_task(ckpt.path / "model.json", "the teacher", ckpt.input_shape, len(ckpt.labels),
                    "use a teacher trained on this data")


def load_teacher(path: Path, data: Dataset) -> tuple[Checkpoint, nn.Module, float]:
    """Load a given teacher, check it fits the data, and measure it on the test split."""
    ckpt, model = load_checkpoint(path)
    check_teacher_fits(ckpt, data)
    return ckpt, model, accuracy(model, data.x_test, data.y_test)


def prepare_teacher(data: Dataset, out_dir: Path, *, spec: ModelSpec, checkpoint: Path | None,
                    min_accuracy: float, seed: int, epochs: int, batch_size: int, lr: float,
                    weight_decay: float, augment: Augment | None = None) -> tuple[Checkpoint, nn.Module]:
    """Return the teacher: the given checkpoint, a pretrained network (a spec with weights, used as it
    is), or one trained here (reused from `out_dir` when the same recipe already trained it). Refuses a
    teacher whose test accuracy is below `min_accuracy`."""
    if checkpoint is not None:
        ckpt, model, acc = load_teacher(checkpoint, data)
    else:
        pretrained = spec.weights is not None or spec.kind == "program"
        key = json_sha256(dict(**model_key(spec), seed=seed, epochs=0 if pretrained else epochs,
                               batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                               data=data.fingerprint, **({"augment": augment.__dict__} if augment else {})))
        dest = Path(out_dir) / "teacher"
        if _finished(dest, key):
            ckpt, model, acc = load_teacher(dest, data)
        else:
            model = seeded_model(spec, data, seed)
            if not pretrained:
                train(model, data.x_train, data.y_train, epochs=epochs, batch_size=batch_size, lr=lr,
                      weight_decay=weight_decay, seed=seed, augment=augment,
                      state_path=Path(out_dir) / f".teacher.{key[:12]}.state.pt", desc="teacher")
            acc = accuracy(model, data.x_test, data.y_test)
            ckpt = save_checkpoint(model, dest, name="teacher", role="teacher", arch=spec.arch or spec.kind,
                                   width=spec.width, depth=spec.depth, input_shape=data.input_shape,
                                   labels=data.labels, mean=data.mean, std=data.std,
                                   data_fingerprint=data.fingerprint, accuracy=acc,
                                   provenance={"key": key, "data": data.source, "pretrained": pretrained},
                                   spec=spec if spec.kind != "zoo" else None)
            (Path(out_dir) / f".teacher.{key[:12]}.state.pt").unlink(missing_ok=True)
    if acc < min_accuracy:
        raise CheckFailed(
            f"teacher {ckpt.path} reaches {acc:.4f} test accuracy on {data.name!r}, below the floor "
            f"teacher.min_accuracy={min_accuracy}: a poor teacher caps every student. "
            "Train it longer or wider, or lower the floor if you accept that")
    return replace(ckpt, accuracy=acc), model


def transfer_inputs(data: Dataset, n: int, seed: int, cache_dir: Path | None) -> np.ndarray:
    """The transfer set (unlabeled inputs the teacher labels), generated once and cached."""
    if n <= 0:
        return data.transfer_set(0, seed)
    # the fingerprint covers the labelled splits and the source's unlabeled inputs (x_unlabeled)
    return cached_array(cache_dir, f"{data.name}-{data.fingerprint[:32]}-transfer-{n}-{seed}",
                        lambda: data.transfer_set(n, seed), row_shape=data.input_shape)


def distill_student(data: Dataset, teacher: Checkpoint, teacher_model: nn.Module, out_dir: Path, *,
                    name: str, spec: ModelSpec, method: str = "kd",
                    temperature: float, alpha: float, hint_weight: float = 0.0, cosine_weight: float = 0.0,
                    transfer_samples: int, use_transfer: bool = True, cache_dir: Path | None, seed: int,
                    epochs: int, batch_size: int, lr: float, weight_decay: float, workers: int = 0,
                    augment: Augment | None = None, on_epoch=None) -> StudentResult:
    """Train one student (`method` "kd": against the teacher, on the training set plus a teacher-labelled
    transfer set; "label": cross-entropy on the labelled training set only) and save its checkpoint
    to `out_dir/NAME`. A finished student with the same inputs is reused. With `augment`, the teacher
    runs on each augmented batch instead of reading cached outputs (it must see the student's view).
    `on_epoch(epochs_done, model)` is called after every epoch (edgekd.distill.train)."""
    if method not in ("kd", "label"):
        raise InputError(f"unknown distillation method {method!r}; choose 'kd' or 'label'")
    n_transfer = transfer_samples if (method == "kd" and use_transfer) else 0
    key = json_sha256(dict(**model_key(spec), **({"augment": augment.__dict__} if augment else {}),
                           method=method, t=temperature, a=alpha,
                           h=hint_weight, c=cosine_weight, n=n_transfer, seed=seed, epochs=epochs,
                           bs=batch_size, lr=lr, wd=weight_decay, teacher=teacher.weights_sha256,
                           data=data.fingerprint))
    dest = Path(out_dir) / name
    throughput = 0.0
    if _finished(dest, key):
        ckpt, model = load_checkpoint(dest)
        acc = accuracy(model, data.x_test, data.y_test)
    else:
        model = seeded_model(spec, data, seed)
        x, y = data.x_train, data.y_train
        logits = feats = None
        if method == "kd":
            xu = transfer_inputs(data, n_transfer, seed=0, cache_dir=cache_dir)
            # labelled rows, then transfer rows (label -1), read in batches from memory maps: nothing
            # is concatenated in memory
            x, y = Chain(x, xu), Chain(y, np.full(len(xu), -1, np.int64))
            if augment is None:
                lt, ft, _ = cached_teacher_outputs(teacher_model, teacher.weights_sha256, data.x_train,
                                                   cache_dir)
                lu, fu, _ = cached_teacher_outputs(teacher_model, teacher.weights_sha256, xu, cache_dir)
                logits, feats = Chain(lt, lu), Chain(ft, fu)
        state = Path(out_dir) / f".{name}.{key[:12]}.state.pt"
        stats = train(model, x, y, epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                      seed=seed, teacher_logits=logits, teacher_features=feats, temperature=temperature,
                      alpha=alpha, hint_weight=hint_weight, cosine_weight=cosine_weight, state_path=state,
                      desc=name, workers=workers, augment=augment,
                      teacher=teacher_model if (augment is not None and method == "kd") else None,
                      on_epoch=on_epoch)
        throughput = stats.samples_per_s
        acc = accuracy(model, data.x_test, data.y_test)
        ckpt = save_checkpoint(model, dest, name=name, role="student", arch=spec.arch or spec.kind,
                               width=spec.width, depth=spec.depth, input_shape=data.input_shape,
                               labels=data.labels, mean=data.mean, std=data.std,
                               data_fingerprint=data.fingerprint, accuracy=acc,
                               spec=spec if spec.kind != "zoo" else None,
                               provenance={"key": key, "method": method,
                                           "teacher_sha256": teacher.weights_sha256,
                                           "teacher_accuracy": teacher.accuracy,
                                           "teacher_params": teacher.params,
                                           "teacher": relative_to(teacher.path, dest), "data": data.source})
        state.unlink(missing_ok=True)
    return StudentResult(name=name, checkpoint=dest, params=ckpt.params, accuracy=acc,
                         retention=retention(acc, teacher.accuracy), compression=teacher.params / ckpt.params,
                         method=method, train_samples_per_s=throughput)
