"""The whole product, stage by stage. Only this module and the CLI read recipe objects.

    distill (teacher first) -> export -> bench -> gate -> report -> bundles
"""

from __future__ import annotations

import time
from contextlib import contextmanager, nullcontext
from functools import partial
from pathlib import Path

import torch

from edgekd.config import DataConfig, ModelFile, Recipe
from edgekd.data import Dataset, load_checked, load_dataset
from edgekd.distill import prepare_teacher
from edgekd.distill.batches import Augment
from edgekd.distill.distributed import SINGLE, World
from edgekd.errors import InputError
from edgekd.fileio import json_sha256, read_json, relative_to, resolve_in, sha256_file, write_json
from edgekd.models import bind_data, count_params, resolve
from edgekd.models.budget import fit_width
from edgekd.runfolder import STATE_DIR, RunRecord, write_record
from edgekd.types import Checkpoint, CompressSpec, ModelSpec


def load_data(recipe: Recipe) -> Dataset:
    data = data_from(recipe.data)
    if data.notes.get("truncated"):  # counted, reported, and kept in metrics.json (data_notes)
        import sys

        print(f"data: {data.notes['truncated']} of {data.notes['sentences']} sentences are longer than "
              f"{data.notes['max_length']} tokens and were cut to that length (data.max_length)",
              file=sys.stderr)
    return data


def data_from(d: DataConfig) -> Dataset:
    # each source takes the options it names (edgekd.data.source_options)
    return load_dataset(d.name, d.path, d.seed, image_size=d.image_size, channels=d.channels,
                        label_column=d.label_column, normalization=d.normalization, tokenizer=d.tokenizer,
                        max_length=d.max_length, text_column=d.text_column, labels=d.labels,
                        transfer_path=None if d.transfer_path is None else str(d.transfer_path),
                        transfer_copies=d.transfer_copies)


def _check_tokenizers(recipe: Recipe) -> None:
    """A Hugging Face network reads the token ids of its own folder's vocabulary: the data must be tokenized
    with that tokenizer, or every id indexes another word's embedding (silently: it still trains)."""
    from edgekd.data.tokens import pretrained_folder, same_tokenizer

    mine = pretrained_folder(recipe.data.tokenizer, "data.tokenizer")
    nets = [("teacher", recipe.teacher.model), *((f"students.{s.name}", s.model) for s in recipe.students)]
    for where, m in nets:
        if m is None or m.folder is None:
            continue
        folder = pretrained_folder(m.folder, f"{where}.model.folder")
        if (folder / "tokenizer.json").is_file() and not same_tokenizer(folder, mine):
            raise InputError(f"{where}.model.folder {m.folder}: its tokenizer.json differs from "
                             f"data.tokenizer ({recipe.data.tokenizer}), and the network reads its own "
                             f"vocabulary's ids; set data.tokenizer: {m.folder}")


def validate(recipe: Recipe, data: Dataset) -> list[ModelSpec]:
    """Everything that can be checked before any output is written: the teacher, every network's
    spec against the data, students' budgets. Returns each student's network (a budget resolved)."""
    from edgekd.distill.stage import check_teacher_fits

    if data.is_text:
        _check_tokenizers(recipe)
    if data.is_text and recipe.data.transfer_samples and recipe.distill.use_transfer:
        data.transfer_set(1, 0)  # refused (exit 2) when the data has no unlabelled sentences to draw from
    if recipe.teacher.checkpoint is not None:
        from edgekd.checkpoint import read_checkpoint

        teacher = read_checkpoint(recipe.teacher.checkpoint)
        check_teacher_fits(teacher, data)
        teacher_params = teacher.params
    else:
        model = _checked(recipe.teacher.spec(), data, "teacher")
        teacher_params = count_params(model)
    specs = []
    for s in recipe.students:
        where = f"students.{s.name}"
        spec = s.spec()
        if s.budget is not None:
            kind, value = s.budget
            target = teacher_params / value if kind == "compression" else value
            width, depth, _ = fit_width(s.arch, data.input_shape, data.num_classes, target,
                                        list(s.depths) if s.depths else [s.depth], f"{where}.{kind}")
            spec = ModelSpec.zoo(s.arch, width, depth)
        spec = bind_data(spec, data.x_train)  # a text student's `vocab: task`: the training split's tokens
        model = _checked(spec, data, where)
        _check_activation_training(recipe, data, model, where)
        specs.append(spec)
    return specs


def _check_activation_training(recipe: Recipe, data: Dataset, model, where: str) -> None:
    """A student the compress step is to train int8 activations for must fold and export (its graph is
    built here, untrained, so a refusal comes before any training)."""
    from edgekd.models import qat

    modes = [m for m in recipe.compress.modes if m in qat.MODES]
    if modes and data.is_text:
        raise qat.text_refused(modes[0])
    if modes:  # one graph serves both modes
        try:
            qat.prepare(model, data.x_train[:2])
        except InputError as e:
            raise InputError(f"compress.{qat.FORMATS[modes[0]]}: {modes[0]!r} for {where}: {e}") from None


def _checked(spec: ModelSpec, data: Dataset, where: str):
    from edgekd.distill.stage import check_fits_data

    try:
        model = resolve(spec, data.input_shape, data.num_classes, where)
        check_fits_data(model, data, spec.label)
    except InputError as e:
        raise InputError(f"{where}: {e}") from None
    return model


def import_model(model_file: ModelFile, dest: Path) -> tuple[Path, Dataset]:
    """A model of yours as an edgekd checkpoint in `dest` (its spec, weights, labels, normalisation and
    data recorded), measured on the data's test split: what export and bench take."""
    from edgekd.checkpoint import save_checkpoint
    from edgekd.distill.train import accuracy

    data = data_from(model_file.data)
    spec = model_file.model.spec()
    model = _checked(spec, data, "model")
    save_checkpoint(model, dest, name=model_file.name, role="teacher", arch=spec.kind, width=1.0, depth=None,
                    input_shape=data.input_shape, labels=data.labels, mean=data.mean, std=data.std,
                    data_fingerprint=data.fingerprint, accuracy=accuracy(model, data.x_test, data.y_test),
                    provenance={"data": data.source, "imported": _imported(spec)}, spec=spec)
    return Path(dest), data


def _imported(spec) -> dict:
    """The spec a model was imported with, and the hashes of the files it read (its path alone does not say
    which weights those were)."""
    files = {"weights_sha256": spec.weights, "program_sha256": spec.program}
    return {**spec.to_dict(), **{k: sha256_file(Path(v)) for k, v in files.items() if v}}


def teacher_stage(recipe: Recipe, data: Dataset, out: Path, world: World = SINGLE):
    t = recipe.teacher
    augment = _augment(t.augment, data, "teacher.augment")
    return prepare_teacher(data, out, spec=t.spec(), checkpoint=t.checkpoint, min_accuracy=t.min_accuracy,
                           seed=recipe.seed, augment=augment, world=world,
                           threads=teacher_threads(recipe, world), **t.train.model_dump())


def teacher_threads(recipe: Recipe, world: World = SINGLE) -> int | None:
    """`teacher.threads` in one CPU process; None (the recipe's `threads`, as every other network) when it
    is not set, or in a rank of a DDP run or on a GPU (the ranks already share the machine)."""
    return recipe.teacher.threads if world == SINGLE else None


def _augment(cfg, data: Dataset, field: str) -> Augment | None:
    """The loader's crop/flip for a config, refused (exit 2) on data that are not images."""
    augment = Augment(cfg.crop, cfg.flip) if cfg is not None and (cfg.crop or cfg.flip) else None
    if augment is not None and len(data.input_shape) != 3:
        raise InputError(f"{field} crops and flips images; dataset {data.name!r} has inputs of shape "
                         f"{list(data.input_shape)}: remove {field}")
    return augment


def distill(recipe: Recipe, out: Path, data: Dataset | None = None, specs: list[ModelSpec] | None = None, *,
            nproc: int = 1, device: str = "cpu", jobs=None, on_student=None) -> dict | None:
    """The distill stage in this process, or in `nproc` ranks (DDP) started here, or as this rank of a
    torchrun launch. Returns metrics.json's content (None on ranks other than 0 of a torchrun launch).
    `on_student(name)`: called as each student trained side by side is saved (`run` exports it then)."""
    from edgekd.distill import distributed

    device = distributed.resolve_device(device)
    if distributed.launched_by_torchrun():
        with distributed.joined(device) as world:
            metrics = distill_stage(recipe, out, data, specs, world)
        return metrics if world.main else None
    if nproc > 1:
        distributed.check_nproc(nproc, device)
        return distributed.launch(nproc, _distill_rank, recipe, Path(out), device)[0]
    return distill_stage(recipe, out, data, specs, World(device=device), jobs, on_student)


def _distill_rank(recipe: Recipe, out: Path, device: str) -> dict:
    """One rank of `distill(nproc=N)` (a process the launcher started, with torchrun's environment)."""
    from edgekd.console import quiet_backends
    from edgekd.distill import distributed

    quiet_backends()
    with distributed.joined(device) as world:
        return distill_stage(recipe, out, world=world)


def distill_stage(recipe: Recipe, out: Path, data: Dataset | None = None,
                  specs: list[ModelSpec] | None = None, world: World = SINGLE, jobs=None,
                  on_student=None) -> dict:
    """Teacher, then every student (`specs`: their networks as `validate` resolved them; validated
    here when not given); writes `out/metrics.json` and returns it. Independent work runs side by side
    (`recipe.jobs`): the transfer set beside the teacher (when the teacher's threads leave a job's core
    free), the teacher's outputs in shards, the students.
    Across the ranks of `world` (DDP) every rank trains its share of each batch instead, and rank 0 writes.
    `jobs`: a pool the caller keeps for later stages (`run`); by default one of this stage's own."""
    from edgekd.distill import stage

    torch.set_num_threads(recipe.threads)
    data = data or load_data(recipe)
    specs = specs if specs is not None else validate(recipe, data)
    out = Path(out)
    d = recipe.distill
    augment = _augment(recipe.data.augment, data, "data.augment")
    n_transfer = recipe.data.transfer_samples if d.use_transfer else 0
    if world != SINGLE:  # ranks (or a GPU) already use the machine: no side-by-side jobs there
        jobs = None
    with nullcontext(jobs) if jobs is not None else _jobs(recipe, data, world == SINGLE) as jobs:
        clock = _Clock()
        # the transfer set beside the teacher when the teacher leaves a job's core free; else here after it
        made = (jobs.submit(stage.transfer_job, data.source, data.fingerprint, n_transfer, recipe.cache_dir)
                if jobs.n > (teacher_threads(recipe, world) or recipe.threads) else None)
        teacher, teacher_model = teacher_stage(recipe, data, out, world)
        clock.lap("teacher")
        jobs.start()  # the processes start up while the transfer set is made (if it was not beside)
        if made is not None:
            jobs.result(made)
        if not world.main:  # rank 0 makes it; the others read it from the cache
            world.barrier()
        xu = stage.transfer_inputs(data, n_transfer, seed=0, cache_dir=recipe.cache_dir)
        if world.main:
            world.barrier()
        clock.lap("transfer_set")
        if augment is None:  # every student reads these: computed once, in shards
            stage.teacher_outputs(data, teacher, teacher_model, xu, recipe.cache_dir,
                                  stage.sharded_fill(jobs, teacher), world)
        clock.lap("teacher_outputs")
        students = stage.distill_students(jobs, data, teacher, teacher_model, out / "students", [
            dict(name=s.name, spec=spec, method="kd", temperature=d.temperature, alpha=d.alpha,
                 hint_weight=d.hint_weight, cosine_weight=d.cosine_weight, transfer_samples=n_transfer,
                 use_transfer=d.use_transfer, cache_dir=recipe.cache_dir, seed=recipe.seed,
                 workers=d.workers, augment=augment, **recipe.student_train(s).model_dump())
            for s, spec in zip(recipe.students, specs)], world, on_student)
        clock.lap("students")
    metrics = {**distill_metrics(teacher, students, out), "jobs": jobs.n, "world_size": world.size,
               "device": world.device, "wall_s": clock.laps,
               **({"data_notes": data.notes} if data.notes else {})}
    if world.main:
        write_json(out / "metrics.json", metrics)
    world.barrier()
    return metrics


def _jobs(recipe: Recipe, data: Dataset, side_by_side: bool = True):
    """The recipe's side-by-side job processes, each loading `data` when it starts."""
    from edgekd.distill.jobs import Jobs, cpu_count

    n = (recipe.jobs or cpu_count()) if side_by_side else 1
    return Jobs(n, recipe.threads, partial(load_checked, data.source, data.fingerprint))


class _Clock:
    """Wall seconds of a stage's named steps, in order (metrics.json's `wall_s`)."""

    def __init__(self):
        self.laps: dict[str, float] = {}
        self._t = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self._t, 2)
        self._t = now


def distill_metrics(teacher: Checkpoint, students, out: Path) -> dict:
    """metrics.json: paths in it are relative to `out` (the run folder can move)."""
    first = students[0]
    rows = [{"name": s.name, "checkpoint": relative_to(s.checkpoint, out), "params": s.params,
             "accuracy": s.accuracy, "retention": s.retention, "compression": s.compression,
             "train_samples_per_s": s.train_samples_per_s,
             "train_samples_per_s_per_rank": s.train_samples_per_s_per_rank, "world_size": s.world_size,
             "trained_here": s.trained_here}
            for s in students]
    return {
        "teacher_accuracy": teacher.accuracy, "teacher_params": teacher.params,
        "teacher": relative_to(teacher.path, out),
        # Top-level student figures are the recipe's first student's; every student is under "students".
        "student": first.name, "student_accuracy": first.accuracy, "student_params": first.params,
        "retention": first.retention, "compression": first.compression, "students": rows,
    }


def compress_specs(recipe: Recipe) -> dict[str, CompressSpec]:
    """Mode -> how to fine-tune for it, from `recipe.compress` (the KD loss as distillation's)."""
    from dataclasses import replace

    c, d = recipe.compress, recipe.distill
    specs = {}
    for mode in c.modes:
        spec = CompressSpec(mode=mode, **c.train.model_dump(), temperature=d.temperature, alpha=d.alpha,
                            seed=recipe.seed, sparsity=c.sparsity if mode == "prune-pal4" else 0.0,
                            sparsity_by=c.sparsity_by if mode == "prune-pal4" else "tensor",
                            mixed_bits=tuple(c.mixed_bits), average_bits=c.average_bits,
                            sensitivity_samples=c.sensitivity_samples, fidelity=c.fidelity)
        specs[mode] = replace(spec, per_channel=c.per_channel and spec.bits <= 4)
    return specs


def compress_stage(recipe: Recipe, out: Path, data: Dataset, metrics: dict, jobs=None) -> list:
    """Fine-tune every student (`metrics`: the distill stage's) for every mode of `recipe.compress`, side
    by side (`jobs`); writes `out/compress.json` and returns the results (edgekd.types.CompressResult)."""
    from dataclasses import asdict, replace

    from edgekd.checkpoint import load_checkpoint, read_checkpoint
    from edgekd.compress import compress_job, compress_student

    specs = compress_specs(recipe)
    teacher = read_checkpoint(resolve_in(out, metrics["teacher"]))
    teacher = replace(teacher, accuracy=metrics["teacher_accuracy"])
    kwargs = dict(transfer_samples=recipe.data.transfer_samples if recipe.distill.use_transfer else 0,
                  cache_dir=recipe.cache_dir)
    todo = [(out / "students" / s.name, spec) for s in recipe.students for spec in specs.values()]
    clock = _Clock()
    with nullcontext(jobs) if jobs is not None else _jobs(recipe, data) as jobs:
        if jobs.n == 1:
            _, model = load_checkpoint(teacher.path)
            results = [compress_student(data, teacher, model, ckpt, out / "students", spec, **kwargs)
                       for ckpt, spec in todo]
        else:
            results = jobs.map(compress_job, [(data.source, data.fingerprint, teacher, ckpt, out / "students",
                                               spec, kwargs) for ckpt, spec in todo])
    clock.lap("compress")
    write_json(out / "compress.json", {"wall_s": clock.laps, "results": [
        {**asdict(r), "checkpoint": relative_to(r.checkpoint, out), "formats": recipe.compress.modes[r.mode]}
        for r in results]})
    return results


# --- the one-command pipeline

STAGES = ("distill", "export", "bench", "gate", "report", "bundles")


def run(recipe: Recipe, recipe_path: Path, out: Path, *, policy_path: Path | None = None,
        baseline: Path | None = None, progress=print, nproc: int = 1, device: str = "cpu"):
    """Recipe -> bundles and a verdict. Re-running reuses every finished stage whose inputs did not change;
    everything after distill reads only this recipe's students (`.edgekd/run.json`), never the folder."""
    from edgekd.bench.targets import get_targets
    from edgekd.config import load_policy
    from edgekd.gate.bundle import load_baseline
    from edgekd.gate.reports import write_gate_outputs
    from edgekd.gate.verdict import evaluate, latency_baseline_problem, load_bench_rows

    out = Path(out)
    policy = load_policy(policy_path or recipe.gate.policy)  # every input is checked before any work
    targets = get_targets(recipe.bench.targets)
    data = load_data(recipe)
    specs = validate(recipe, data)
    base = load_baseline(baseline, list(data.labels), list(data.input_shape)) if baseline else None
    lim = policy.max_regression
    if base is not None and lim is not None and lim.latency_pct is not None:
        why = latency_baseline_problem(base, {t.name for t in targets})
        if why:  # the gate compares simulated latency only: refused now, not after the training
            raise InputError(f"{why}: {baseline}; the policy {policy_path or recipe.gate.policy} asks for "
                             "it and this recipe benches on none of them; add one to bench.targets or drop "
                             "latency_pct")
    # the students, then each compressed student (STUDENT.MODE-kd): every checkpoint export_plan exports
    used = policy_path or recipe.gate.policy
    record = RunRecord(recipe.name, tuple(export_plan(recipe)), dict(recipe.bundle.platforms),
                       str(Path(used).resolve()) if used else None)
    write_record(out, record, recipe.record())
    marks = _Marks(out / STATE_DIR / "stages.json")

    with _jobs(recipe, data) as jobs:  # one set of job processes for both stages: started, data loaded once
        exports = _Exports(recipe, out, data, marks, jobs)
        with _step(1, "distill (teacher first, then students)", progress) as note:
            # a student's export starts as soon as it is saved, beside the students still training
            metrics = distill(recipe, out, data, specs, nproc=nproc, device=device, jobs=jobs,
                              on_student=exports.submit)
            note(f"teacher {metrics['teacher_accuracy']:.4f}; " + ", ".join(
                f"{s['name']} {s['accuracy']:.4f} (retention {s['retention']:.3f}, {s['compression']:.1f}x)"
                for s in metrics["students"]))
            if recipe.compress.modes:  # compression-aware fine-tuning, beside post-training quantisation
                note(", ".join(f"{r.name} {r.accuracy:.4f} ({r.average_bits:g} bits)"
                               for r in compress_stage(recipe, out, data, metrics, jobs)))
        with _step(2, "export", progress) as note:
            exports.finish(note)
    with _step(3, "bench (runtimes here + simulated targets)", progress) as note:
        bench_students(recipe, out, data, targets, marks)
        from edgekd.bench.targets import host_profile_notes

        for line in host_profile_notes(targets):
            note(line)
    rows = load_bench_rows(record.bench_files(out))
    with _step(4, "gate", progress) as note:
        verdict = evaluate(rows, policy, record.platforms, base)
        write_gate_outputs(verdict, out / "gate")
        note("PASS" if verdict.passed else "FAIL")
    with _step(5, "report", progress) as note:
        note(str(report(recipe, out, metrics["teacher_accuracy"], rows, verdict)))
    with _step(6, "bundles", progress) as note:
        bundles = write_bundles(recipe, recipe_path, out, data, metrics, verdict)
        note(", ".join(str(p) for p in bundles.values()) or "none (nothing passed)")
    return verdict, bundles


@contextmanager
def _step(i: int, name: str, progress):
    """Print a stage's start, then its notes and elapsed time when it ends."""
    progress(f"[{i}/{len(STAGES)}] {name} ...")
    notes: list[str] = []
    t0 = time.perf_counter()
    yield notes.append
    progress(f"      {'; '.join(notes) or 'done'} ({time.perf_counter() - t0:.1f}s)")


class _Exports:
    """Every checkpoint of `export_plan`, exported side by side in `jobs`: `submit(name)` starts one as soon
    as its checkpoint is saved (while other students still train), `finish` starts the rest and waits. Files
    that miss parity are listed in one table and the others kept; a checkpoint is marked done only when
    its export finished (a converter crash or an I/O error is retried next run)."""

    def __init__(self, recipe: Recipe, out: Path, data: Dataset, marks: "_Marks", jobs):
        self.recipe, self.out, self.data, self.marks, self.jobs = recipe, out, data, marks, jobs
        self.plan = export_plan(recipe)
        self.running: dict[str, tuple] = {}  # name -> (its key, the job; None when already exported)

    def submit(self, name: str) -> None:
        from edgekd.checkpoint import read_checkpoint
        from edgekd.export import export_checkpoint

        if name in self.running or name not in self.plan:
            return
        cfg = self.plan[name]
        ckpt, dest = self.out / "students" / name, self.out / "export" / name
        extras = read_checkpoint(ckpt).extras  # trained int8 ranges (edgekd.models.qat) shape the file too
        key = json_sha256([sha256_file(ckpt / "model.safetensors"), cfg, *([extras] if extras else [])])
        if self.marks.fresh(f"export/{name}", key, dest / "artifacts.json"):
            self.running[name] = (key, None)
            return
        # a job process has the data already (loaded when it started), checked against the checkpoint's
        self.running[name] = (key, self.jobs.submit(
            export_checkpoint, ckpt, dest, **cfg, data=self.data if self.jobs.n == 1 else None,
            threads=self.recipe.bench.threads))

    def finish(self, note) -> None:
        from edgekd.export import ExportMisses, misses_table

        for name in self.plan:
            self.submit(name)
        misses = []
        for name, (key, job) in self.running.items():
            if job is None:
                continue
            try:
                self.jobs.result(job)
            except ExportMisses as e:
                misses += [(name, f) for f in e.failures]
                if not e.final:
                    continue  # a converter crashed: not done, the next run tries again
            self.marks.set(f"export/{name}", key, self.out / "export" / name / "artifacts.json")
        if misses:
            note("some files were not kept (the others were):\n" + misses_table(misses))


def export_plan(recipe: Recipe) -> dict[str, dict]:
    """Checkpoint name -> export_checkpoint's settings: each student in every format and mode the recipe
    exports; each compressed student only in the mode it was trained for, in the formats that carry it,
    checked against the fake-quantised network it is (weight grids at agreement >= 0.999, int8
    activations at their post-training mode's threshold)."""
    from edgekd.compress import compressed_name
    from edgekd.export import required_agreement
    from edgekd.models import qat

    cfg = recipe.export.model_dump()
    plan = {s.name: cfg for s in recipe.students}
    for s in recipe.students:
        for mode, formats in recipe.compress.modes.items():
            # int8 activations run on integer kernels, which round (int32 bias, fixed-point requantisation)
            # where the program computes in float: a near-tie can flip (a one-off check on the test suite's
            # tiny student: 0.996 of 1,000 inputs, every miss at a top-two margin under 0.016), so such a
            # file is held to its post-training mode's threshold; weight grids are stored exactly: 0.999
            need = (required_agreement(recipe.export.min_top1_agreement, mode) if mode in qat.MODES
                    else 0.999)
            plan[compressed_name(s.name, mode)] = {**cfg, "formats": formats, "quants": [mode],
                                                   "min_top1_agreement": {"default": need}}
    return plan


def bench_students(recipe: Recipe, out: Path, data: Dataset, targets, marks: "_Marks") -> None:
    from edgekd.bench.stage import bench_artifacts

    for name in export_plan(recipe):
        manifest, dest = out / "export" / name / "artifacts.json", out / "bench" / name
        key = json_sha256([sha256_file(manifest), [t.model_dump() for t in targets], recipe.bench.threads])
        if marks.fresh(f"bench/{name}", key, dest / "bench.json"):
            continue
        bench_artifacts(manifest, dest, targets=targets, data=data, threads=recipe.bench.threads)
        marks.set(f"bench/{name}", key, dest / "bench.json")


def report(recipe: Recipe, out: Path, teacher_accuracy: float, rows, verdict) -> Path:
    """One report over this recipe's students: the verdict first, then a matrix per student."""
    from edgekd.artifacts import dropped_files
    from edgekd.report import write_report

    compressed = out / "compress.json"
    compression = (read_json(compressed, "compress results", "re-run `edgekd run`")["results"]
                   if recipe.compress.modes and compressed.is_file() else [])
    # the files export did not keep, beside the ones it did
    dropped = [f for name in export_plan(recipe)
               for f in dropped_files(out / "export" / name / "artifacts.json", name)]
    return write_report([b.row for b in rows], out / "report", title=recipe.name,
                        teacher_accuracy=teacher_accuracy, verdict=verdict, compression=compression,
                        dropped=dropped)[1]


def write_bundles(recipe: Recipe, recipe_path: Path, out: Path, data: Dataset, metrics: dict,
                  verdict) -> dict:
    """A bundle per platform whose file passed; a platform with none loses any bundle an earlier run left."""
    import shutil

    from edgekd.checkpoint import read_checkpoint
    from edgekd.gate.bundle import write_bundle

    provenance = {"recipe_name": recipe.name, "recipe": recipe.record(),
                  "recipe_sha256": sha256_file(recipe_path),
                  "teacher_sha256": read_checkpoint(resolve_in(out, metrics["teacher"])).weights_sha256,
                  "teacher_accuracy": metrics["teacher_accuracy"], "data_fingerprint": data.fingerprint,
                  "data": data.source}
    bundles = {}
    _drop_bundles_of_other_platforms(out / "bundles", set(verdict.chosen))
    for platform, c in verdict.chosen.items():
        if c is None:
            shutil.rmtree(out / "bundles" / platform, ignore_errors=True)
            (out / "bundles" / f"{platform}.zip").unlink(missing_ok=True)
            continue
        params = read_checkpoint(out / "students" / c.model).params
        n = recipe.bundle.validation_samples
        text = text_bundle(data, out / "students" / c.model, n) if data.is_text else None
        bundles[platform] = write_bundle(
            c, platform, out / "bundles", validation_x=data.x_test[:n],
            labels=list(data.labels), mean=data.mean, std=data.std, input_shape=list(data.input_shape),
            params=params, provenance=provenance, text=text)[1]
    return bundles


def text_bundle(data: Dataset, checkpoint: Path, n: int) -> dict:
    """What a text model's bundle carries beside the file: its tokenizer, the settings an app's tokenizer
    must reproduce (with the pruned vocabulary, if any), and the validation inputs' sentences."""
    from edgekd.checkpoint import load_checkpoint
    from edgekd.data.tokens import tokenizer_settings

    folder = Path(data.notes["tokenizer"])
    settings = tokenizer_settings(folder, data.notes["max_length"])
    model = load_checkpoint(checkpoint)[1]
    kept = model.kept_ids() if callable(getattr(model, "kept_ids", None)) else None
    if kept is not None:
        settings["pruned_vocabulary"] = {
            "kept_ids": kept, "note": "ids not listed (and [UNK]) share [UNK]'s embedding inside the model: "
                                      "the tokenizer stays the full one"}
    return {"tokenizer_json": folder / "tokenizer.json", "settings": settings,
            "sentences": list(data.text_test[:n])}


def _drop_bundles_of_other_platforms(bundles_dir: Path, platforms: set[str]) -> None:
    """A platform the recipe no longer names must not keep an old run's bundle."""
    import shutil

    if not bundles_dir.is_dir():
        return
    for p in bundles_dir.iterdir():
        name = p.name[:-4] if p.name.endswith(".zip") else p.name
        if name not in platforms and not name.startswith("."):
            shutil.rmtree(p) if p.is_dir() else p.unlink()


class _Marks:
    """Stage completion marks: a stage counts as done only when its mark matches its inputs and its
    output file is the one it wrote (an interrupted stage leaves no mark, so it runs again; an output
    written over since, e.g. by `edgekd export` into the run's folder, makes it run again too)."""

    def __init__(self, path: Path):
        import json

        self.path = path  # a damaged marks file only means every stage runs again
        try:
            self.marks = json.loads(path.read_text()) if path.is_file() else {}
        except ValueError:
            self.marks = {}

    def fresh(self, name: str, key: str, output: Path) -> bool:
        mark = self.marks.get(name)
        if isinstance(mark, str):  # written before outputs were hashed: its key alone, as then
            return mark == key and Path(output).is_file()
        return (isinstance(mark, dict) and mark.get("key") == key and Path(output).is_file()
                and mark.get("output_sha256") == sha256_file(output))

    def set(self, name: str, key: str, output: Path) -> None:
        self.marks[name] = {"key": key, "output_sha256": sha256_file(output)}
        write_json(self.path, self.marks)
