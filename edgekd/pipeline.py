"""The whole product, stage by stage. Only this module and the CLI read recipe objects."""

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
