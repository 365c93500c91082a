"""How much a quantised file's agreement with PyTorch varies when nothing is wrong: the spread that
per-mode parity thresholds must sit below (issue 9, "parity thresholds that mean something").

    python benchmarks/parity_spread.py --out results/parity_spread.json [--run DIR] [--seeds 0,1,2]

The built-in recipe's students (10x, 30x) are trained at several seeds (one teacher), and every file of
every mode is exported with no threshold and checked on the whole test split (1,000 inputs), under 1 and 2
torch threads (the reference's CPU rounding changes with the thread count, as it does from machine to
machine). Per mode it reports the lowest agreement seen and its 95% interval, and checks that no
healthy file would be dropped under the shipped defaults and the interval rule.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import distilled_run, environment, print_goals, write  # noqa: E402


def main() -> None:
    import argparse

    import torch

    from edgekd.checkpoint import load_checkpoint
    from edgekd.config import ExportConfig
    from edgekd.distill import distill_student
    from edgekd.export import export_checkpoint
    from edgekd.pipeline import load_data

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--run", help="an existing `edgekd distill` output directory of the built-in recipe")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rows", help="judge the rows of an earlier run's JSON against today's defaults "
                                   "instead of exporting again (the rows are the raw measurements)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    if args.rows:
        import json

        rows = json.loads(Path(args.rows).read_text())["rows"]
        return report(args.out, rows, t0, "(rows from " + args.rows + ")")
    recipe, run = distilled_run(args.run, "edgekd-parity-")
    data = load_data(recipe)
    teacher_ckpt, teacher = load_checkpoint(run / "teacher")
    students = []
    for seed in (int(s) for s in args.seeds.split(",")):
        for s in recipe.students:
            if seed == recipe.seed:
                students.append((seed, s.name, run / "students" / s.name))
                continue
            d = recipe.distill
            r = distill_student(data, teacher_ckpt, teacher, run / f"seed{seed}", name=s.name, spec=s.spec(),
                                temperature=d.temperature, alpha=d.alpha,
                                transfer_samples=recipe.data.transfer_samples, use_transfer=d.use_transfer,
                                cache_dir=recipe.cache_dir, seed=seed, **recipe.student_train(s).model_dump())
            students.append((seed, s.name, r.checkpoint))

    defaults = ExportConfig()
    no_threshold = {**defaults.model_dump(), "parity_samples": None,
                    "min_top1_agreement": {"default": 0.0}, "fp32_max_abs_diff": 1.0}
    rows = []
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        for seed, name, ckpt in students:
            dest = run / "parity" / f"t{threads}" / f"seed{seed}" / name
            for a in export_checkpoint(ckpt, dest, **no_threshold, data=data, threads=threads):
                p = a.parity
                rows.append({"threads": threads, "seed": seed, "student": name, "format": a.format,
                             "quant": a.quant, "top1_agreement": p.top1_agreement, "top1_ci95": p.top1_ci95,
                             "max_abs_diff": p.max_abs_diff, "n": p.n})
            print(f"threads {threads} seed {seed} {name}: {len(rows)} rows so far", flush=True)

    report(args.out, rows, t0, str(run))


def report(out: str, rows: list[dict], t0: float, run: str) -> None:
    """Per mode: the lowest agreement seen; every healthy file judged against today's defaults."""
    from edgekd.config import ExportConfig
    from edgekd.parity import parity_failure
    from edgekd.types import Parity

    defaults = ExportConfig()
    modes: dict[str, list[dict]] = {}
    for r in rows:
        modes.setdefault(f"{r['format']}/{r['quant']}", []).append(r)
    summary, dropped = {}, []
    for mode, rs in sorted(modes.items()):
        worst = min(rs, key=lambda r: r["top1_agreement"])
        quant = mode.split("/")[1]
        required = 1.0 if quant == "fp32" else defaults.min_top1_agreement.get(
            quant, defaults.min_top1_agreement["default"])
        for r in rs:
            parity = Parity(r["top1_agreement"], r["max_abs_diff"], 1.0, 0.0, r["n"], tuple(r["top1_ci95"]))
            why = parity_failure(parity, required, defaults.fp32_max_abs_diff if quant == "fp32" else None)
            if why:
                dropped.append({**r, "required": required, "why": why})
        summary[mode] = {"files": len(rs), "min_agreement": worst["top1_agreement"],
                         "min_ci95": worst["top1_ci95"],
                         "mean_agreement": sum(r["top1_agreement"] for r in rs) / len(rs),
                         "required_default": required}
    n_min = min(r["n"] for r in rows)
    goals = {
        "parity_inputs_per_file": {"value": n_min, "goal": ">= 1000 (the whole test split)",
                                   "met": n_min >= 1000},
        "healthy_files_dropped_under_defaults": {"value": len(dropped), "goal": 0, "met": not dropped},
        "interval_recorded": {"value": all(r["top1_ci95"] for r in rows), "goal": True,
                              "met": all(r["top1_ci95"] for r in rows)},
    }
    write(out, {"benchmark": "parity_spread", "environment": environment(), "run": run,
                     "seconds": round(time.perf_counter() - t0, 1), "summary": summary, "dropped": dropped,
                     "rows": rows, "goals": goals})
    for mode, s in summary.items():
        print(f"{mode:22s} files {s['files']:2d}  min {s['min_agreement']:.4f}  ci {s['min_ci95']}  "
              f"mean {s['mean_agreement']:.4f}  default {s['required_default']}")
    print_goals(goals)


if __name__ == "__main__":
    main()
