"""One trial of the search, as named steps: draw a candidate -> price it on the simulated budgets (no
training for one that cannot fit) -> distill (pruned early on its agreement with the teacher) ->
export the formats the budgets read -> bench -> score against its rung's budget.

Everything a trial needs to be reproduced and ranked is stored on the Optuna trial as user attributes:
its student and KD settings, seed, files (with their hashes, retention and latencies), and time.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from edgekd.bench.targets import Target
from edgekd.config import SearchConfig
from edgekd.data import Dataset
from edgekd.distill.train import predictions
from edgekd.metrics import top1_agreement
from edgekd.search.budgets import FileResult, best_file, cannot_meet, file_results, overshoot
from edgekd.search.space import Candidate, sample
from edgekd.types import Budget, Checkpoint

PRESCREEN_PRECISIONS = ("fp16", "w8", "int8")
# the sampler's constraint (Optuna: feasible at <= 0): how far the closest file misses the rung's budget,
# as a share; a pruned trial sets none and counts as feasible
CONSTRAINT = "budget_overshoot"
VALIDATION_SEED = 1_000_003  # the pruner's inputs: drawn apart from the training transfer set (seed 0)


@dataclass(frozen=True)
class Trainer:
    """What every trial of one search shares: the data, the teacher, the settings it trains with."""

    data: Dataset
    teacher: Checkpoint
    teacher_model: torch.nn.Module
    out: Path  # trial folders go under out/trials
    seed: int
    transfer_samples: int
    use_transfer: bool
    cache_dir: Path | None
    batch_size: int
    weight_decay: float
    hint_weight: float  # the recipe's distill.hint_weight / cosine_weight, as `edgekd run` would use them
    cosine_weight: float
    space: SearchConfig  # the recipe's search section: the ranges candidates are drawn from
    export: dict  # export_checkpoint's settings (the recipe's export section)
    quants: tuple[str, ...]  # the search's export modes that the budgets' formats have
    targets: tuple[Target, ...]  # profiles of the simulated budgets
    budgets: tuple[Budget, ...]
    max_size_bytes: int | None
    val_x: np.ndarray  # inputs the pruner reads the student's agreement with the teacher on
    val_teacher_top1: np.ndarray


def run_trial(trial, t: Trainer, rung: Budget) -> float:
    """The objective of `rung`'s study: the best retention through a file meeting the rung's budget; the
    trial's constraint says how far the closest file missed it (0: met)."""
    import optuna

    t0 = time.perf_counter()
    cand = sample(trial, t.space)
    trial.set_user_attr("student", cand.to_dict())
    trial.set_user_attr("seed", t.seed)
    trial.set_user_attr("worker_pid", os.getpid())
    predicted, fixed = prescreen(cand, t)
    trial.set_user_attr("predicted_ms", predicted)
    trial.set_user_attr("predicted_fixed_ms", fixed)
    if cannot_meet(rung, predicted, fixed):
        trial.set_constraint(CONSTRAINT, predicted[rung.key] / rung.latency_ms - 1)
        trial.set_user_attr("outcome", "over budget before training (simulated)")
        trial.set_user_attr("files", [])
        trial.set_user_attr("seconds", round(time.perf_counter() - t0, 3))
        return 0.0

    reported = set()

    def report(epoch: int, model) -> None:
        # trials of different lengths are compared at the same share of their schedule (a quarter, half,
        # three quarters, the end before export: the step is the percentage): under OneCycle a 24-epoch run
        # is still warming up at epoch 3, when a 4-epoch run is nearly done
        step = 25 * (4 * epoch // cand.epochs)
        if step not in (25, 50, 75, 100) or step in reported:
            return
        reported.add(step)
        trial.report(top1_agreement(predictions(model, t.val_x), t.val_teacher_top1), step)
        if trial.should_prune():
            trial.set_user_attr("seconds", round(time.perf_counter() - t0, 3))
            trial.set_user_attr("outcome", f"pruned after epoch {epoch} of {cand.epochs}")
            raise optuna.TrialPruned()

    dest = t.out / "trials" / f"{rung.slug}-{trial.number:03d}"
    student = _distill(cand, t, dest, report)
    files = _export_and_bench(student, t, dest)
    best = best_file(files, rung, t.max_size_bytes)
    trial.set_user_attr("params", student.params)
    trial.set_user_attr("student_accuracy", student.accuracy)
    trial.set_user_attr("files", [f.to_dict() for f in files])
    trial.set_constraint(CONSTRAINT, overshoot(files, rung, t.max_size_bytes))
    trial.set_user_attr("outcome", f"meets {rung.key} with {best.artifact}" if best else
                        f"no file meets {rung.key}")
    trial.set_user_attr("seconds", round(time.perf_counter() - t0, 3))
    retained = [f.retention for f in files if f.retention is not None]
    return best.retention if best else (max(retained) if retained else 0.0)


def prescreen(cand: Candidate, t: Trainer) -> tuple[dict[str, float], dict[str, float]]:
    """(simulated latency in ms of the untrained candidate at its fastest precision, the part of it its
    profile charges per inference), per simulated budget: known before a second of training."""
    from edgekd.bench.simulator import simulate
    from edgekd.bench.torchgraph import export_ops
    from edgekd.models import resolve

    targets = {x.name: x for x in t.targets}
    sims = [b for b in t.budgets if not b.measured]
    if not sims:
        return {}, {}
    model = resolve(cand.spec, t.data.input_shape, t.data.num_classes).eval()
    example = (torch.from_numpy(t.data.x_test[:1]),)
    graphs = [export_ops(model, example, p) for p in PRESCREEN_PRECISIONS]
    latency = {b.key: round(min(simulate(g, targets[b.where]).latency_ms for g in graphs), 6) for b in sims}
    return latency, {b.key: round(targets[b.where].invoke_overhead_us / 1000, 6) for b in sims}


def _distill(cand: Candidate, t: Trainer, dest: Path, on_epoch):
    from edgekd.distill import distill_student

    return distill_student(
        t.data, t.teacher, t.teacher_model, dest, name="student", spec=cand.spec, method="kd",
        temperature=cand.temperature, alpha=cand.alpha, hint_weight=t.hint_weight,
        cosine_weight=t.cosine_weight, transfer_samples=t.transfer_samples, use_transfer=t.use_transfer,
        cache_dir=t.cache_dir, seed=t.seed, epochs=cand.epochs, batch_size=t.batch_size, lr=cand.lr,
        weight_decay=t.weight_decay, on_epoch=on_epoch)


def _export_and_bench(student, t: Trainer, dest: Path) -> list[FileResult]:
    """Export the formats the budgets read (files that miss parity are dropped, as in `edgekd run`),
    then bench them here and on the simulated targets."""
    from edgekd.artifacts import load_artifacts
    from edgekd.bench.stage import bench_artifacts
    from edgekd.export import ExportMisses, export_checkpoint
    from edgekd.types import Measurement

    formats = sorted({b.format for b in t.budgets})
    try:
        export_checkpoint(student.checkpoint, dest / "export", **{**t.export, "formats": formats,
                                                                  "quants": list(t.quants)},
                          data=t.data, threads=1)
    except ExportMisses:
        pass  # the kept files are listed in artifacts.json; a trial ranks what it could ship
    manifest = dest / "export" / "artifacts.json"
    hashes = {a["path"]: a["sha256"] for a in load_artifacts(manifest)["artifacts"]}
    bench = bench_artifacts(manifest, dest / "bench", targets=list(t.targets), data=t.data, threads=1,
                            include_source=False)
    return file_results([Measurement.from_dict(r) for r in bench["rows"]], hashes)
