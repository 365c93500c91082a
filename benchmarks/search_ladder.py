"""The search against the built-in recipe: students found under device budgets on MNIST-1D, pruning's
saving, two workers against one, and the ladder's monotonicity.

    python benchmarks/search_ladder.py --out results/search_ladder.json [--work DIR] [--trials 40]
        [--scaling-trials 12]

Steps (each reuses what an earlier run left in --work):
1. `edgekd run` of the built-in recipe: its teacher, and its two students' files measured here and on
   every simulated target. The search reuses that teacher (its checkpoint), so both sides learn from it.
2. Three budgets, set from the default students' own files by a fixed rule (so neither side picks them):
   the A17 Pro Neural Engine at the profile's fixed cost per inference plus 0.7x what the fastest default
   file adds to it (no default student meets it; 0.7x the whole latency fell below that fixed cost, which
   no network can meet, once the profile was fitted to published A17 Pro runs), a Cortex-A78
   at the 30x student's fastest file (only the 30x meets it), and the host's TFLite at the 10x student's
   fastest file (both meet it).
3. The same search twice, `--trials` each, one worker: without the pruner, then with it on the same
   candidates (the first search's, queued rung by rung in their order), so the two differ only in what
   the pruner stops.
4. Scaling: a search whose trials all cost the same (fixed width, depth and epochs; the host budget
   alone, so none is prescreened away) on one worker and on two (1 torch thread each),
   `--scaling-trials` trials each; trials/hour from the storage's timestamps.
5. The ladder of the pruned search over four budgets per target (edgekd ladder): rungs must be monotone.
6. Held out: each budget's winner on each side (the pruned search's best file, the default's best file
   that meets it, both picked on the 1,000-signal test split as `edgekd` picks them) measured again on
   `--heldout` fresh MNIST-1D signals that neither side trained or was chosen on (the generator at a seed
   of their own), against the teacher on the same signals. Picking the best of 40 trials on 1,000 test
   signals favours a trial the test split happens to suit; the fresh signals say whether it is better.
7. Where both sides meet a budget, the search's winner for it trained again on the default's whole
   transfer set (the ladder's rungs/BUDGET.full.yaml: the search's trials use a 20,000-input proxy of it,
   SEARCH["transfer_samples"]; the default students learn from all of it), exported and measured the same
   way: the student the search found, trained as the default's are. The "beats the default" bar reads it
   when its file still meets the budget (else the searched file; per_budget says which), and counts a
   budget as beaten only when the paired 95% interval of the margin lies above 0.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent))
from _common import environment, print_goals, write  # noqa: E402

SEARCH = {"archs": ["cnn1d"], "width": [0.05, 0.6], "depth": [2, 5], "temperature": [1.0, 8.0],
          "alpha": [0.0, 0.5], "lr": [0.001, 0.01], "epochs": [4, 24], "transfer_samples": 20000,
          # the modes that set latency (palettes change size, not speed, and no budget here is on size)
          "quants": ["fp32", "fp16", "int8", "dynamic-int8", "full-int8"]}
TARGETS = ("apple-a17-pro-ane", "arm-cortex-a78", "tflite")  # tflite: the host's interpreter, measured


def default_run(work: Path) -> tuple[dict, list, float]:
    """The built-in recipe through `edgekd run` (reused when finished): (recipe dict, bench rows, seconds)."""
    from edgekd import pipeline
    from edgekd.config import default_recipe_path, load_recipe
    from edgekd.gate.verdict import load_bench_rows

    recipe, path = load_recipe(default_recipe_path())
    out = work / "default"
    t0 = time.perf_counter()
    pipeline.run(recipe, path, out, progress=print)
    rows = [b.row for b in load_bench_rows([out / "bench" / s.name / "bench.json" for s in recipe.students])]
    return yaml.safe_load(path.read_text()), rows, time.perf_counter() - t0


def default_files(rows) -> list[dict]:
    """Each default file with its retention and latency on each measured target."""
    files: dict[tuple, dict] = {}
    for r in rows:
        if not r.ok or r.format == "torch":
            continue
        f = files.setdefault((r.model, r.artifact), {"model": r.model, "artifact": r.artifact,
                                                     "format": r.format, "size_bytes": r.size_bytes,
                                                     "latency_ms": {}})
        if r.kind == "measured":
            f["retention"] = r.retention
        if r.latency_ms_p50 is not None and r.where in TARGETS:
            f["latency_ms"][r.where] = r.latency_ms_p50
    return list(files.values())


def budgets_from(files: list[dict], targets: dict) -> list[str]:
    def fastest(where, model=None):
        return min(f["latency_ms"][where] for f in files
                   if where in f["latency_ms"] and (model is None or f["model"] == model))

    def sig(v):
        return float(f"{v:.3g}")

    # below the profile's fixed cost per inference no network runs: cut the part the network adds
    floor = targets["apple-a17-pro-ane"].invoke_overhead_us / 1000
    a17 = floor + 0.7 * (fastest("apple-a17-pro-ane") - floor)
    return [f"apple-a17-pro-ane={sig(a17)}",
            f"arm-cortex-a78={sig(fastest('arm-cortex-a78', 'cnn1d-30x'))}",
            f"host={sig(fastest('tflite', 'cnn1d-10x'))}"]


def default_best(files: list[dict], budget) -> dict | None:
    """The default file with the highest retention (on the test split) that meets `budget`."""
    ok = [f for f in files if f.get("retention") is not None
          and f["latency_ms"].get(budget.where, float("inf")) <= budget.latency_ms]
    return max(ok, key=rank) if ok else None


def rank(f: dict) -> tuple:
    return (f["retention"], -f["size_bytes"])  # as edgekd.search.budgets.rank: ties go to the smaller file


HELDOUT_SEED = 2_000_000  # the generator's seed for held-out signals: apart from the split (42), the
# transfer sets (10,000 + k) and the pruner's inputs (1,010,003)


def heldout(work: Path, n: int):
    """`n` fresh labelled MNIST-1D signals, normalised as the default recipe's data, and the default
    teacher's accuracy on them."""
    import torch
    from mnist1d.data import get_dataset_args

    from edgekd.checkpoint import load_checkpoint
    from edgekd.data import load_dataset
    from edgekd.data.mnist1d import signals
    from edgekd.distill.train import accuracy

    args = get_dataset_args()
    args.seed, args.num_samples = HELDOUT_SEED, n
    x, y = signals(args)
    x = load_dataset("mnist1d").normalise(x[:, None, :])
    _, teacher = load_checkpoint(work / "default" / "teacher")
    with torch.no_grad():
        return x, y, accuracy(teacher, x, y)


def paired(right_a, right_b, teacher_acc: float) -> dict:
    """a's retention less b's on the same inputs, with its 95% interval (paired: only the inputs one gets
    right and the other wrong move it)."""
    import numpy as np

    n = len(right_a)
    only_a, only_b = int(np.sum(right_a & ~right_b)), int(np.sum(~right_a & right_b))
    diff = (only_a - only_b) / n
    se = ((only_a + only_b) - (only_a - only_b) ** 2 / n) ** 0.5 / n
    return {"margin": round(diff / teacher_acc, 5),
            "interval_95": [round((diff + z * se) / teacher_acc, 5) for z in (-1.96, 1.96)],
            "inputs_only_search_right": only_a, "inputs_only_default_right": only_b}


def held_right(path: Path, fmt: str, x, y):
    """Which held-out signals an exported file (of format `fmt`) gets right."""
    from edgekd.runtimes import load_runner

    return load_runner(fmt, path, threads=1).predict(x).argmax(1) == y


def full_data_winner(work: Path, budget) -> tuple[Path, dict, bool] | None:
    """The pruned search's winner for `budget` trained on the default's whole transfer set (the ladder's
    rungs/BUDGET.full.yaml) through `edgekd run`: (its exported file, that file's record as default_files
    gives it, whether it still meets the budget), or None when the search met no such budget."""
    from edgekd import pipeline
    from edgekd.config import load_recipe
    from edgekd.gate.verdict import load_bench_rows

    path = work / "pruned" / "ladder" / "rungs" / f"{budget.slug}.full.yaml"
    if not path.exists():
        return None
    recipe, _ = load_recipe(path)
    out = work / "full-data" / budget.slug
    pipeline.run(recipe, path, out, progress=print)  # its gate's verdict does not matter here, the file's
    # measurements do
    student = recipe.students[0].name
    rows = [b.row for b in load_bench_rows([out / "bench" / student / "bench.json"])]
    made = [f for f in default_files(rows) if f.get("retention") is not None]
    if not made:
        return None
    meeting = default_best(made, budget)
    f = meeting or max(made, key=rank)
    return out / "export" / student / f["artifact"], f, meeting is not None


def run_search(work: Path, name: str, base: dict, search: dict, budgets, trials: int, workers: int) -> dict:
    from edgekd.config import load_recipe
    from edgekd.search import search as edgekd_search

    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**base, "name": name, "search": search}))
    recipe, _ = load_recipe(path)
    t0 = time.perf_counter()
    summary = edgekd_search(recipe, work / name, budgets, trials=trials, workers=workers, progress=print)
    return {"summary": summary, "wall_s": time.perf_counter() - t0, "recipe": name,
            "url": f"sqlite:///{work / name / 'study.db'}"}


def replay(work: Path, name: str, base: dict, search: dict, budgets, source_url: str, source: str) -> None:
    """Queue the source search's candidates, rung by rung in their order, into this search's studies: the
    two searches then train the same students, and differ only in what this one's pruner stops."""
    import optuna

    from edgekd import pipeline
    from edgekd.config import load_recipe
    from edgekd.search.stage import study_key
    from edgekd.search.study import HEARTBEAT_S, open_storage, open_studies, study_name

    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**base, "name": name, "search": search}))
    recipe, _ = load_recipe(path)
    (work / name).mkdir(parents=True, exist_ok=True)
    storage = open_storage(f"sqlite:///{work / name / 'study.db'}", HEARTBEAT_S)
    studies = open_studies(storage, name, budgets, study_key(recipe, pipeline.load_data(recipe), None),
                           space=recipe.search, seed=recipe.seed)
    for b, study in zip(budgets, studies):
        if study.trials:
            continue  # queued (or run) before
        for t in optuna.load_study(study_name=study_name(source, b), storage=source_url).trials:
            study.enqueue_trial(t.params)


def trial_rows(url: str, recipe: str, budgets) -> list[dict]:
    import optuna

    from edgekd.search.budgets import FileResult, best_file

    rows = []
    for s in optuna.get_all_study_summaries(url):
        if not s.study_name.startswith(f"edgekd:{recipe}:"):
            continue
        for t in optuna.load_study(study_name=s.study_name, storage=url).trials:
            files = [FileResult(**f) for f in t.user_attrs.get("files", [])]
            best = {b.key: getattr(best_file(files, b, None), "retention", None) for b in budgets}
            rows.append({"study": recipe, "rung": s.study_name.rsplit(":", 1)[-1], "number": t.number,
                         "state": t.state.name, "student": t.user_attrs.get("student"),
                         "params": t.user_attrs.get("params"), "seconds": t.user_attrs.get("seconds"),
                         "outcome": t.user_attrs.get("outcome"), "best_retention_per_budget": best,
                         "start": t.datetime_start.timestamp() if t.datetime_start else None,
                         "end": t.datetime_complete.timestamp() if t.datetime_complete else None})
    return rows


def trials_per_hour(rows: list[dict]) -> float:
    done = [r for r in rows if r["state"] in ("COMPLETE", "PRUNED")]
    span = max(r["end"] for r in done) - min(r["start"] for r in done)
    return 3600 * len(done) / span


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--work", help="folder for the runs (reused); default: a new temporary folder")
    ap.add_argument("--trials", type=int, default=40)
    ap.add_argument("--scaling-trials", type=int, default=12)
    ap.add_argument("--heldout", type=int, default=20000, help="fresh signals the winners are measured on")
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="edgekd-search-"))
    work.mkdir(parents=True, exist_ok=True)

    from edgekd.bench.targets import all_targets
    from edgekd.search import write_ladder
    from edgekd.search.budgets import parse_budgets

    base, rows, default_s = default_run(work)
    files = default_files(rows)
    targets = all_targets()
    budget_texts = budgets_from(files, targets)
    budgets = parse_budgets(budget_texts, targets)
    base["teacher"] = {"checkpoint": str((work / "default" / "teacher").resolve()),
                       "min_accuracy": base["teacher"]["min_accuracy"]}
    print("budgets:", ", ".join(budget_texts))

    unpruned = run_search(work, "unpruned", base, {**SEARCH, "pruner": "none"}, budgets, args.trials, 1)
    replay(work, "pruned", base, {**SEARCH, "pruner": "ladder"}, budgets, unpruned["url"], "unpruned")
    pruned = run_search(work, "pruned", base, {**SEARCH, "pruner": "ladder"}, budgets, args.trials, 1)
    fixed = {**SEARCH, "width": [0.25, 0.25], "depth": [4, 4], "epochs": [6, 6], "pruner": "none"}
    host = [b for b in budgets if b.measured]  # no trial is prescreened away: every one trains
    one = run_search(work, "workers1", base, fixed, host, args.scaling_trials, 1)
    two = run_search(work, "workers2", base, fixed, host, args.scaling_trials, 2)

    trows = {r["recipe"]: trial_rows(r["url"], r["recipe"], budgets) for r in (pruned, unpruned, one, two)}
    def best_of(name, key):
        return max((r["best_retention_per_budget"][key] or 0 for r in trows[name]), default=0) or None

    best = {name: {b.key: best_of(name, b.key) for b in budgets} for name in ("pruned", "unpruned")}
    searched = {b.key: max(filter(None, [best["pruned"][b.key], best["unpruned"][b.key]]), default=None)
                for b in budgets}
    per_budget = {}
    ladder_json = json.loads((work / "pruned" / "ladder" / "ladder.json").read_text())
    rung_winner = {r["budget"]: r for r in ladder_json["rungs"]}
    x_held, y_held, teacher_held_acc = heldout(work, args.heldout)
    for b in budgets:
        d_file, s = default_best(files, b), best["pruned"][b.key]
        d = d_file["retention"] if d_file else None
        per_budget[b.key] = {"default_best_retention": d, "search_best_retention": s,
                             "search_best_either_study": searched[b.key],
                             "margin_test_split": None if d is None or s is None else round(s - d, 4)}
        # the same two files on the held-out signals (the search's: its ladder's rung winner)
        win = rung_winner.get(b.key)
        right = {}
        if win is not None and win["met"]:
            rung, number = win["trial"].rsplit("#", 1)
            trial = f"{rung.replace('=', '-')}-{int(number):03d}"
            path = work / "pruned" / "trials" / trial / "export" / win["file"]
            right["search"] = (path, held_right(path, win["format"], x_held, y_held))
        if d_file is not None:
            path = work / "default" / "export" / d_file["model"] / d_file["artifact"]
            right["default"] = (path, held_right(path, d_file["format"], x_held, y_held))
        held = {k: {"file": str(p.relative_to(work)),
                    "retention": round(float(r.mean()) / teacher_held_acc, 5)} for k, (p, r) in right.items()}
        if len(right) == 2:
            held["search_vs_default"] = paired(right["search"][1], right["default"][1], teacher_held_acc)
        full = full_data_winner(work, b) if "default" in right and "search" in right else None
        if full is not None:
            path, f, meets = full
            got = held_right(path, f["format"], x_held, y_held)
            held["search_full_data"] = {"file": str(path.relative_to(work)), "meets_budget": meets,
                                        "latency_ms": f["latency_ms"].get(b.where),
                                        "retention_test_split": f["retention"],
                                        "retention": round(float(got.mean()) / teacher_held_acc, 5),
                                        "vs_default": paired(got, right["default"][1], teacher_held_acc)}
        # what the bar reads: the full-data winner against the default while it meets the budget, else the
        # searched file; beaten only when the paired interval lies above 0 (one input is not a win)
        full_ok = held.get("search_full_data", {}).get("meets_budget")
        vs = held["search_full_data"]["vs_default"] if full_ok else held.get("search_vs_default")
        per_budget[b.key].update(heldout=held, margin_from=(
            "full-data winner" if full_ok else "searched file" if vs else None), margin=(
            vs["margin"] if vs else "default meets none" if "search" in held else "search meets none"))
        per_budget[b.key]["beats"] = "search" in held and (vs is None or vs["interval_95"][0] > 0)
    # what each rung's own study found (without the ladder's ranking of every trial for every budget)
    for b in budgets:
        own = [r["best_retention_per_budget"][b.key] for r in trows["pruned"]
               if r["rung"] == b.key and r["best_retention_per_budget"][b.key] is not None]
        per_budget[b.key]["own_study_best_retention"] = max(own, default=None)
    # a ladder of four budgets per target from the pruned search's trials
    levels = []
    for b in budgets:
        levels += [f"{b.name}={float(f'{b.latency_ms * m:.3g}')}" for m in (0.5, 1.0, 2.0, 4.0)]
    ladder = write_ladder(work / "pruned", pruned["url"], budgets=parse_budgets(levels, targets),
                          dest=work / "pruned" / "ladder-levels")

    t_pruned = pruned["summary"]["trials"]["trial_seconds"]
    t_unpruned = unpruned["summary"]["trials"]["trial_seconds"]
    saving = 1 - t_pruned / t_unpruned
    # without drift: the time the stopped trials saved against their twins (same rung, number and student)
    # in the search without the pruner, over that whole search's time; the trials both searches ran to the
    # end are left out (in one long-lived process they slow down from the first search to the second)
    twin = {(r["rung"], r["number"]): r for r in trows["unpruned"]}
    stopped = [(twin[key]["seconds"], r["seconds"]) for r in trows["pruned"]
               if r["state"] == "PRUNED" and r["seconds"] is not None
               and twin.get(key := (r["rung"], r["number"]), {}).get("student") == r["student"]
               and twin[key]["state"] == "COMPLETE" and twin[key]["seconds"] is not None]
    saved = sum(u - p for u, p in stopped)
    saving_without_drift = saved / t_unpruned
    stopped_trials_saving = saved / sum(u for u, _ in stopped) if stopped else 0.0
    # a budget the search without the pruner met and the pruned one did not counts as all of it lost
    drops = [best["unpruned"][k] - (best["pruned"][k] or 0.0) for k in best["pruned"]
             if best["unpruned"][k] is not None]
    speedup = trials_per_hour(trows["workers2"]) / trials_per_hour(trows["workers1"])
    goals = {
        "search_beats_default_per_budget": {
            "value": {k: v["margin"] for k, v in per_budget.items()},
            "goal": f"within {args.trials} trials, a student beating the default's best under every budget "
                    f"(retention margin on {args.heldout:,} held-out signals, its paired 95% interval above "
                    "0; the winner trained on the default's whole transfer set where both meet the budget)",
            "met": all(v["beats"] for v in per_budget.values())},
        "two_workers_trials_per_hour_ratio": {"value": round(speedup, 3), "goal": 1.6, "met": speedup >= 1.6},
        "pruning_time_saving": {"value": round(saving, 3), "goal": 0.30, "met": saving >= 0.30,
                                "saving_without_drift": round(saving_without_drift, 3),
                                "saving_on_the_stopped_trials": round(stopped_trials_saving, 3),
                                "trials_stopped": len(stopped)},
        "pruning_best_retention_drop_points": {
            "value": round(100 * max(drops), 3) if drops else None, "goal": 0.2,
            "met": bool(drops) and 100 * max(drops) <= 0.2},
        "ladder_monotone": {"value": ladder["monotone_problems"] or "monotone", "goal": "monotone",
                            "met": not ladder["monotone_problems"]},
    }
    result = {
        "environment": environment(), "budgets": budget_texts, "search_space": SEARCH,
        "default_run_s": round(default_s, 1), "default_files": files, "per_budget": per_budget,
        "heldout": {"signals": args.heldout, "seed": HELDOUT_SEED, "teacher_accuracy": teacher_held_acc},
        "studies": {r["recipe"]: {"wall_s": round(r["wall_s"], 1), **r["summary"]["trials"]}
                    for r in (pruned, unpruned, one, two)},
        "trials_per_hour": {"1 worker": round(trials_per_hour(trows["workers1"]), 1),
                            "2 workers": round(trials_per_hour(trows["workers2"]), 1)},
        "ladder_levels": ladder["rungs"],
        "rows": [r for name in trows for r in trows[name]],
        "goals": goals,
    }
    write(args.out, result)
    print_goals(goals)


if __name__ == "__main__":
    main()
