"""The training loop: one function, top to bottom (torchtune's KD recipe, nanoGPT's train.py).

set up -> for each epoch, for each batch: teacher logits (cached, or computed) -> loss -> backward ->
step -> log -> save a resumable state each epoch.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from edgekd.distill.batches import Augment, Rows, batches
from edgekd.distill.cache import run_teacher
from edgekd.distill.distributed import SINGLE, World
from edgekd.distill.losses import ce_loss, cosine_loss, hint_loss, kd_loss
from edgekd.errors import InputError, TrainingError
from edgekd.fileio import atomic_path
from edgekd.models import eval_mode


@dataclass(frozen=True)
class TrainStats:
    epochs: int
    steps: int
    final_loss: float
    samples_per_s: float  # training throughput of this run, all ranks together (0 when resumed past the end)
    resumed_from_epoch: int
    samples_per_s_per_rank: float = 0.0
    world_size: int = 1


class _Student(nn.Module):
    """What one training step runs (and DDP wraps): the student's logits and, for the feature losses,
    its penultimate features; `proj` (the hint/cosine projection) trains with it."""

    def __init__(self, model: nn.Module, proj: nn.Module | None, features: bool):
        super().__init__()
        self.model, self.proj, self.features = model, proj, features

    def forward(self, x):  # (B, ...) -> logits (B, C), features (B, D) or None
        if not self.features:
            return self.model(x), None
        f = self.model.features(x)
        return self.model.head(f), f


def projection(student_dim: int, teacher_dim: int) -> nn.Linear:
    """The learned map from the student's features to the teacher's (FitNets' regressor, the cosine
    loss's projection). At equal widths it starts as the identity: DistilBERT compares the two directly,
    and a random start would first pull a student initialised from the teacher's layers away from the
    features it already shares with it."""
    proj = nn.Linear(student_dim, teacher_dim)
    if student_dim == teacher_dim:
        with torch.no_grad():
            proj.weight.copy_(torch.eye(student_dim))
            proj.bias.zero_()
    return proj


def train(model: nn.Module, x: np.ndarray, y: np.ndarray, **kwargs) -> TrainStats:
    """`_train`, with one rule about the resume state: an interrupt (Ctrl-C, SIGTERM) keeps it so the next
    run continues; any other failure (a NaN loss, a full disk) deletes it, since resuming would only
    replay the failure. Across ranks, a failure other than the training's own (a killed peer breaks
    the collectives, the launcher stops the rest) keeps it too: the state is not to blame."""
    try:
        return _train(model, x, y, **kwargs)
    except Exception as e:
        peer = kwargs.get("world", SINGLE).distributed and not isinstance(e, TrainingError)
        if kwargs.get("state_path") is not None and not peer:
            Path(kwargs["state_path"]).unlink(missing_ok=True)
        raise
    finally:  # back on the CPU however training ended (a failed GPU run leaves nothing on the device)
        model.cpu()
        if kwargs.get("teacher") is not None:
            kwargs["teacher"].cpu()


def _train(model: nn.Module, x: np.ndarray, y: np.ndarray, *, epochs: int, batch_size: int, lr: float,
          weight_decay: float, seed: int, teacher_logits: np.ndarray | None = None,
          teacher_features: np.ndarray | None = None, teacher: nn.Module | None = None,
          temperature: float = 4.0, alpha: float = 0.1, hint_weight: float = 0.0, cosine_weight: float = 0.0,
          state_path: Path | None = None, desc: str = "train", workers: int = 0,
          augment: Augment | None = None, on_epoch: Callable[[int, nn.Module], None] | None = None,
          world: World = SINGLE) -> TrainStats:
    """Train `model` on inputs x (N, ...) and labels y (N,) (-1 = unlabeled), read a batch at a time
    (x, y and the teacher outputs may be memory maps or a `Chain` of them: nothing is copied whole).

    With `teacher_logits` (N, C) (or a `teacher` to run on every batch) the loss is Hinton KD; without,
    plain CE on the labelled rows. `hint_weight`/`cosine_weight` add FitNets/DistilBERT feature losses
    against `teacher_features` (N, D) through a learned linear projection. `augment` transforms each
    training batch; the teacher then runs on the same view (a consistent teacher: Beyer et al. 2022),
    so it needs `teacher`, not cached logits. `on_epoch(epochs_done, model)` runs after each epoch's state
    is saved, with the model in eval mode (the search's pruner reads it; an exception it raises stops
    training and discards the resume state, as any failure does).

    `world` (edgekd.distill.distributed): this rank's share of every batch, DDP across ranks, on its
    device (bf16 autocast on GPUs that have it); rank 0 alone saves the resume state. The model is
    back on the CPU, in eval mode, when training ends.
    """
    # --- set up
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    if augment is not None and teacher_logits is not None:
        raise ValueError("augmentation needs the teacher to see the augmented view: pass teacher, not logits")
    rows = Rows(x, y, teacher_logits, teacher_features)
    aug_gen = torch.Generator().manual_seed(seed + 1)
    kd = teacher_logits is not None or teacher is not None
    tf = teacher_features
    use_feats = hint_weight > 0 or cosine_weight > 0
    if use_feats and tf is None and teacher is None:
        raise InputError("hint_weight/cosine_weight need teacher features (distill with a teacher)")
    if use_feats and ((tf is not None and tf.shape[1] == 0) or not hasattr(model, "feature_dim")):
        raise InputError("distill.hint_weight/cosine_weight need teacher and student networks with "
                         "features() and head (the zoo's): set them to 0 for your own networks")
    proj = projection(model.feature_dim, tf.shape[1] if tf is not None else teacher.feature_dim) \
        if use_feats else None
    dev = torch.device(world.device)
    student = _Student(model, proj, use_feats).to(dev)  # before the optimizer: its state follows the params
    params = list(model.parameters()) + (list(proj.parameters()) if proj is not None else [])
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(rows) / batch_size)  # global batches: the same at any world size
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch)
    start_epoch = 0
    if state_path is not None and Path(state_path).is_file():
        start_epoch = _load_state(Path(state_path), model, proj, opt, sched, gen, aug_gen)
    net = world.wrap(student)
    if teacher is not None:
        eval_mode(teacher).to(dev)
    # bf16 autocast where the GPU has it; CPU training stays fp32. A host sync (loss.item(), the NaN
    # check) every step costs nothing on a CPU but stalls a GPU's queue: there it happens every 50 steps.
    bf16 = dev.type == "cuda" and torch.cuda.is_bf16_supported()
    sync_every = 50 if dev.type == "cuda" else 1
    loader = batches(rows, batch_size, gen, workers, rank=world.rank, world=world.size)

    # --- loop
    model.train()
    step, loss_value, t0, seen = start_epoch * steps_per_epoch, float("nan"), time.perf_counter(), 0
    bar = tqdm(total=(epochs - start_epoch) * steps_per_epoch, desc=desc, leave=False,
               disable=None if world.main else True)
    loss = None
    for epoch in range(start_epoch, epochs):
        for b in loader:
            b = {k: v.to(dev, non_blocking=True) for k, v in b.items()}
            xb, yb = b["x"], b["y"]
            if augment is not None:
                xb = augment(xb, aug_gen)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
                s_logits, s_feat = net(xb)
                if kd:
                    if "logits" in b:
                        t_logits, t_feat = b["logits"], b.get("features")
                    else:
                        with torch.no_grad():
                            t_logits, t_feat = run_teacher(teacher, xb)
                    loss = kd_loss(s_logits.float(), t_logits.float(), yb, temperature=temperature,
                                   alpha=alpha)
                    if hint_weight > 0:
                        loss = loss + hint_weight * hint_loss(s_feat, t_feat, proj)
                    if cosine_weight > 0:
                        loss = loss + cosine_weight * cosine_loss(proj(s_feat), t_feat)
                else:
                    loss = ce_loss(s_logits.float(), yb)
            step, seen = step + 1, seen + len(yb)
            if step % sync_every == 0 and not torch.isfinite(loss):
                bar.close()
                raise _diverged(desc, loss, f"at epoch {epoch + 1}, step {step}", lr)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
            if step % 50 == 0:
                loss_value = loss.item()
                rate = seen * world.size / (time.perf_counter() - t0)
                bar.set_postfix(epoch=epoch + 1, loss=f"{loss_value:.4f}", samples_s=f"{rate:.0f}")
        if loss is not None:
            if not torch.isfinite(loss):  # the last steps of an epoch, where a GPU run did not look
                bar.close()
                raise _diverged(desc, loss, f"in epoch {epoch + 1}", lr)
            loss_value = loss.item()
        if state_path is not None and world.main:
            _save_state(Path(state_path), model, proj, opt, sched, gen, epoch + 1, aug_gen)
        if on_epoch is not None:
            model.eval()
            on_epoch(epoch + 1, model)
            model.train()
    bar.close()
    elapsed = time.perf_counter() - t0
    model.eval()  # (`train` puts it and the teacher back on the CPU)
    per_rank = seen / elapsed if seen else 0.0
    return TrainStats(epochs, step, loss_value, world.sum(per_rank), start_epoch, per_rank, world.size)


def _diverged(desc: str, loss: torch.Tensor, where: str, lr: float) -> TrainingError:
    return TrainingError(f"{desc}: loss became {loss.item()} {where}; lower the learning rate (now {lr}) or "
                         "check the inputs for NaN/inf")


@torch.no_grad()
def predictions(model: nn.Module, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Top-1 class ids (N,) of `model` on inputs x (N, ...), in eval mode, a batch at a time."""
    eval_mode(model)
    return np.concatenate([model(torch.from_numpy(np.asarray(x[i:i + batch_size]))).argmax(-1).numpy()
                           for i in range(0, len(x), batch_size)] or [np.zeros(0, np.int64)])


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray, batch_size: int = 1024) -> float:
    return float((predictions(model, x, batch_size) == np.asarray(y)).mean()) if len(x) else 0.0


def _save_state(path: Path, model, proj, opt, sched, gen, epoch: int, aug_gen) -> None:
    state = {"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
             "gen": gen.get_state(), "epoch": epoch, "rng": torch.get_rng_state(),
             "aug_gen": aug_gen.get_state()}
    if proj is not None:
        state["proj"] = proj.state_dict()
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _load_state(path: Path, model, proj, opt, sched, gen, aug_gen) -> int:
    try:
        # tensors and plain containers only (no pickle code), onto the CPU whatever device saved them
        state = torch.load(path, weights_only=True, map_location="cpu")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        gen.set_state(state["gen"])
        if "aug_gen" in state:
            aug_gen.set_state(state["aug_gen"])
        torch.set_rng_state(state["rng"])
        if proj is not None:
            proj.load_state_dict(state["proj"])
        return int(state["epoch"])
    except Exception as e:  # noqa: BLE001 - any damage means the state cannot be trusted
        raise InputError(f"{path}: corrupt training state ({type(e).__name__}: {e}); "
                         "delete it to start this model's training over") from None
