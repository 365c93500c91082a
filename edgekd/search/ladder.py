"""The ladder: from a study's trials, the best student per budget (one teacher, several students), the
Pareto front of retention against latency per target, and each rung's winner as a recipe `edgekd run`
takes as is. Drawn from the storage alone, so `edgekd search --report` and `edgekd ladder` never train.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import yaml

from edgekd.errors import InputError
from edgekd.fileio import atomic_path, write_json
from edgekd.metrics import wilson_interval
from edgekd.report.pareto import pareto_front
from edgekd.search.budgets import FileResult, best_file, rank
from edgekd.search.study import HEARTBEAT_S, PREFIX, describe_url, open_storage
from edgekd.types import Budget

PLATFORM = {"coreml": "ios", "tflite": "android", "onnx": "onnx"}  # the bundle a rung's file ships as


@dataclass(frozen=True)
class TrialRecord:
    """A finished trial as the storage keeps it."""

    study: str
    number: int
    state: str  # "COMPLETE" | "PRUNED"
    student: dict  # edgekd.search.space.Candidate fields
    seed: int
    params: int | None
    files: tuple[FileResult, ...]
    seconds: float
    outcome: str

    @property
    def label(self) -> str:
        return f"{self.study.rsplit(':', 1)[-1]}#{self.number}"


@dataclass(frozen=True)
class Rung:
    budget: Budget
    trial: TrialRecord | None
    file: FileResult | None
    # the winner's retention as a 95% interval on the test split, and how many other trials' best files
    # for this budget lie inside that interval of its own (a cautious count: a paired comparison on the
    # same inputs is tighter; None: unknown)
    interval: tuple[float, float] | None = None
    within: int | None = None


def load_records(url: str, recipe_name: str, recipe_sha256: str | None,
                 max_size_bytes: int | None) -> tuple[list[TrialRecord], list[str]]:
    """Every finished trial of every study of this search in the storage: its recipe's name, inputs and
    size limit. Returns (trials, studies of the same name that were left out, and why)."""
    import optuna
    from optuna.trial import TrialState

    storage = open_storage(url, HEARTBEAT_S)
    records, ignored = [], []
    for s in optuna.get_all_study_summaries(storage, include_best_trial=False):
        if not s.study_name.startswith(f"{PREFIX}:{recipe_name}:"):
            continue
        attrs = s.user_attrs
        if recipe_sha256 is not None and attrs.get("recipe_sha256") != recipe_sha256:
            ignored.append(f"{s.study_name} (another recipe of the same name)")
            continue
        if attrs.get("max_size_bytes") != max_size_bytes:
            ignored.append(f"{s.study_name} (max_size_bytes {attrs.get('max_size_bytes')})")
            continue
        study = optuna.load_study(study_name=s.study_name, storage=storage)
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
            a = t.user_attrs
            records.append(TrialRecord(
                study=s.study_name, number=t.number, state=t.state.name, student=a.get("student", {}),
                seed=a["seed"], params=a.get("params"),
                files=tuple(FileResult(**f) for f in a.get("files", [])), seconds=a.get("seconds", 0.0),
                outcome=a.get("outcome", "")))
    return records, ignored


def rungs(records: list[TrialRecord], budgets: list[Budget], max_size_bytes: int | None,
          test: tuple[int, float] | None = None) -> list[Rung]:
    """For each budget, the trial file with the best retention that meets it, across all trials (every
    trial was measured on every budget of its search, whichever rung's study ran it). With `test` (the
    test split's size, the teacher's accuracy on it): the winner's 95% interval, and the other trials
    inside it. The best of many trials on one test split is partly the trial the split happens to suit
    (benchmarks/search_ladder.py measures winners again on fresh signals; README)."""
    out = []
    for b in budgets:
        found = [(r, f) for r in records if (f := best_file(list(r.files), b, max_size_bytes)) is not None]
        best = max(found, key=lambda rf: rank(rf[1]), default=(None, None))
        if best[1] is None or test is None:
            out.append(Rung(b, *best))
            continue
        n, teacher_accuracy = test
        lo, hi = (x / teacher_accuracy for x in
                  wilson_interval(round(best[1].retention * teacher_accuracy * n), n))
        within = sum(1 for r, f in found if r is not best[0] and f.retention >= lo)
        # rounded outwards, so the rounded band still holds the retention
        out.append(Rung(b, *best, (math.floor(lo * 1e5) / 1e5, math.ceil(hi * 1e5) / 1e5), within))
    return out


def monotone(ladder: list[Rung]) -> list[str]:
    """Where a larger budget on the same target got a worse student than a smaller one (empty: none)."""
    problems = []
    by_where: dict[str, list[Rung]] = {}
    for r in ladder:
        by_where.setdefault(r.budget.where, []).append(r)
    for where, rs in by_where.items():
        rs = sorted(rs, key=lambda r: r.budget.latency_ms)
        for small, large in zip(rs, rs[1:]):
            if small.file is not None and (large.file is None or large.file.retention < small.file.retention):
                problems.append(f"{large.budget.key} got a worse student than {small.budget.key}")
    return problems


def fronts(records: list[TrialRecord]) -> dict[str, list[tuple[float, float, str]]]:
    """Per runner or target: the (latency ms, retention, trial/file) points no other file beats on both."""
    points: dict[str, list[tuple[float, float, str]]] = {}
    for r in records:
        for f in r.files:
            if f.retention is None:
                continue
            for where, ms in f.latency_ms.items():
                points.setdefault(where, []).append((ms, f.retention, f"{r.label} {f.artifact}"))
    return {w: sorted(p[i] for i in pareto_front([(x, y) for x, y, _ in p])) for w, p in points.items()}


def write_ladder(out: Path, url: str, budgets: list[Budget] | None = None, dest: Path | None = None) -> dict:
    """ladder.json, ladder.md, pareto.png and rungs/*.yaml in `dest` (default OUT/ladder), for `budgets`
    (default: the search's own), from the study in the storage alone."""
    from edgekd.search.stage import read_search

    out = Path(out)
    record = read_search(out)
    recipe = record["recipe"]  # as the search dumped it (all fields)
    max_size = record.get("max_size_bytes")
    explicit = budgets is not None
    budgets = budgets or [Budget(**b) for b in record["budgets"]]
    records, ignored = load_records(url, recipe["name"], record.get("recipe_sha256"), max_size)
    if explicit:  # budgets the search itself did not name must be on a runner or target it measured
        measured_on = {w for r in records for f in r.files for w in f.latency_ms}
        for b in budgets:
            if b.where not in measured_on:
                raise InputError(f"--budget {b.key}: no trial of this search was measured on {b.where!r} "
                                 f"(measured: {', '.join(sorted(measured_on)) or 'nothing yet'}); run "
                                 "`edgekd search` with a budget on it")
    test = (record["test_samples"], record["teacher_accuracy"]) if "test_samples" in record else None
    ladder = rungs(records, budgets, max_size, test)
    dest = Path(dest or out / "ladder")
    (dest / "rungs").mkdir(parents=True, exist_ok=True)
    proxy = _proxy(recipe)
    # a ladder drawn again (other budgets, a search resumed) keeps no rung recipe it no longer has
    now = {f"{r.budget.slug}{x}" for r in ladder if r.trial is not None
           for x in (".yaml", ".policy.yaml", *((".full.yaml",) if proxy else ()))}
    for old in (dest / "rungs").glob("*.yaml"):
        if old.name not in now:
            old.unlink()
    floor = _policy_floor()
    for r in ladder:
        if r.trial is not None:
            _write_rung_recipe(dest / "rungs", recipe, r, max_size, out / "teacher")
            if proxy:
                _write_rung_recipe(dest / "rungs", recipe, r, max_size, out / "teacher", full=True)
    front = fronts(records)
    summary = {
        "recipe": recipe["name"],
        "storage": describe_url(url),
        "max_size_bytes": max_size,
        "trials": {
            "finished": len(records),
            "complete": sum(r.state == "COMPLETE" for r in records),
            "pruned": sum(r.state == "PRUNED" for r in records),
            "trial_seconds": round(sum(r.seconds for r in records), 1),
        },
        "ignored_studies": ignored,
        "transfer_proxy": proxy,
        "rungs": [_rung_dict(r, proxy is not None, floor) for r in ladder],
        "policy_min_retention": floor,
        "monotone_problems": monotone(ladder),
        "fronts": {
            w: [{"latency_ms": x, "retention": y, "file": lab} for x, y, lab in p]
            for w, p in front.items()
        },
    }
    write_json(dest / "ladder.json", summary)
    with atomic_path(dest / "ladder.md") as tmp:
        tmp.write_text(_markdown(summary))
    _plot(front, ladder, dest / "pareto.png")
    summary["dir"] = str(dest)
    return summary


def _policy_floor() -> float | None:
    """The min_retention every rung recipe's policy holds (the built-in policy's)."""
    from edgekd.config import load_policy

    return load_policy(None).min_retention


def _rung_dict(r: Rung, proxy: bool, floor: float | None) -> dict:
    d = {"budget": r.budget.key, "where": r.budget.where, "latency_budget_ms": r.budget.latency_ms}
    if r.trial is None:
        return {**d, "met": False}
    return {
        **d,
        "met": True,
        "trial": r.trial.label,
        "student": r.trial.student,
        "params": r.trial.params,
        "file": r.file.artifact,
        "format": r.file.format,
        "quant": r.file.quant,
        "size_bytes": r.file.size_bytes,
        "sha256": r.file.sha256,
        "retention": r.file.retention,
        # below the rung recipe's policy floor: `edgekd run` on it trains this student and fails its gate
        "below_policy": floor is not None and (r.file.retention or 0.0) < floor,
        **({"retention_interval_95": list(r.interval), "trials_within_interval": r.within}
           if r.interval is not None else {}),
        "latency_ms": r.file.latency_ms.get(r.budget.where),
        "recipe": f"rungs/{r.budget.slug}.yaml",
        **({"recipe_full_data": f"rungs/{r.budget.slug}.full.yaml"} if proxy else {}),
    }


def _proxy(recipe: dict) -> list[int] | None:
    """[the trials' transfer-set size, the recipe's] when the search trained its trials on a smaller
    transfer set than the recipe's own (a cheaper proxy), else None."""
    n, full = recipe["search"]["transfer_samples"], recipe["data"]["transfer_samples"]
    return [n, full] if n is not None and n < full and recipe["distill"]["use_transfer"] else None


def _write_rung_recipe(
    folder: Path, recipe: dict, r: Rung, max_size: int | None, teacher: Path, full: bool = False
) -> None:
    """The winner as a recipe: the same teacher and data, this trial's student and KD settings, its file's
    format and mode, and a policy holding the budget. `edgekd run` on it trains the same student. With
    `full` (BUDGET.full.yaml): the same student trained on the recipe's whole transfer set instead of the
    trials' proxy, as the recipe's own students are (on MNIST-1D, benchmarks/search_ladder.py, this took
    an A78 winner from 0.9972 to 0.9989 retention on 20,000 fresh signals)."""
    s, f, b = r.trial.student, r.file, r.budget
    import copy

    rec = {k: copy.deepcopy(v) for k, v in recipe.items() if k != "search"}
    rec["name"] = f"{recipe['name']}-{b.slug}" + ("-full" if full else "")
    rec["seed"] = r.trial.seed
    if rec["teacher"]["checkpoint"] is None:  # the search's own teacher: the same one the trial learned from
        rec["teacher"]["checkpoint"] = str(teacher.resolve())
    rec["students"] = [
        {
            "name": f"{b.slug}",
            "arch": s["arch"],
            "width": s["width"],
            **({"depth": s["depth"]} if s.get("depth") else {}),
        }
    ]
    rec["distill"].update(temperature=s["temperature"], alpha=s["alpha"])
    rec["distill"]["train"].update(epochs=s["epochs"], lr=s["lr"])
    if recipe["search"]["transfer_samples"] is not None and not full:  # what the trial trained on
        rec["data"]["transfer_samples"] = recipe["search"]["transfer_samples"]
    rec["export"].update(formats=[f.format], quants=[f.quant])
    rec["bench"]["targets"] = [] if b.measured else [b.where]
    rec["bundle"]["platforms"] = {PLATFORM[f.format]: f.format}
    policy = {
        "min_retention": _policy_floor(),
        "max_latency_ms": {b.where: b.latency_ms},
        **({"max_size_bytes": max_size} if max_size else {}),
    }
    with atomic_path(folder / f"{b.slug}.policy.yaml") as tmp:
        tmp.write_text(yaml.safe_dump(policy, sort_keys=False))
    rec["gate"] = {"policy": f"{b.slug}.policy.yaml"}
    if not full:
        header = (
            f"# Rung {b.key} of the {recipe['name']} ladder: trial {r.trial.label}, {f.artifact}\n"
            f"# retention {f.retention:.4f} through the file, {f.latency_ms.get(b.where):.4g} ms on "
            f"{b.where}, {f.size_bytes} bytes; `edgekd run` on this file trains the same student\n"
        )
        if f.retention is not None and f.retention < policy["min_retention"]:
            header += (f"# below {b.slug}.policy.yaml's min_retention {policy['min_retention']}: "
                       "its gate fails unless you lower that\n")
    else:
        header = (
            f"# Rung {b.key} of the {recipe['name']} ladder: trial {r.trial.label}'s student and settings, "
            f"trained on the recipe's {rec['data']['transfer_samples']:,} transfer inputs (the trial learned "
            f"from {recipe['search']['transfer_samples']:,});\n# its retention and latency are measured "
            "again by `edgekd run`, and the policy holds the budget\n"
        )
    with atomic_path(folder / f"{b.slug}{'.full' if full else ''}.yaml") as tmp:
        tmp.write_text(header + yaml.safe_dump(rec, sort_keys=False))


def _markdown(s: dict) -> str:
    t = s["trials"]
    lines = [
        f"# Ladder: {s['recipe']}",
        "",
        f"{t['finished']} finished trials ({t['complete']} complete, {t['pruned']} pruned), "
        f"{t['trial_seconds']:.0f} s of trials; storage {s['storage']}"
        + (f"; files at most {s['max_size_bytes']} bytes" if s["max_size_bytes"] else ""),
        "",
        "| budget | student | params | file | size (B) | latency (ms) | retention (95%) | tied | recipe |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in s["rungs"]:
        if not r["met"]:
            lines.append(f"| {r['budget']} | no trial meets it | | | | | | | |")
            continue
        st = r["student"]
        who = f"{st['arch']} x{st['width']:g}" + (f" d{st['depth']}" if st.get("depth") else "")
        band = "({:.4f}-{:.4f})".format(*r["retention_interval_95"]) if "retention_interval_95" in r else ""
        lines.append(
            f"| {r['budget']} | {who} ({r['trial']}) | {r['params']} | {r['file']} | {r['size_bytes']} | "
            f"{r['latency_ms']:.4g} | {r['retention']:.4f} {band} | {r.get('trials_within_interval', '')} | "
            f"{r['recipe']} |"
        )
    if any("trials_within_interval" in r for r in s["rungs"]):
        lines += ["", "tied: other trials whose file for the budget lies inside the winner's own 95% "
                  "interval on the test split; measure the rung recipes you shortlist on data none was "
                  "chosen on before you rely on their order."]
    if s.get("transfer_proxy") and any(r["met"] for r in s["rungs"]):
        n, full = s["transfer_proxy"]
        lines += ["", f"Trials learned from {n:,} of the recipe's {full:,} transfer inputs (a cheaper "
                  "proxy): rungs/BUDGET.yaml trains a rung's student as its trial did, "
                  "rungs/BUDGET.full.yaml on all of them, as the recipe's own students learn."]
    low = [r["budget"] for r in s["rungs"] if r.get("below_policy")]
    if low:
        lines += ["", f"Below the rung policy's min_retention {s['policy_min_retention']}: {', '.join(low)}. "
                  "`edgekd run` on those recipes trains the student and fails its gate; lower min_retention "
                  "in the rung's .policy.yaml if that retention is acceptable."]
    if s["monotone_problems"]:
        lines += ["", "Not monotone: " + "; ".join(s["monotone_problems"])]
    for where, pts in s["fronts"].items():
        lines += [
            "",
            f"## Pareto front on {where}",
            "",
            "| latency (ms) | retention | file |",
            "|---|---|---|",
        ]
        lines += [f"| {p['latency_ms']:.4g} | {p['retention']:.4f} | {p['file']} |" for p in pts]
    return "\n".join(lines) + "\n"


def _plot(fr: dict, ladder: list[Rung], path: Path) -> None:
    """One panel per runner or target: the front, and each budget as a vertical line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    wheres = sorted(fr) or ["(no trials)"]
    fig, axes = plt.subplots(1, len(wheres), figsize=(4.2 * len(wheres), 3.4), squeeze=False)
    for ax, where in zip(axes[0], wheres):
        pts = fr.get(where, [])
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", ms=4)
        for r in ladder:
            if r.budget.where == where:
                ax.axvline(r.budget.latency_ms, color="grey", ls="--", lw=1)
        ax.set_xscale("log")
        ax.set_title(where, fontsize=9)
        ax.set_xlabel("latency (ms)")
        ax.set_ylabel("retention")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
