"""Retention of MNIST-1D students at ~5x, ~10x and ~30x compression, label-only vs KD, 3 seeds each.

    python benchmarks/distill_retention.py --out results/distill_retention.json

Teacher and hyperparameters come from the built-in recipe (edgekd/recipes/mnist1d.yaml), so this
measures what `edgekd distill` gives a user. Label-only students use the teacher's supervised recipe
(60 epochs on the 4000 labelled samples); KD students use the recipe's distill settings (labelled
set + teacher-labelled transfer set). Also reports training throughput with and without the logit cache.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import environment, write  # noqa: E402
from edgekd.config import load_recipe  # noqa: E402
from edgekd.distill import distill_student, prepare_teacher  # noqa: E402
from edgekd.distill.cache import cached_teacher_outputs  # noqa: E402
from edgekd.distill.stage import seeded_model, transfer_inputs  # noqa: E402
from edgekd.distill.train import train  # noqa: E402
from edgekd.pipeline import load_data  # noqa: E402
from edgekd.types import ModelSpec  # noqa: E402

STUDENTS = {"cnn1d-5x": 0.45, "cnn1d-10x": 0.3125, "cnn1d-30x": 0.1667}  # cnn1d width multipliers


def throughput(data, teacher, teacher_model, cache_dir, width: float, n_transfer: int) -> dict:
    """Samples/s of one KD epoch over train + transfer, reading cached logits vs running the teacher."""
    xu = transfer_inputs(data, n_transfer, seed=0, cache_dir=cache_dir)
    x = np.concatenate([data.x_train, xu])
    y = np.concatenate([data.y_train, np.full(len(xu), -1, np.int64)])
    logits, _, _ = cached_teacher_outputs(teacher_model, teacher.weights_sha256, x, cache_dir)
    common = dict(epochs=1, batch_size=256, lr=3e-3, weight_decay=0.0, seed=0)
    spec = ModelSpec.zoo("cnn1d", width)
    cached = train(seeded_model(spec, data, 0), x, y, teacher_logits=logits, **common)
    online = train(seeded_model(spec, data, 0), x, y, teacher=teacher_model, **common)
    return {"student_width": width, "samples": len(x), "cached_samples_per_s": round(cached.samples_per_s),
            "uncached_samples_per_s": round(online.samples_per_s),
            "speedup": round(cached.samples_per_s / online.samples_per_s, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()

    recipe, _ = load_recipe()
    torch.set_num_threads(recipe.threads)
    t_start = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="edgekd-bench-"))
    cache = work / "cache"
    data = load_data(recipe)
    t = recipe.teacher
    teacher, teacher_model = prepare_teacher(data, work, spec=t.spec(),
                                             checkpoint=None, min_accuracy=t.min_accuracy, seed=recipe.seed,
                                             **t.train.model_dump())
    teacher_s = time.perf_counter() - t_start
    print(f"teacher: accuracy {teacher.accuracy:.4f}, {teacher.params} params, {teacher_s:.0f}s", flush=True)

    d = recipe.distill
    rows = []
    for name, width in STUDENTS.items():
        for method in ("label", "kd"):
            train_cfg = (t.train if method == "label" else d.train).model_dump()
            for seed in range(args.seeds):
                t0 = time.perf_counter()
                r = distill_student(data, teacher, teacher_model, work / "students",
                                    name=f"{name}-{method}-{seed}", spec=ModelSpec.zoo("cnn1d", width),
                                    method=method, temperature=d.temperature, alpha=d.alpha,
                                    transfer_samples=recipe.data.transfer_samples, cache_dir=cache, seed=seed,
                                    **train_cfg)
                rows.append({"student": name, "params": r.params, "compression": round(r.compression, 2),
                             "method": method, "seed": seed, "accuracy": r.accuracy,
                             "retention": round(r.retention, 4),
                             "train_s": round(time.perf_counter() - t0, 1)})
                print(rows[-1], flush=True)

    summary = {}
    for name in STUDENTS:
        for method in ("label", "kd"):
            sel = [r for r in rows if r["student"] == name and r["method"] == method]
            summary[f"{name}/{method}"] = {
                "mean_retention": round(statistics.mean(r["retention"] for r in sel), 4),
                "mean_accuracy": round(statistics.mean(r["accuracy"] for r in sel), 4),
                "std_accuracy": round(statistics.pstdev(r["accuracy"] for r in sel), 4),
                "params": sel[0]["params"], "compression": sel[0]["compression"]}
    gaps = {name: round(summary[f"{name}/kd"]["mean_accuracy"] - summary[f"{name}/label"]["mean_accuracy"], 4)
            for name in STUDENTS}
    thr = throughput(data, teacher, teacher_model, cache, STUDENTS["cnn1d-10x"], recipe.data.transfer_samples)
    total_s = time.perf_counter() - t_start
    write(args.out, {
        "teacher": {"accuracy": teacher.accuracy, "params": teacher.params, "train_s": round(teacher_s, 1)},
        "rows": rows, "summary": summary, "kd_minus_label_accuracy": gaps,
        "goals": {"kd_30x_retention_ge_0.99": summary["cnn1d-30x/kd"]["mean_retention"] >= 0.99,
                  "kd_beats_label_everywhere": all(g > 0 for g in gaps.values()),
                  "kd_beats_label_by_1pt_at_30x": gaps["cnn1d-30x"] >= 0.01,
                  "under_15_min": total_s < 900},
        "throughput": thr, "total_s": round(total_s, 1), "environment": environment(),
        "settings": {"label": t.train.model_dump(),
                     "kd": {**d.train.model_dump(), "temperature": d.temperature,
                            "alpha": d.alpha, "transfer_samples": recipe.data.transfer_samples}},
    })


if __name__ == "__main__":
    main()
