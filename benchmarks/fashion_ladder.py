"""The student ladder on a real image set: Fashion-MNIST, one teacher, students at 10x, 30x and 100x by
budget, KD against label-only with the same budget, retention through the file the gate ships.

    python benchmarks/fashion_ladder.py --out results/fashion_ladder.json [--work DIR] [--seeds 0,1,2]
        [--rungs 10,30,100] [--subset N] [--teacher-epochs E] [--student-epochs E]

Needs Debian's `dataset-fashion-mnist`. The teacher is trained once into --work and reused by later runs
(its cost is reported). Each KD rung goes through `edgekd run`'s stages (export, bench, gate) with the
built-in policy, and its retention is read from the shipped Android file; label-only students of the
same width and training budget are measured through PyTorch (they ship nothing). `--subset` trains on
the first N training images (a cost probe; the figures then do not meet the issue's protocol).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from _common import environment, print_goals, write  # noqa: E402


def recipe_for(rungs: list[int], seed: int, teacher_epochs: int | None, student_epochs: int | None,
               subset: int | None, teacher: Path | None) -> dict:
    """The built-in fashion-mnist recipe with this run's seed and ladder (its students' family and depths
    at every budget)."""
    from edgekd.config import default_recipe_path

    r = yaml.safe_load((default_recipe_path().parent / "fashion-mnist.yaml").read_text())
    r["seed"] = seed
    if teacher_epochs:
        r["teacher"]["train"]["epochs"] = teacher_epochs
    if teacher is not None:
        r["teacher"] = {"checkpoint": str(teacher), "min_accuracy": r["teacher"]["min_accuracy"]}
    family = r["students"][0]
    r["students"] = [{"name": f"kd-{c}x", "arch": family["arch"], "compression": c,
                      "depths": family["depths"]} for c in rungs]
    if student_epochs:
        r["distill"]["train"]["epochs"] = student_epochs
    r["export"] = {"formats": ["tflite"], "quants": ["fp32", "int8", "dynamic-int8", "full-int8"]}
    r["bench"] = {"targets": ["snapdragon-8-gen3-hexagon"]}
    r["bundle"] = {"platforms": {"android": "tflite"}}
    if subset:
        r["data"]["name"] = "npz"
        r["data"]["transfer_samples"] = min(r["data"]["transfer_samples"], subset)
    return r


def shipped_retention(out: Path, student: str) -> float | None:
    """Retention through the file the gate would ship for this rung alone (the built-in policy), or None
    when no file of it passes."""
    from edgekd.config import load_policy
    from edgekd.gate.verdict import evaluate, load_bench_rows

    rows = load_bench_rows([out / "bench" / student / "bench.json"])
    chosen = evaluate(rows, load_policy(), {"android": "tflite"}).chosen["android"]
    return chosen.measured().retention if chosen is not None and chosen.measured() else None


def best_file_retention(out: Path, student: str) -> float | None:
    """The highest retention measured through any of the rung's exported files (whether or not the policy
    ships it): what a rung that ships nothing came closest to."""
    from edgekd.gate.verdict import load_bench_rows

    rows = load_bench_rows([out / "bench" / student / "bench.json"])
    values = [r.row.retention for r in rows if r.row.kind == "measured" and r.row.ok
              and r.row.retention is not None and r.row.format != "torch"]
    return max(values) if values else None


def subset_npz(work: Path, n: int) -> Path:
    """The first `n` Fashion-MNIST training images and the whole test split, as an .npz."""
    import numpy as np

    from edgekd.data import DATASETS

    raw = DATASETS.get("fashion-mnist")(path=None, seed=42)
    path = work / f"fashion-{n}.npz"
    np.savez(path, x=raw.x_train[:n], y=raw.y_train[:n], x_test=raw.x_test, y_test=raw.y_test,
             labels=np.array(raw.labels))
    return path


def main() -> None:
    from edgekd import pipeline
    from edgekd.config import Recipe
    from edgekd.distill import distill_student

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--work", help="keeps the teacher (and its cost) between runs")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--rungs", default="10,30,100")
    ap.add_argument("--subset", type=int, help="train on the first N images only (a cost probe)")
    ap.add_argument("--teacher-epochs", type=int, help="default: the recipe's")
    ap.add_argument("--student-epochs", type=int, help="default: the recipe's")
    ap.add_argument("--teacher-floor", type=float, help="teacher.min_accuracy (a cost probe's short teacher)")
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="edgekd-fashion-"))
    work.mkdir(parents=True, exist_ok=True)
    rungs, seeds = [int(c) for c in args.rungs.split(",")], [int(s) for s in args.seeds.split(",")]
    t_start = time.perf_counter()

    def seed_recipe(seed: int) -> dict:
        r = recipe_for(rungs, seed, args.teacher_epochs, args.student_epochs, args.subset,
                       None if seed == seeds[0] else teacher_dir / "teacher")
        if args.teacher_floor is not None:
            r["teacher"]["min_accuracy"] = args.teacher_floor
        if args.subset:
            r["data"]["path"] = str(subset_npz(work, args.subset))
        return r

    # The teacher first, on its own clock: trained here once, then reused (by its key) by the first seed's
    # run, and loaded as a checkpoint by the others; a later run with the same --work finds it cached.
    teacher_dir, rows = work / "teacher-run", []
    first = Recipe.model_validate(seed_recipe(seeds[0]))
    t0 = time.perf_counter()
    torch.set_num_threads(first.threads)
    pipeline.teacher_stage(first, pipeline.load_data(first), teacher_dir)
    teacher_s = round(time.perf_counter() - t0, 1)
    for seed in seeds:
        r = seed_recipe(seed)
        recipe_path = work / f"recipe-{seed}.yaml"
        recipe_path.write_text(yaml.safe_dump(r))
        recipe = Recipe.model_validate(r)
        out = teacher_dir if seed == seeds[0] else work / f"seed-{seed}"
        t0 = time.perf_counter()
        pipeline.run(recipe, recipe_path, out, progress=lambda m: print(m, flush=True))
        run_s = time.perf_counter() - t0
        metrics = json.loads((out / "metrics.json").read_text())
        data = pipeline.load_data(recipe)
        teacher, teacher_model = pipeline.teacher_stage(recipe, data, teacher_dir)
        specs = pipeline.validate(recipe, data)
        for s, spec, m in zip(recipe.students, specs, metrics["students"]):
            t1 = time.perf_counter()
            budget = recipe.student_train(s).model_dump()  # the KD student's own training budget
            label = distill_student(data, teacher, teacher_model, work / f"label-{seed}",
                                    name=f"label-{s.name}", spec=spec, method="label", temperature=1.0,
                                    alpha=1.0, transfer_samples=0, cache_dir=recipe.cache_dir, seed=seed,
                                    **budget)
            rows.append({"seed": seed, "rung": s.compression, "student": s.name, "params": m["params"],
                         "compression": round(m["compression"], 2), "kd_accuracy": m["accuracy"],
                         "kd_retention_torch": m["retention"], "label_accuracy": label.accuracy,
                         "label_retention": label.retention,
                         "shipped_file_retention": shipped_retention(out, s.name),
                         "best_file_retention": best_file_retention(out, s.name),
                         "teacher_accuracy": metrics["teacher_accuracy"], "label_train_s":
                         round(time.perf_counter() - t1, 1), "run_s": round(run_s, 1)})
            print(rows[-1], flush=True)
    total_s = time.perf_counter() - t_start

    def mean(key: str, rung: int) -> float:
        return statistics.mean(r[key] for r in rows if r["rung"] == rung)

    teacher_acc = rows[0]["teacher_accuracy"]
    goals = {"teacher_accuracy": {"value": teacher_acc, "goal": ">= 0.925", "met": teacher_acc >= 0.925}}
    for rung, floor in ((10, 0.99), (30, 0.98), (100, None)):
        if rung not in rungs:
            continue
        shipped = [r["shipped_file_retention"] for r in rows if r["rung"] == rung]
        ret = statistics.mean(shipped) if None not in shipped else 0.0  # a rung that ships nothing fails
        goals[f"retention_{rung}x"] = {"value": round(ret, 4), "goal": f">= {floor}" if floor else "reported",
                                       "met": ret >= floor if floor else True}
        kd, lab = mean("kd_accuracy", rung), mean("label_accuracy", rung)
        goals[f"kd_ge_label_{rung}x"] = {"value": round(kd - lab, 4), "goal": ">= 0", "met": kd >= lab}
    goals["seeds"] = {"value": len(seeds), "goal": 3, "met": len(seeds) >= 3}
    cached_s = total_s - teacher_s  # what the benchmark costs once the teacher is cached
    goals["whole_benchmark_minutes"] = {"value": round(cached_s / 60, 1), "goal": "< 60 (teacher cached)",
                                        "met": cached_s < 3600}
    goals["full_training_set"] = {"value": args.subset or 60000, "goal": 60000, "met": not args.subset}
    write(args.out, {"benchmark": "fashion_ladder", "environment": environment(), "teacher_run_s": teacher_s,
                     "total_s": round(total_s, 1), "args": vars(args), "rows": rows, "goals": goals})
    print_goals(goals)


if __name__ == "__main__":
    main()
