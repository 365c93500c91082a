"""The distillation stage as named steps: teacher (load or train, then the floor check), transfer set,
cached teacher outputs, student training, checkpoint."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from edgekd.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from edgekd.data import Dataset
from edgekd.distill.cache import cached_array, cached_teacher_outputs
from edgekd.distill.train import accuracy, train
from edgekd.errors import CheckFailed, InputError
from edgekd.fileio import json_sha256, relative_to
from edgekd.metrics import retention
from edgekd.models import Classifier, build_model
from edgekd.types import Checkpoint, StudentResult


def _finished(dest: Path, key: str) -> bool:
    """True when `dest` holds a readable checkpoint trained from exactly these inputs; a damaged or
    different one is trained again, never trusted."""
    try:
        return read_checkpoint(dest).provenance.get("key") == key
    except InputError:
        return False


def seeded_model(arch: str, data: Dataset, width: float, depth: int | None, seed: int) -> Classifier:
    """A freshly initialised model whose weights depend only on `seed`."""
    torch.manual_seed(seed)
    return build_model(arch, data.input_shape, data.num_classes, width=width, depth=depth)


def check_teacher_fits(ckpt: Checkpoint, data: Dataset) -> None:
    where = ckpt.path / "model.json"
    if len(ckpt.labels) != data.num_classes:
        raise InputError(f"{where}: the teacher predicts {len(ckpt.labels)} classes but dataset "
                         f"{data.name!r} has {data.num_classes}; use a teacher trained on this data")
    if tuple(ckpt.input_shape) != data.input_shape:
        raise InputError(f"{where}: the teacher takes inputs of shape {list(ckpt.input_shape)} but dataset "
                         f"{data.name!r} has {list(data.input_shape)}")


def load_teacher(path: Path, data: Dataset) -> tuple[Checkpoint, Classifier, float]:
    """Load a given teacher, check it fits the data, and measure it on the test split."""
    ckpt, model = load_checkpoint(path)
    check_teacher_fits(ckpt, data)
    return ckpt, model, accuracy(model, data.x_test, data.y_test)


def prepare_teacher(data: Dataset, out_dir: Path, *, arch: str, width: float, depth: int | None,
                    checkpoint: Path | None, min_accuracy: float, seed: int, epochs: int, batch_size: int,
                    lr: float, weight_decay: float) -> tuple[Checkpoint, Classifier]:
    """Return the teacher: the given checkpoint, or one trained here (reused from `out_dir` when the
    same recipe already trained it). Refuses a teacher whose test accuracy is below `min_accuracy`."""
    if checkpoint is not None:
        ckpt, model, acc = load_teacher(checkpoint, data)
    else:
        key = json_sha256(dict(arch=arch, width=width, depth=depth, seed=seed, epochs=epochs,
                               batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                               data=data.fingerprint))
        dest = Path(out_dir) / "teacher"
        if _finished(dest, key):
            ckpt, model, acc = load_teacher(dest, data)
        else:
            model = seeded_model(arch, data, width, depth, seed)
            train(model, data.x_train, data.y_train, epochs=epochs, batch_size=batch_size, lr=lr,
                  weight_decay=weight_decay, seed=seed,
                  state_path=Path(out_dir) / f".teacher.{key[:12]}.state.pt", desc="teacher")
            acc = accuracy(model, data.x_test, data.y_test)
            ckpt = save_checkpoint(model, dest, name="teacher", role="teacher", arch=arch, width=width,
                                   depth=depth, input_shape=data.input_shape, labels=data.labels,
                                   mean=data.mean, std=data.std, data_fingerprint=data.fingerprint,
                                   accuracy=acc, provenance={"key": key, "data": data.source})
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


def distill_student(data: Dataset, teacher: Checkpoint, teacher_model: Classifier, out_dir: Path, *,
                    name: str, arch: str, width: float, depth: int | None, method: str = "kd",
                    temperature: float, alpha: float, hint_weight: float = 0.0, cosine_weight: float = 0.0,
                    transfer_samples: int, use_transfer: bool = True, cache_dir: Path | None, seed: int,
                    epochs: int, batch_size: int, lr: float, weight_decay: float) -> StudentResult:
    """Train one student (`method` "kd": against the teacher, on the training set plus a teacher-labelled
    transfer set; "label": cross-entropy on the labelled training set only) and save its checkpoint
    to `out_dir/NAME`. A finished student with the same inputs is reused."""
    if method not in ("kd", "label"):
        raise InputError(f"unknown distillation method {method!r}; choose 'kd' or 'label'")
    n_transfer = transfer_samples if (method == "kd" and use_transfer) else 0
    key = json_sha256(dict(arch=arch, width=width, depth=depth, method=method, t=temperature, a=alpha,
                           h=hint_weight, c=cosine_weight, n=n_transfer, seed=seed, epochs=epochs,
                           bs=batch_size, lr=lr, wd=weight_decay, teacher=teacher.weights_sha256,
                           data=data.fingerprint))
    dest = Path(out_dir) / name
    model = seeded_model(arch, data, width, depth, seed)
    throughput = 0.0
    if _finished(dest, key):
        ckpt, model = load_checkpoint(dest)
        acc = accuracy(model, data.x_test, data.y_test)
    else:
        x, y = data.x_train, data.y_train
        logits = feats = None
        if method == "kd":
            xu = transfer_inputs(data, n_transfer, seed=0, cache_dir=cache_dir)
            lt, ft, _ = cached_teacher_outputs(teacher_model, teacher.weights_sha256, data.x_train, cache_dir)
            lu, fu, _ = cached_teacher_outputs(teacher_model, teacher.weights_sha256, xu, cache_dir)
            x, y = np.concatenate([x, xu]), np.concatenate([y, np.full(len(xu), -1, np.int64)])
            logits, feats = np.concatenate([lt, lu]), np.concatenate([ft, fu])
        state = Path(out_dir) / f".{name}.{key[:12]}.state.pt"
        stats = train(model, x, y, epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                      seed=seed, teacher_logits=logits, teacher_features=feats, temperature=temperature,
                      alpha=alpha, hint_weight=hint_weight, cosine_weight=cosine_weight, state_path=state,
                      desc=name)
        throughput = stats.samples_per_s
        acc = accuracy(model, data.x_test, data.y_test)
        ckpt = save_checkpoint(model, dest, name=name, role="student", arch=arch, width=width, depth=depth,
                               input_shape=data.input_shape, labels=data.labels, mean=data.mean, std=data.std,
                               data_fingerprint=data.fingerprint, accuracy=acc,
                               provenance={"key": key, "method": method,
                                           "teacher_sha256": teacher.weights_sha256,
                                           "teacher_accuracy": teacher.accuracy,
                                           "teacher_params": teacher.params,
                                           "teacher": relative_to(teacher.path, dest), "data": data.source})
        state.unlink(missing_ok=True)
    return StudentResult(name=name, checkpoint=dest, params=ckpt.params, accuracy=acc,
                         retention=retention(acc, teacher.accuracy), compression=teacher.params / ckpt.params,
                         method=method, train_samples_per_s=throughput)
