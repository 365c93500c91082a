"""`edgekd search`: the teacher once, then trials on K workers over one storage, then the ladder.

    check budgets and storage -> teacher and caches (once, shared by every trial) -> workers -> ladder

The search reads the recipe as `edgekd.pipeline.run` does (it is an orchestration beside it, and takes the
pipeline's data and teacher steps); each trial calls the distill, export and bench stages directly.
"""

from __future__ import annotations

import multiprocessing
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from edgekd.config import DataConfig, Recipe
from edgekd.data import RECORDED_WHEN_SET, Dataset
from edgekd.errors import CheckFailed, InputError
from edgekd.fileio import json_sha256, read_json, sha256_file, write_json
from edgekd.search.study import (
    HEARTBEAT_S,
    StudyKey,
    check_studies,
    describe_url,
    masked_url,
    open_storage,
    open_studies,
    work,
)
from edgekd.types import Budget

SEARCH_FILE = "search.json"


def study_key(recipe: Recipe, data: Dataset, max_size_bytes: int | None) -> StudyKey:
    """What makes two searches' trials comparable: the recipe's inputs to a trial (not its students, which
    the search replaces, nor bench or gate), with files named by their contents, not their paths, so
    machines that keep the data and teacher in other folders share one study."""
    dump = recipe.model_dump(mode="json")
    teacher = dict(dump["teacher"])
    if recipe.teacher.checkpoint is not None:
        from edgekd.checkpoint import read_checkpoint

        teacher["checkpoint"] = read_checkpoint(recipe.teacher.checkpoint).weights_sha256
    if recipe.teacher.model is not None:
        m = recipe.teacher.model
        teacher["model"] = {**teacher["model"], "weights": m.weights and sha256_file(m.weights),
                            "program": m.program and sha256_file(m.program)}
    # data options added later (RECORDED_WHEN_SET) at their defaults stay out: studies saved before keep
    # their key
    data_section = {k: v for k, v in dump["data"].items()
                    if not (k in RECORDED_WHEN_SET and v == DataConfig.model_fields[k].default)}
    inputs = {"seed": dump["seed"], "data": {**data_section, "path": None},
              "data_fingerprint": data.fingerprint, "teacher": teacher,
              **{k: dump[k] for k in ("distill", "export", "search")}}
    return StudyKey(json_sha256(inputs), max_size_bytes)


def check_search(recipe: Recipe, budgets: list[Budget], max_size_bytes: int | None, workers: int,
                 heartbeat_s: int) -> tuple:
    """Everything checkable before any output: the search's export modes exist for every budget's format,
    the families exist, the worker count fits the machine. Returns the export modes a trial uses."""
    from edgekd.distill.jobs import cpu_count
    from edgekd.export.common import EXPORTERS
    from edgekd.export.stage import plan_exports  # noqa: F401 - registers the exporters
    from edgekd.models.zoo import MODELS

    s = recipe.search
    for a in s.archs:
        if a not in MODELS.names():
            raise InputError(f"search.archs: unknown zoo family {a!r}; known: {', '.join(MODELS.names())}")
    formats = sorted({b.format for b in budgets})
    if s.quants is None:
        return tuple(dict.fromkeys(q for f in formats for q in EXPORTERS.get(f).default_quants))
    for f in formats:
        if not any(q in EXPORTERS.get(f).quants for q in s.quants):
            raise InputError(f"search.quants {s.quants} has no mode of {f} (a budget reads {f} files); "
                             f"add one of: {', '.join(EXPORTERS.get(f).quants)}")
    if recipe.data.augment is not None:
        raise InputError("data.augment: the search trains students from cached teacher outputs; remove "
                         "data.augment for the search (teacher.augment is fine)")
    if max_size_bytes is not None and max_size_bytes <= 0:
        raise InputError("--max-size-bytes must be above 0")
    if heartbeat_s < 1:
        raise InputError("--heartbeat-s must be at least 1 (a trial silent for twice that is failed)")
    cpus = cpu_count()
    if not 1 <= workers <= cpus:
        raise InputError(f"--workers {workers}: this machine has {cpus} CPUs; give 1 to {cpus} (more "
                         "workers than CPUs only slows every trial)")
    return tuple(q for q in s.quants if any(q in EXPORTERS.get(f).quants for f in formats))


def search(recipe: Recipe, out: Path, budgets: list[Budget], *, trials: int, workers: int = 1,
           storage_url: str | None = None, max_size_bytes: int | None = None, heartbeat_s: int = HEARTBEAT_S,
           progress=print) -> dict:
    """Run (or resume) the search until its studies hold `trials` finished trials; write the ladder."""
    import optuna

    from edgekd import pipeline
    from edgekd.search.ladder import write_ladder

    if trials < 1:
        raise InputError("--trials must be at least 1")
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # edgekd prints one line per trial itself
    out = Path(out)
    quants = check_search(recipe, budgets, max_size_bytes, workers, heartbeat_s)
    data = pipeline.load_data(recipe)
    if data.is_text:
        raise InputError(f"dataset {data.name!r} is text: the search samples zoo networks, which take "
                         "signals and images; distil text with `edgekd run` and "
                         "model: {folder: ...} students")
    key = study_key(recipe, data, max_size_bytes)
    check_folder(out, recipe.name, key)
    if storage_url is None:
        out.mkdir(parents=True, exist_ok=True)  # the default storage lives in the run folder
    url = storage_url or f"sqlite:///{(out / 'study.db').resolve()}"
    storage = open_storage(url, heartbeat_s)
    check_studies(storage, recipe.name, budgets, key)  # refuses another recipe's studies, before the teacher
    trainer = make_trainer(recipe, data, out, budgets, quants, max_size_bytes)  # the teacher, once
    # created only now: a teacher that misses its floor (exit 1) leaves no study stamped with this recipe
    open_studies(storage, recipe.name, budgets, key, space=recipe.search, seed=recipe.seed)
    write_json(out / SEARCH_FILE, {
        "recipe": recipe.record(), "recipe_sha256": key.recipe_sha256,
        "storage": masked_url(storage_url), "budgets": [b.__dict__ for b in budgets],
        "max_size_bytes": max_size_bytes, "trials": trials, "quants": list(quants),
        # what a rung winner's retention interval is computed on (edgekd.search.ladder.rungs)
        "test_samples": len(data.y_test), "teacher_accuracy": trainer.teacher.accuracy})
    job = _Job(recipe, out, tuple(budgets), quants, max_size_bytes, url, heartbeat_s, trials, key)
    progress(f"search: {trials} trials over {len(budgets)} budget(s) on {workers} worker(s); "
             f"storage {describe_url(url)}")
    if workers == 1:
        job.run(0, trainer, progress)
    else:
        _spawn(job, workers, progress)
    return write_ladder(out, url)


@dataclass(frozen=True)
class _Job:
    """What a worker process needs to rebuild the search (picklable for `spawn`)."""

    recipe: Recipe
    out: Path
    budgets: tuple[Budget, ...]
    quants: tuple[str, ...]
    max_size_bytes: int | None
    url: str
    heartbeat_s: int
    trials: int
    key: StudyKey  # computed once by the main process (it reads the teacher and hashes its files)

    def run(self, worker: int, trainer=None, progress=print) -> int:
        from edgekd import pipeline
        from edgekd.search.trial import run_trial

        torch.set_num_threads(self.recipe.threads)
        budgets = list(self.budgets)
        data = trainer.data if trainer is not None else pipeline.load_data(self.recipe)
        trainer = trainer or make_trainer(self.recipe, data, self.out, budgets, self.quants,
                                          self.max_size_bytes)
        studies = open_studies(open_storage(self.url, self.heartbeat_s), self.recipe.name, budgets,
                               self.key, space=self.recipe.search,
                               seed=self.recipe.seed, worker=worker)
        return work(studies, budgets, lambda trial, rung: run_trial(trial, trainer, rung), self.trials,
                    self.heartbeat_s, progress=progress)


def _worker_main(job: _Job, worker: int, parent: int | None = None) -> None:
    import optuna

    from edgekd.console import quiet_backends
    from edgekd.distill.jobs import exit_with

    if parent is not None:  # a killed search must not leave workers writing into the folder it held
        exit_with(parent)
    quiet_backends()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    job.run(worker, progress=lambda m: print(f"worker {worker}: {m}", flush=True))


def _spawn(job: _Job, workers: int, progress) -> None:
    """K worker processes on the same storage (spawned: no forked torch state). A worker that dies does not
    stop the others: its trial is failed by heartbeat and the rest of the study goes on."""
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker_main, args=(job, w, os.getpid()), name=f"edgekd-search-{w}")
             for w in range(workers)]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join()
    except BaseException:
        for p in procs:
            p.terminate()
        for p in procs:
            p.join()
        raise
    dead = [(p.name, p.exitcode) for p in procs if p.exitcode != 0]
    for name, code in dead:
        why = f"killed by signal {-code}" if code < 0 else f"exited with {code}"
        progress(f"search: {name} {why}; its running trial is marked failed once its heartbeat is stale, "
                 "and the other workers went on")
    if len(dead) == workers:
        raise CheckFailed("every search worker stopped early (see their messages above); the study keeps "
                          "the trials that finished: run the same command again to resume")


def make_trainer(recipe: Recipe, data: Dataset, out: Path, budgets: list[Budget], quants: tuple,
                 max_size_bytes: int | None):
    """The teacher (trained once in `out`, or the recipe's checkpoint), the transfer set and its cached
    teacher outputs, and the pruner's validation inputs: what every trial shares."""
    from edgekd import pipeline
    from edgekd.bench.targets import all_targets
    from edgekd.distill.cache import cached_teacher_outputs
    from edgekd.distill.stage import transfer_inputs
    from edgekd.distill.train import predictions
    from edgekd.search.trial import VALIDATION_SEED, Trainer

    torch.set_num_threads(recipe.threads)
    teacher, teacher_model = pipeline.teacher_stage(recipe, data, out)
    s, d = recipe.search, recipe.distill
    n_transfer = recipe.data.transfer_samples if s.transfer_samples is None else s.transfer_samples
    n_transfer = n_transfer if d.use_transfer else 0
    xu = transfer_inputs(data, n_transfer, seed=0, cache_dir=recipe.cache_dir)
    for x in (data.x_train, xu):  # filled once here, read by every trial and worker
        cached_teacher_outputs(teacher_model, teacher.weights_sha256, x, recipe.cache_dir)
    # a writable copy in memory (the cached array is a read-only map): read by the pruner every epoch
    val_x = np.array(transfer_inputs(data, s.validation_samples, VALIDATION_SEED, recipe.cache_dir))
    targets = all_targets()
    return Trainer(
        data=data, teacher=teacher, teacher_model=teacher_model, out=Path(out), seed=recipe.seed,
        transfer_samples=n_transfer, use_transfer=d.use_transfer, cache_dir=recipe.cache_dir,
        batch_size=d.train.batch_size, weight_decay=d.train.weight_decay, hint_weight=d.hint_weight,
        cosine_weight=d.cosine_weight, space=s, export=recipe.export.model_dump(), quants=quants,
        targets=tuple(targets[b.where] for b in budgets if not b.measured), budgets=tuple(budgets),
        max_size_bytes=max_size_bytes, val_x=val_x, val_teacher_top1=predictions(teacher_model, val_x))


def check_folder(out: Path, recipe_name: str, key: StudyKey) -> None:
    """A search folder holds one recipe's search: its teacher, trials and ladder. Another version of the
    recipe there (a new budget makes new studies, which the storage check alone lets through) would train
    the teacher again over the one the earlier trials learned from, and leave their rung recipes pointing
    at a teacher they never had."""
    path = Path(out) / SEARCH_FILE
    if not path.is_file():
        return
    before = read_json(path, "search record", f"remove {out} or give another --out")
    recorded = (before.get("recipe", {}).get("name"), before.get("recipe_sha256"))
    if recorded != (recipe_name, key.recipe_sha256):
        raise InputError(f"{path}: {out} holds the search of another recipe (or another version of "
                         f"{recipe_name!r}: its data, teacher, distill, export or search settings differ); "
                         "give another --out (a search folder keeps one recipe's teacher and trials)")
    if before.get("max_size_bytes") != key.max_size_bytes:
        raise InputError(f"{path}: {out} holds a search with --max-size-bytes "
                         f"{before.get('max_size_bytes')}; give the same limit or another --out")


def read_search(out: Path) -> dict:
    """The search.json a search wrote in `out` (what `--report` and `ladder` redraw from)."""
    path = Path(out) / SEARCH_FILE
    return read_json(path, "search record", f"run `edgekd search RECIPE --out {out}` first")
