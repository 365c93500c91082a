"""The whole product, stage by stage. Only this module and the CLI read recipe objects.

    distill (teacher first) -> export -> bench -> report -> gate -> bundles
"""

from __future__ import annotations

from pathlib import Path

import torch

from edgekd.config import Recipe
from edgekd.data import Dataset, load_dataset
from edgekd.distill import distill_student, prepare_teacher
from edgekd.errors import InputError
from edgekd.fileio import write_json
from edgekd.models import build_model
from edgekd.types import Checkpoint


def load_data(recipe: Recipe) -> Dataset:
    return load_dataset(recipe.data.name, recipe.data.path, recipe.data.seed)


def validate(recipe: Recipe, data: Dataset) -> None:
    """Everything that can be checked before any output is written: the teacher, model names and shapes."""
    if recipe.teacher.checkpoint is not None:
        from edgekd.checkpoint import read_checkpoint
        from edgekd.distill.stage import check_teacher_fits

        check_teacher_fits(read_checkpoint(recipe.teacher.checkpoint), data)
    models = [] if recipe.teacher.checkpoint is not None else [("teacher", recipe.teacher)]
    for where, m in [*models, *((f"students.{s.name}", s) for s in recipe.students)]:
        try:
            build_model(m.arch, data.input_shape, data.num_classes, width=m.width, depth=m.depth)
        except InputError as e:
            raise InputError(f"{where}: {e}") from None


def teacher_stage(recipe: Recipe, data: Dataset, out: Path):
    t = recipe.teacher
    return prepare_teacher(data, out, arch=t.arch, width=t.width, depth=t.depth, checkpoint=t.checkpoint,
                           min_accuracy=t.min_accuracy, seed=recipe.seed, **t.train.model_dump())


def distill_stage(recipe: Recipe, out: Path, data: Dataset | None = None) -> dict:
    """Teacher, then every student; writes `out/metrics.json` and returns it."""
    torch.set_num_threads(recipe.threads)
    data = data or load_data(recipe)
    validate(recipe, data)
    out = Path(out)
    teacher, teacher_model = teacher_stage(recipe, data, out)
    d = recipe.distill
    students = []
    for s in recipe.students:
        students.append(distill_student(
            data, teacher, teacher_model, out / "students", name=s.name, arch=s.arch, width=s.width, depth=s.depth,
            method="kd", temperature=d.temperature, alpha=d.alpha, hint_weight=d.hint_weight,
            cosine_weight=d.cosine_weight, transfer_samples=recipe.data.transfer_samples,
            use_transfer=d.use_transfer, cache_dir=recipe.cache_dir, seed=recipe.seed, **d.train.model_dump()))
    metrics = distill_metrics(teacher, students)
    write_json(out / "metrics.json", metrics)
    return metrics


def distill_metrics(teacher: Checkpoint, students) -> dict:
    first = students[0]
    rows = [{"name": s.name, "checkpoint": str(s.checkpoint), "params": s.params, "accuracy": s.accuracy,
             "retention": s.retention, "compression": s.compression, "train_samples_per_s": s.train_samples_per_s}
            for s in students]
    return {
        "teacher_accuracy": teacher.accuracy, "teacher_params": teacher.params, "teacher": str(teacher.path),
        # Top-level student figures are the recipe's first student's; every student is under "students".
        "student": first.name, "student_accuracy": first.accuracy, "student_params": first.params,
        "retention": first.retention, "compression": first.compression, "students": rows,
    }


# --- the one-command pipeline

STAGES = ("distill", "export", "bench", "report", "gate", "bundles")


def run(recipe: Recipe, recipe_path: Path, out: Path, *, policy_path: Path | None = None,
        baseline: Path | None = None, progress=print):
    """Recipe -> bundles and a verdict. Re-running reuses every finished stage whose inputs did not change."""
    import json
    import time

    from edgekd.bench.report import write_report
    from edgekd.bench.stage import bench_artifacts
    from edgekd.bench.targets import get_targets
    from edgekd.config import load_policy
    from edgekd.errors import CheckFailed
    from edgekd.export import export_checkpoint
    from edgekd.fileio import sha256_file
    from edgekd.gate.bundle import load_baseline, write_bundle
    from edgekd.gate.reports import write_gate_outputs
    from edgekd.gate.verdict import evaluate, load_bench_rows

    out = Path(out)
    policy = load_policy(policy_path or recipe.gate.policy)
    targets = get_targets(recipe.bench.targets)
    data = load_data(recipe)
    validate(recipe, data)
    baseline_manifest = load_baseline(baseline, list(data.labels), list(data.input_shape)) if baseline else None
    marks = _Marks(out / ".edgekd" / "stages.json")

    def stage(i: int, name: str):
        progress(f"[{i}/{len(STAGES)}] {name} ...")
        return time.perf_counter()

    def done(t0: float, what: str = "done"):
        progress(f"      {what} ({time.perf_counter() - t0:.1f}s)")

    t0 = stage(1, "distill (teacher first, then students)")
    metrics = distill_stage(recipe, out, data)
    done(t0, f"teacher {metrics['teacher_accuracy']:.4f}; " + ", ".join(
        f"{s['name']} {s['accuracy']:.4f} (retention {s['retention']:.3f})" for s in metrics["students"]))

    t0 = stage(2, "export")
    export_cfg = recipe.export.model_dump()
    for s in recipe.students:
        ckpt = out / "students" / s.name
        dest = out / "export" / s.name
        key = _key(sha256_file(ckpt / "model.safetensors"), export_cfg)
        if marks.fresh(f"export/{s.name}", key, dest / "artifacts.json"):
            continue
        try:
            export_checkpoint(ckpt, dest, **export_cfg, data=data, threads=recipe.bench.threads)
        except CheckFailed as e:  # parity failures are reported; the files that passed go on
            progress(f"      {s.name}: {e}")
        marks.set(f"export/{s.name}", key)
    done(t0)

    t0 = stage(3, "bench (runtimes here + simulated targets)")
    for s in recipe.students:
        manifest = out / "export" / s.name / "artifacts.json"
        dest = out / "bench" / s.name
        key = _key(sha256_file(manifest), [t.model_dump() for t in targets], recipe.bench.threads)
        if marks.fresh(f"bench/{s.name}", key, dest / "bench.json"):
            continue
        bench_artifacts(manifest, dest, targets=targets, data=data, threads=recipe.bench.threads)
        marks.set(f"bench/{s.name}", key)
    done(t0)

    t0 = stage(4, "report")
    rows = load_bench_rows(out / "bench")
    combined = {"model": recipe.name, "teacher_accuracy": metrics["teacher_accuracy"],
                "rows": [{k: v for k, v in r.items() if k != "per_op"} for _, r in rows]}
    md, page = write_report(combined, _mkdir(out / "report"))
    done(t0, f"{page}")

    t0 = stage(5, "gate")
    verdict = evaluate(rows, policy, recipe.bundle.platforms, baseline_manifest)
    write_gate_outputs(verdict, out / "gate")
    done(t0, "PASS" if verdict.passed else "FAIL")

    t0 = stage(6, "bundles")
    teacher = json.loads((out / "teacher" / "model.json").read_text())
    provenance = {"recipe_name": recipe.name, "recipe": json.loads(recipe.model_dump_json()),
                  "recipe_sha256": sha256_file(recipe_path), "teacher_sha256": teacher["weights_sha256"],
                  "teacher_accuracy": metrics["teacher_accuracy"], "data_fingerprint": data.fingerprint,
                  "data": data.source}
    bundles = {}
    for platform, c in verdict.chosen.items():
        if c is None:
            continue
        params = json.loads((out / "students" / c.model / "model.json").read_text())["params"]
        bundles[platform] = write_bundle(
            c, platform, out / "bundles", validation_x=data.x_test[:recipe.bundle.validation_samples],
            labels=list(data.labels), mean=data.mean, std=data.std, input_shape=list(data.input_shape),
            params=params, provenance=provenance)[1]
    done(t0, ", ".join(str(p) for p in bundles.values()) or "none (nothing passed)")
    return verdict, bundles


def _key(*parts) -> str:
    import hashlib
    import json

    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _mkdir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


class _Marks:
    """Stage completion marks: a stage counts as done only when its mark matches its inputs and its
    output file exists (an interrupted stage leaves no mark, so it runs again)."""

    def __init__(self, path: Path):
        import json

        self.path = path
        try:
            self.marks = json.loads(path.read_text()) if path.is_file() else {}
        except ValueError:
            self.marks = {}

    def fresh(self, name: str, key: str, output: Path) -> bool:
        return self.marks.get(name) == key and Path(output).is_file()

    def set(self, name: str, key: str) -> None:
        self.marks[name] = key
        write_json(self.path, self.marks)
