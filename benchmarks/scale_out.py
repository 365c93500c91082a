"""Distillation beyond one process, measured (issue: torchrun DDP, logit cache in shards, a fast demo).

    python benchmarks/scale_out.py --out results/scale_out.json [--seeds 3]

1. The default run (`edgekd run`, built-in recipe) from empty caches, as `make demo` runs it (side-by-side
   jobs, one per core; the teacher alone on `teacher.threads: 2`), against the same run in one process
   (`jobs: 1`): wall time per stage, and every accuracy (the checkpoints are compared byte for byte:
   side-by-side jobs must not change a number); and against the run before the teacher took two threads
   (`teacher.threads: 1`, the transfer set beside it), whose accuracies the bar holds it to.
2. DDP correctness: the default recipe's students from the same teacher, 1 process vs 2 gloo ranks
   (`--nproc 2`, 1 thread each), for each seed; the teacher-output cache the 2 ranks build vs 1's.
3. Scaling here: samples/s of a teacher-sized student (cnn1d width 1.0, 141k parameters, 256 samples per
   process and step, so a step is compute, not overhead), 1 process vs 2 ranks at 256 samples per rank
   (a global batch of 512: DDP's usual scaling, each rank's step as big as the one process's), and, beside
   it, 2 ranks sharing the one process's global batch of 256 (128 each). Three rounds, the modes
   interleaved within each; the speed-up is the median of the rounds' ratios (this VM's speed drifts by
   10% from minute to minute). And the time to build the teacher-output cache, 1 process vs 2 ranks.
Run it alone: two cores, so anything beside it changes every figure.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent))
from _common import environment, print_goals, write  # noqa: E402

RECIPE = Path(__file__).parent.parent / "edgekd" / "recipes" / "mnist1d.yaml"


def edgekd(*args, env=None) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "edgekd", *map(str, args)], capture_output=True, text=True,
                       env={**os.environ, **(env or {})})
    if r.returncode != 0:
        raise SystemExit(f"edgekd {' '.join(map(str, args))} failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return r, time.perf_counter() - t0


def recipe(work: Path, name: str, **changes) -> Path:
    r = yaml.safe_load(RECIPE.read_text())
    for key, value in changes.items():
        node = r
        *path, last = key.split(".")
        for p in path:
            node = node.setdefault(p, {})
        node[last] = value
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(r))
    return path


def stage_seconds(stdout_err: str) -> dict:
    """`[i/6] name ...` then `      note (12.3s)`: seconds per stage from `edgekd run`'s progress."""
    out, name = {}, None
    for line in stdout_err.splitlines():
        if line.startswith("[") and "] " in line:
            name = line.split("] ", 1)[1].split(" ")[0]
        elif name and line.rstrip().endswith("s)") and "(" in line:
            try:
                out[name] = float(line.rstrip()[:-2].rsplit("(", 1)[1])
            except ValueError:
                continue
            name = None
    return out


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def cache_entries(cache: Path) -> dict:
    return {f"{d.name}/{f}": sha(d / f) for d in sorted((cache / "logits").iterdir())
            for f in ("logits.npy", "features.npy")}


def default_runs(work: Path) -> tuple[list, dict]:
    rows, accs = [], {}
    for mode, jobs, changes in (("side-by-side", 0, {}), ("one-process", 1, {}),
                                ("1-thread teacher", 0, {"teacher.threads": 1})):
        r = recipe(work, f"default-{mode}", jobs=jobs, cache_dir=str(work / f"cache-{mode}"), **changes)
        out = work / f"run-{mode}"
        res, wall = edgekd("run", r, "--out", out)
        m = json.loads((out / "metrics.json").read_text())
        acc = {"teacher": m["teacher_accuracy"], **{s["name"]: s["accuracy"] for s in m["students"]}}
        accs[mode] = (acc, out)
        used = yaml.safe_load(r.read_text())
        rows.append({"what": "default run from empty caches", "mode": mode, "jobs": m["jobs"],
                     "teacher_threads": used["teacher"].get("threads") or used.get("threads", 1),
                     "wall_s": round(wall, 1), "stages_s": stage_seconds(res.stderr),
                     "distill_steps_s": m["wall_s"], "accuracy": acc})
        print(mode, round(wall, 1), acc, flush=True)
    return rows, accs


def ddp_runs(work: Path, teacher: Path, seeds: int) -> tuple[list, dict]:
    rows, caches = [], {}
    for seed in range(seeds):
        for mode, args in (("1 process", []), ("2 ranks", ["--nproc", "2"])):
            tag = mode.replace(" ", "")
            cache = work / f"cache-ddp-{tag}"
            r = recipe(work, f"ddp-{tag}-{seed}", seed=seed, cache_dir=str(cache),
                       **{"teacher.checkpoint": str(teacher)})
            out = work / f"ddp-{tag}-{seed}"
            _, wall = edgekd("distill", r, "--out", out, *args)
            m = json.loads((out / "metrics.json").read_text())
            for s in m["students"]:
                rows.append({"what": "DDP correctness", "mode": mode, "seed": seed, "student": s["name"],
                             "accuracy": s["accuracy"], "samples_per_s": round(s["train_samples_per_s"]),
                             "world_size": s["world_size"]})
            print(mode, seed, [(s["name"], s["accuracy"]) for s in m["students"]], round(wall, 1), flush=True)
            caches[mode] = cache
    return rows, caches


SCALING = (("1 process", 256, []), ("2 ranks", 512, ["--nproc", "2"]),
           ("2 ranks, same global batch", 256, ["--nproc", "2"]))


def scaling_runs(work: Path, teacher: Path, rounds: int) -> list:
    rows = []
    for rnd in range(rounds):
        for mode, batch, args in SCALING:
            tag = "2ranks" if args else "1process"  # one cache per process count: round 0 builds each
            r = recipe(work, f"scale-{tag}-{batch}", jobs=1, cache_dir=str(work / f"cache-scale-{tag}"),
                       students=[{"name": "cnn1d-w1", "arch": "cnn1d", "width": 1.0}],
                       **{"teacher.checkpoint": str(teacher),
                          "distill.train": {"epochs": 1, "batch_size": batch, "lr": 0.003}})
            out = work / f"scale-{tag}-{batch}-{rnd}"
            edgekd("distill", r, "--out", out, *args)
            m = json.loads((out / "metrics.json").read_text())
            s = m["students"][0]
            rows.append({"what": "scaling", "mode": mode, "round": rnd, "global_batch": batch,
                         "student": "cnn1d width 1.0 (141k params)",
                         "samples_per_s": round(s["train_samples_per_s"]),
                         "samples_per_s_per_rank": round(s["train_samples_per_s_per_rank"]),
                         "teacher_outputs_s": m["wall_s"]["teacher_outputs"]})
            print(rows[-1], flush=True)
    return rows


def speedup(rows: list, mode: str) -> float:
    """The median over rounds of `mode`'s samples/s over the one process's in the same round."""
    one = {r["round"]: r["samples_per_s"] for r in rows if r["mode"] == "1 process"}
    return statistics.median(r["samples_per_s"] / one[r["round"]] for r in rows if r["mode"] == mode)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the scaling runs")
    args = ap.parse_args()
    if args.rounds < 1 or args.seeds < 1:
        ap.error("--rounds and --seeds need at least 1")
    work = Path(tempfile.mkdtemp(prefix="edgekd-scale-"))

    rows, accs = default_runs(work)
    (fast, fast_out), (slow, slow_out) = accs["side-by-side"], accs["one-process"]
    before = accs["1-thread teacher"][0]
    change_vs_before = {k: round(100 * (fast[k] - before[k]), 2) for k in fast}
    same_bytes = all(sha(fast_out / d / "model.safetensors") == sha(slow_out / d / "model.safetensors")
                     for d in ["teacher"] + [f"students/{n}" for n in fast if n != "teacher"])
    demo = next(r for r in rows if r["mode"] == "side-by-side")
    max_acc_diff = max(abs(fast[k] - slow[k]) for k in fast)

    teacher = fast_out / "teacher"
    ddp_rows, caches = ddp_runs(work, teacher, args.seeds)
    rows += ddp_rows
    diffs = {}
    for name in sorted({r["student"] for r in ddp_rows}):
        mean = {mode: sum(r["accuracy"] for r in ddp_rows if r["student"] == name and r["mode"] == mode)
                / args.seeds for mode in ("1 process", "2 ranks")}
        diffs[name] = round(mean["2 ranks"] - mean["1 process"], 4)
    scale = scaling_runs(work, teacher, args.rounds)
    # the scaling run's one process (jobs: 1) built the same entries (same teacher, same inputs) alone
    same_cache = cache_entries(work / "cache-scale-1process") == cache_entries(caches["2 ranks"])
    rows += scale
    weak, strong = speedup(scale, "2 ranks"), speedup(scale, "2 ranks, same global batch")
    one, two = (next(r for r in scale if r["round"] == 0 and r["mode"] == m)
                for m in ("1 process", "2 ranks"))
    cache_speedup = one["teacher_outputs_s"] / two["teacher_outputs_s"]  # round 0 built both caches

    goals = {
        "default_run_from_empty_caches_s": {"value": demo["wall_s"], "goal": "<= 180",
                                            "met": demo["wall_s"] <= 180},
        "default_run_accuracy_change_vs_1_thread_teacher_pt": {
            "value": change_vs_before,
            "goal": "|change| <= 0.3 for the teacher and every student (one run each: 0.1 point is one test "
                    "input of 1,000)",
            "met": all(abs(v) <= 0.3 for v in change_vs_before.values())},
        "default_run_accuracy_change_pt": {
            "value": round(100 * max_acc_diff, 2), "goal": "<= 0.3 (vs one process)",
            "met": max_acc_diff <= 0.003, "checkpoints_byte_identical": same_bytes},
        "ddp_2_ranks_student_accuracy_change_pt": {
            "value": {k: round(100 * v, 2) for k, v in diffs.items()},
            "goal": f"|mean over {args.seeds} seeds| <= 0.3",
            "met": all(abs(v) <= 0.003 for v in diffs.values())},
        "cache_2_ranks_byte_identical": {"value": same_cache, "goal": True, "met": same_cache},
        "train_speedup_2_ranks": {
            "value": round(weak, 2), "met": weak >= 1.6,
            "goal": f">= 1.6 (256 samples per rank and step; median of {args.rounds} rounds)",
            "same_global_batch_256": round(strong, 2)},
        "cache_build_speedup_2_ranks": {"value": round(cache_speedup, 2), "goal": ">= 1.7",
                                        "met": cache_speedup >= 1.7},
    }
    write(args.out, {"rows": rows, "goals": goals, "environment": environment()})
    print_goals(goals)


if __name__ == "__main__":
    main()
