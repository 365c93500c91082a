"""The distillation stage as named steps: teacher (load or train, then the floor check), transfer set,
cached teacher outputs, student training, checkpoint."""

from __future__ import annotations

from concurrent.futures import as_completed
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgekd.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from edgekd.data import Dataset, load_checked
from edgekd.data.tokens import pretrained_folder
from edgekd.distill.batches import Augment, Chain
from edgekd.distill.cache import (
    cached_array,
    cached_teacher_outputs,
    fill_rows,
    ranks_teacher_outputs,
    shard_bounds,
)
from edgekd.distill.distributed import SINGLE, World
from edgekd.distill.jobs import Jobs
from edgekd.distill.train import accuracy, train
from edgekd.errors import CheckFailed, InputError
from edgekd.fileio import json_sha256, relative_to, sha256_file
from edgekd.metrics import retention
from edgekd.models import Classifier, bind_data, resolve
from edgekd.models.hf import init_from_teacher
from edgekd.types import Checkpoint, ModelSpec, StudentResult

# training rows on which a student initialised from the teacher ranks the heads and units it keeps
PRUNE_ROWS = 512


def finished(dest: Path, key: str) -> bool:
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
    if data.is_text and isinstance(model, Classifier):  # the zoo takes signals, images and table rows
        raise InputError(f"model {label!r} is a zoo network, but dataset {data.name!r} is sentences (token "
                         "rows); give it a Hugging Face folder: "
                         "model: {folder: all-minilm-l6-v2, kwargs: ...}")
    if getattr(model, "text_inputs", False):
        _check_text_fits(model, data, label)
    try:
        with torch.no_grad():
            out = model(torch.from_numpy(data.x_test[:2]))
    except Exception as e:  # noqa: BLE001 - the user's network: report what it said
        fix = ""
        if "Guard failed" in str(e):  # a torch.export program fixed to the batch size it was traced with
            fix = ("; a torch.export program takes only the shapes it was exported for: export it with a "
                   "dynamic batch: dynamic_shapes=({0: torch.export.Dim('batch')},)")
        raise InputError(f"model {label!r} does not take the data's inputs of shape {list(data.input_shape)} "
                         f"in batches ({type(e).__name__}: {str(e)[:200]}){fix}") from None
    if tuple(out.shape) != (2, data.num_classes):
        raise InputError(f"model {label!r} gives outputs of shape {list(out.shape)[1:]} for dataset "
                         f"{data.name!r}, which has {data.num_classes} classes; set its number of classes")


def _check_text_fits(model: nn.Module, data: Dataset, label: str) -> None:
    """A text network (token ids in) against the data: sentences, no longer than its position table, with
    token ids its embedding has rows for (else the forward pass fails with an index error)."""
    if not data.is_text:
        raise InputError(f"model {label!r} is a text network (token ids in), but dataset {data.name!r} is "
                         "not sentences; give data.name: text (a table of sentences) or movie-reviews")
    config = getattr(model, "config", {})
    length, positions = data.input_shape[-1], config.get("max_positions")
    if positions and length > positions:
        raise InputError(f"data.max_length is {length}: model {label!r} has {positions} positions "
                         f"(max_position_embeddings); set data.max_length: {positions} or less")
    vocab_map = getattr(model, "vocab_map", None)
    rows = len(vocab_map) if vocab_map is not None else config.get("vocab_size")
    top = int(max(data.x_train[:, 0].max(initial=0), data.x_test[:, 0].max(initial=0)))
    if rows and top >= rows:
        raise InputError(f"data.tokenizer gives token id {top}, but model {label!r} reads ids below {rows} "
                         "(its vocab_size); tokenize with the model's own folder (data.tokenizer: FOLDER)")


def model_key(spec: ModelSpec) -> dict:
    """What identifies a network in a training key: the zoo's (arch, width, depth) as before, or the
    whole spec with the weights file's hash."""
    if spec.kind == "zoo":
        return dict(arch=spec.arch, width=spec.width, depth=spec.depth)
    weights = sha256_file(Path(spec.weights)) if spec.weights else None
    if spec.kind == "hf":  # the folder's weights, not its name: a folder saved again is another network
        weights = sha256_file(pretrained_folder(spec.folder, "model.folder") / "model.safetensors")
    key = {**spec.to_dict(), "weights": weights}
    if spec.kind == "program":  # the file, not its path: it holds the graph (and weights, unless given)
        key["program"] = sha256_file(Path(spec.program))
    return dict(model=key)


@contextmanager
def torch_threads(n: int | None):
    """torch's intra-op threads set to `n` inside (None: left as they are)."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


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
                    weight_decay: float, augment: Augment | None = None,
                    world: World = SINGLE, threads: int | None = None) -> tuple[Checkpoint, nn.Module]:
    """Return the teacher: the given checkpoint, a pretrained network (a spec with weights, used as it
    is), or one trained here (reused from `out_dir` when the same recipe already trained it; across the
    ranks of `world`, rank 0 saves it; on `threads` torch threads when given, else on the current count).
    Refuses a teacher whose test accuracy is below `min_accuracy`."""
    if checkpoint is not None:
        ckpt, model, acc = load_teacher(checkpoint, data)
    else:
        pretrained = spec.weights is not None or spec.kind == "program"
        key = json_sha256(dict(**model_key(spec), seed=seed, epochs=0 if pretrained else epochs,
                               batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                               data=data.fingerprint, **({"augment": augment.__dict__} if augment else {}),
                               # recorded when given (the weights depend on it): a recipe without
                               # teacher.threads keeps the keys of teachers trained before it existed
                               **({"threads": threads} if threads is not None and not pretrained else {})))
        dest = Path(out_dir) / "teacher"
        if finished(dest, key):
            ckpt, model, acc = load_teacher(dest, data)
        else:
            model = seeded_model(spec, data, seed)
            if not pretrained:
                with torch_threads(threads):
                    train(model, data.x_train, data.y_train, epochs=epochs, batch_size=batch_size, lr=lr,
                          weight_decay=weight_decay, seed=seed, augment=augment,
                          state_path=Path(out_dir) / f".teacher.{key[:12]}.state.pt", desc="teacher",
                          world=world)
            acc = accuracy(model, data.x_test, data.y_test)
            if world.main:
                save_checkpoint(model, dest, name="teacher", role="teacher", arch=spec.arch or spec.kind,
                                width=spec.width, depth=spec.depth, input_shape=data.input_shape,
                                labels=data.labels, mean=data.mean, std=data.std,
                                data_fingerprint=data.fingerprint, accuracy=acc,
                                provenance={"key": key, "data": data.source, "pretrained": pretrained},
                                spec=spec if spec.kind != "zoo" else None)
                (Path(out_dir) / f".teacher.{key[:12]}.state.pt").unlink(missing_ok=True)
            world.barrier()
            ckpt = read_checkpoint(dest)
            if world.distributed:  # a rank's BN buffers saw its own last batch: every rank takes rank 0's
                ckpt, model, acc = load_teacher(dest, data)
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
                    augment: Augment | None = None, on_epoch=None, world: World = SINGLE) -> StudentResult:
    """Train one student (`method` "kd": against the teacher, on the training set plus a teacher-labelled
    transfer set; "label": cross-entropy on the labelled training set only) and save its checkpoint
    to `out_dir/NAME`. A finished student with the same inputs is reused. With `augment`, the teacher
    runs on each augmented batch instead of reading cached outputs (it must see the student's view).
    `on_epoch(epochs_done, model)` is called after every epoch (edgekd.distill.train). Across the ranks
    of `world`, every rank trains its share of each batch and rank 0 saves."""
    if method not in ("kd", "label"):
        raise InputError(f"unknown distillation method {method!r}; choose 'kd' or 'label'")
    n_transfer = transfer_samples if (method == "kd" and use_transfer) else 0
    spec = bind_data(spec, data.x_train)  # `vocab: task` becomes the training split's tokens
    key = json_sha256(dict(**model_key(spec), **({"augment": augment.__dict__} if augment else {}),
                           method=method, t=temperature, a=alpha,
                           h=hint_weight, c=cosine_weight, n=n_transfer, seed=seed, epochs=epochs,
                           bs=batch_size, lr=lr, wd=weight_decay, teacher=teacher.weights_sha256,
                           data=data.fingerprint,
                           # students trained with a feature loss before its projection started as the
                           # identity at equal widths (edgekd.distill.train.projection) train again
                           **({"proj": "eye"} if hint_weight or cosine_weight else {}),
                           # how a student pruned from the teacher ranks what it keeps
                           **({"prune": f"stack-contribution-{PRUNE_ROWS}"} if _pruned_from_teacher(spec)
                              else {})))
    dest = Path(out_dir) / name
    stats = None
    if finished(dest, key):
        ckpt, model = load_checkpoint(dest)
        acc = accuracy(model, data.x_test, data.y_test)
    else:
        model = seeded_model(spec, data, seed)
        if spec.kind == "hf" and spec.kwargs.get("init") == "teacher":  # DistilBERT: the teacher's layers
            # (pruned heads and units ranked layer by layer on the student's own stack over training rows)
            init_from_teacher(model, teacher_model, spec.kwargs.get("layers"), data.x_train[:PRUNE_ROWS])
        x, y = data.x_train, data.y_train
        logits = feats = None
        if method == "kd":
            xu = transfer_inputs(data, n_transfer, seed=0, cache_dir=cache_dir)
            # labelled rows, then transfer rows (label -1), read in batches from memory maps: nothing
            # is concatenated in memory
            x, y = Chain(x, xu), Chain(y, np.full(len(xu), -1, np.int64))
            if augment is None:
                logits, feats = teacher_outputs(data, teacher, teacher_model, xu, cache_dir, world=world)
        state = Path(out_dir) / f".{name}.{key[:12]}.state.pt"
        stats = train(model, x, y, epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                      seed=seed, teacher_logits=logits, teacher_features=feats, temperature=temperature,
                      alpha=alpha, hint_weight=hint_weight, cosine_weight=cosine_weight, state_path=state,
                      desc=name, workers=workers, augment=augment,
                      teacher=teacher_model if (augment is not None and method == "kd") else None,
                      on_epoch=on_epoch, world=world)
        acc = accuracy(model, data.x_test, data.y_test)
        if world.main:
            _save_student(model, dest, name, spec, data, acc, key, method, teacher, stats)
            state.unlink(missing_ok=True)
        world.barrier()
        ckpt = read_checkpoint(dest)
        if world.distributed:  # as the teacher: rank 0's saved network, measured alike on every rank
            ckpt, model = load_checkpoint(dest)
            acc = accuracy(model, data.x_test, data.y_test)
    # a student trained by an earlier run reports that training's throughput (recorded with it), not 0
    trained = _throughput(stats) if stats else ckpt.provenance.get("train", {})
    return StudentResult(name=name, checkpoint=dest, params=ckpt.params, accuracy=acc,
                         retention=retention(acc, teacher.accuracy), compression=teacher.params / ckpt.params,
                         method=method, train_samples_per_s=trained.get("samples_per_s", 0.0),
                         train_samples_per_s_per_rank=trained.get("samples_per_s_per_rank", 0.0),
                         world_size=trained.get("world_size", world.size), trained_here=stats is not None)


def _throughput(stats) -> dict:
    return {"samples_per_s": stats.samples_per_s, "samples_per_s_per_rank": stats.samples_per_s_per_rank,
            "world_size": stats.world_size}


def _pruned_from_teacher(spec: ModelSpec) -> bool:
    return (spec.kind == "hf" and spec.kwargs.get("init") == "teacher"
            and ("heads" in spec.kwargs or "intermediate" in spec.kwargs))


def _save_student(model, dest: Path, name: str, spec: ModelSpec, data: Dataset, acc: float, key: str,
                  method: str, teacher: Checkpoint, stats=None) -> Checkpoint:
    return save_checkpoint(model, dest, name=name, role="student", arch=spec.arch or spec.kind,
                           width=spec.width, depth=spec.depth, input_shape=data.input_shape,
                           labels=data.labels, mean=data.mean, std=data.std,
                           data_fingerprint=data.fingerprint, accuracy=acc,
                           spec=spec if spec.kind != "zoo" else None,
                           provenance={"key": key, "method": method, "teacher_sha256": teacher.weights_sha256,
                                       "teacher_accuracy": teacher.accuracy, "teacher_params": teacher.params,
                                       "teacher": relative_to(teacher.path, dest), "data": data.source,
                                       **({"train": _throughput(stats)} if stats else {})})


def teacher_outputs(data: Dataset, teacher: Checkpoint, teacher_model: nn.Module, transfer, cache_dir,
                    fill=None, world: World = SINGLE) -> tuple[Chain, Chain]:
    """The teacher's logits and features for the training set then the transfer set (cached; `fill`:
    by jobs of this process, `world`: by every rank)."""
    sha = teacher.weights_sha256
    if world != SINGLE:
        (lt, ft, _), (lu, fu, _) = (ranks_teacher_outputs(world, teacher_model, sha, x, cache_dir)
                                    for x in (data.x_train, transfer))
    else:
        lt, ft, _ = cached_teacher_outputs(teacher_model, sha, data.x_train, cache_dir, fill=fill)
        lu, fu, _ = cached_teacher_outputs(teacher_model, sha, transfer, cache_dir, fill=fill)
    return Chain(lt, lu), Chain(ft, fu)


# --- side by side (edgekd.distill.jobs): a job in another process loads the data and the teacher again
# from their records, and reads or writes the shared cache; nothing large is pickled


def sharded_fill(jobs: Jobs, teacher: Checkpoint):
    """A `fill` for cached_teacher_outputs that computes one shard of the rows per job (byte-identical to
    one process: `shard_bounds`); None with one job (this process already holds the teacher)."""
    if jobs.n == 1:
        return None

    def fill(entry: Path, x, batch_size: int) -> None:
        ref = (x.filename, None) if isinstance(x, np.memmap) and x.filename else (None, np.asarray(x))
        jobs.map(_fill_shard, [(teacher.path, ref, entry, start, stop, batch_size)
                               for start, stop in shard_bounds(len(x), jobs.n, batch_size)])
    return fill


def _fill_shard(teacher_path: Path, ref, entry: Path, start: int, stop: int, batch_size: int) -> None:
    filename, array = ref
    x = np.load(filename, mmap_mode="r") if filename else array
    _, model = load_checkpoint(teacher_path)
    fill_rows(model, x, entry, start, stop, batch_size)


def transfer_job(source: dict, fingerprint: str, n: int, cache_dir: Path | None) -> None:
    """Generate (and cache) the transfer set in a job of its own: it needs no teacher."""
    transfer_inputs(load_checked(source, fingerprint), n, seed=0, cache_dir=cache_dir)


def distill_students(jobs: Jobs, data: Dataset, teacher: Checkpoint, teacher_model: nn.Module, out_dir: Path,
                     students: list[dict], world: World = SINGLE, on_done=None) -> list[StudentResult]:
    """`distill_student(**kwargs)` for each of `students`, side by side in `jobs` (in order here with one,
    each across the ranks of `world`). `on_done(name)`: called in this process as each side-by-side
    student is saved, in the order they finish."""
    if jobs.n == 1:
        return [distill_student(data, teacher, teacher_model, out_dir, world=world, **kw) for kw in students]
    futures = [jobs.submit(student_job, data.source, data.fingerprint, teacher, out_dir, kw)
               for kw in students]
    if on_done is not None:
        for done in as_completed(futures):
            on_done(jobs.result(done).name)
    return [jobs.result(f) for f in futures]


def student_job(source: dict, fingerprint: str, teacher: Checkpoint, out_dir: Path, kwargs: dict
                ) -> StudentResult:
    """`distill_student` in a job of its own, from the data's record and the teacher's checkpoint."""
    _, model = load_checkpoint(teacher.path)
    return distill_student(load_checked(source, fingerprint), teacher, model, out_dir, **kwargs)
