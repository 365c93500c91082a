"""edgekd search / ladder: budgets, ranges and storage checked before any work; studies on real SQLite and
PostgreSQL storage with real workers (killed, resumed); the ladder drawn from the storage alone."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import tiny_recipe
from edgekd.bench.targets import all_targets
from edgekd.errors import InputError
from edgekd.search.budgets import FileResult, best_file, overshoot, parse_budgets
from edgekd.search.ladder import TrialRecord, fronts, monotone, rungs
from edgekd.types import Budget
from helpers import run_cli, run_main

# A search that runs in seconds: tiny teacher, 2,000 transfer inputs, 1-3 epoch students, two export modes
SEARCH = {
    "width": [0.05, 0.3],
    "epochs": [1, 3],
    "startup_trials": 2,
    "pruner_startup_trials": 1,
    "validation_samples": 200,
    "quants": ["fp16", "dynamic-int8"],
}


def search_main(capsys, *args):
    """`edgekd search ARGS` in this process: (exit code, stderr)."""
    return run_main(["search", *args], capsys)


def search_recipe(write_recipe, **search):
    r = tiny_recipe(search={**SEARCH, **search}, export={"parity_samples": 256})
    r["teacher"]["train"]["epochs"] = 4
    return write_recipe(r)


# --- budgets and files: plain arithmetic


def test_budgets_parse_targets_and_host_runner():
    b = parse_budgets(["apple-a17-pro-ane=0.2", "host=1.5"], all_targets())
    assert [(x.where, x.format, x.measured, x.latency_ms) for x in b] == [
        ("apple-a17-pro-ane", "coreml", False, 0.2),
        ("tflite", "tflite", True, 1.5),
    ]
    assert b[1].key == "host=1.5" and b[1].slug == "host-1.5"


def test_the_prescreen_slack_covers_the_ops_not_the_fixed_cost_per_inference():
    from edgekd.search.budgets import cannot_meet

    b = Budget("apple-a17-pro-ane", "apple-a17-pro-ane", 0.2, "coreml", False)
    fixed = {b.key: 0.18}  # the profile's cost per inference: the budget leaves the ops 0.02 ms
    assert cannot_meet(b, {b.key: 0.22}, fixed)  # ops 0.04 ms: twice their share (1.2x of the whole: 0.24)
    assert not cannot_meet(b, {b.key: 0.20}, fixed)  # ops 0.02 ms: within the slack
    assert not cannot_meet(b, {b.key: 0.23}, {}) and cannot_meet(b, {b.key: 0.25}, {})  # no fixed cost known
    below = Budget("apple-a17-pro-ane", "apple-a17-pro-ane", 0.15, "coreml", False)
    assert cannot_meet(below, {below.key: 0.181}, {below.key: 0.18})  # under the fixed cost: nothing meets it
    assert not cannot_meet(b, {}, {})  # not priced: left to the measurement


@pytest.mark.parametrize(
    "text, says",
    [
        ("pixel9=1", "unknown target 'pixel9'"),
        ("host", "write TARGET=MS"),
        ("host=fast", "not a number"),
        ("host=0", "finite number of ms above 0"),
        ("host=inf", "finite number of ms above 0"),
        ("=3", "write TARGET=MS"),
    ],
)
def test_bad_budget_is_refused(text, says):
    with pytest.raises(InputError, match=says):
        parse_budgets([text], all_targets())


def test_no_budget_and_repeated_budget_are_refused():
    with pytest.raises(InputError, match="no budget given"):
        parse_budgets([], all_targets())
    with pytest.raises(InputError, match="given twice"):
        parse_budgets(["host=1", "host=1.0"], all_targets())


def _file(name, retention, ms, size=1000, where="tflite"):
    return FileResult(name, "tflite", "fp16", size, "h", retention, {where: ms})


def test_best_file_meets_latency_and_size_and_prefers_retention_then_size():
    host = Budget("host", "tflite", 1.0, "tflite", True)
    files = [
        _file("a", 0.99, 1.2),
        _file("b", 0.95, 0.8, 900),
        _file("c", 0.95, 0.5, 500),
        _file("d", 0.97, 0.9, 5000),
    ]
    assert best_file(files, host, None).artifact == "d"
    assert best_file(files, host, 1000).artifact == "c"  # d is too big; b and c tie: the smaller
    assert best_file(files, host, 100) is None
    assert overshoot(files, host, None) == 0.0
    assert overshoot([_file("a", 0.99, 1.5)], host, None) == pytest.approx(0.5)
    assert overshoot([_file("a", 0.99, 0.5, 3000)], host, 1000) == pytest.approx(2.0)


def _record(n, files, study="edgekd:r:host=1"):
    return TrialRecord(study, n, "COMPLETE", {"arch": "cnn1d", "width": 0.1}, 0, 100, tuple(files), 1.0, "")


def test_ladder_rungs_are_the_best_file_per_budget_across_every_trial_and_monotone():
    recs = [
        _record(0, [_file("a", 0.90, 0.4)]),
        _record(1, [_file("b", 0.97, 0.9)]),
        _record(2, [_file("c", 0.99, 3.0)]),
    ]
    budgets = [Budget("host", "tflite", ms, "tflite", True) for ms in (0.5, 1.0, 2.0, 0.1)]
    ladder = rungs(recs, budgets, None)
    assert [(r.file.artifact if r.file else None) for r in ladder] == ["a", "b", "b", None]
    assert monotone(ladder) == []
    # a worse student for a larger budget is reported
    from edgekd.search.ladder import Rung

    broken = [
        Rung(budgets[0], recs[1], _file("b", 0.97, 0.4)),
        Rung(budgets[1], recs[0], _file("a", 0.90, 0.9)),
    ]
    assert monotone(broken) == ["host=1 got a worse student than host=0.5"]
    front = fronts(recs)["tflite"]
    assert [p[2].split()[-1] for p in front] == ["a", "b", "c"]


def test_a_rung_winner_carries_its_interval_and_the_trials_the_test_split_cannot_tell_from_it():
    from edgekd.metrics import wilson_interval

    recs = [_record(0, [_file("a", 0.990, 0.4)]), _record(1, [_file("b", 0.985, 0.4)]),
            _record(2, [_file("c", 0.950, 0.4)]), _record(3, [_file("d", 0.999, 3.0)])]  # d: over budget
    host = Budget("host", "tflite", 1.0, "tflite", True)
    (rung,) = rungs(recs, [host], None, test=(1000, 0.98))
    lo, hi = (x / 0.98 for x in wilson_interval(round(0.990 * 0.98 * 1000), 1000))
    assert rung.file.artifact == "a" and rung.interval[0] <= lo and rung.interval[1] >= hi
    assert rung.interval == pytest.approx((lo, hi), abs=1e-5)
    assert lo < 0.985 and rung.within == 1  # b is inside the interval, c is not, d does not meet the budget
    (wider,) = rungs(recs, [host], None, test=(100, 0.98))  # fewer test inputs: c is a tie too
    assert wider.within == 2
    (unknown,) = rungs(recs, [host], None)
    assert unknown.interval is None and unknown.within is None


def test_a_rung_below_its_recipes_policy_floor_is_flagged_in_the_ladder():
    """A rung recipe holds the built-in policy's min_retention: a winner below it would fail its own gate."""
    from edgekd.search.ladder import _markdown, _rung_dict

    host = Budget("host", "tflite", 1.0, "tflite", True)
    recs = [_record(0, [_file("a", 0.95, 0.4)]), _record(1, [_file("b", 0.99, 2.0)])]
    low, high = rungs(recs, [host, Budget("host", "tflite", 3.0, "tflite", True)], None)
    assert _rung_dict(low, False, 0.97)["below_policy"] and not _rung_dict(high, False, 0.97)["below_policy"]
    summary = {"recipe": "r", "storage": "s", "max_size_bytes": None, "monotone_problems": [], "fronts": {},
               "trials": {"finished": 2, "complete": 2, "pruned": 0, "trial_seconds": 1.0},
               "policy_min_retention": 0.97,
               "rungs": [_rung_dict(r, False, 0.97) for r in (low, high)]}
    assert "Below the rung policy's min_retention 0.97: host=1." in _markdown(summary)


# --- settings checked before any output


@pytest.mark.parametrize(
    "search, says",
    [
        ({"width": [0.5, 0.1]}, "search.width: Value error, inverted range"),
        ({"archs": []}, "search.archs: Value error, empty list"),
        ({"alpha": [0.2, 1.5]}, "search.alpha: Value error, alpha is a weight"),
        ({"quants": ["pal4"]}, "search.quants ['pal4'] has no mode of tflite"),
        ({"archs": ["resnet"]}, "search.archs: unknown zoo family 'resnet'"),
    ],
)
def test_bad_search_section_exits_2_naming_the_field(write_recipe, tmp_path, capsys, search, says):
    rec = search_recipe(write_recipe, **search)
    code, err = search_main(capsys, rec, "--out", tmp_path / "o", "--budget", "host=1")
    assert code == 2 and says in err, err
    assert not (tmp_path / "o").exists()


def test_unreachable_storage_names_host_and_port(write_recipe, tmp_path, capsys):
    from postgres import free_port

    port = free_port()
    rec = search_recipe(write_recipe)
    code, err = search_main(capsys, rec, "--out", tmp_path / "o", "--budget", "host=1",
                            "--storage", f"postgresql://edgekd@127.0.0.1:{port}/x")
    assert code == 2 and f"127.0.0.1:{port}" in err and "start the database server" in err, err
    assert not (tmp_path / "o").exists()


def test_too_many_workers_is_refused(write_recipe, tmp_path, capsys):
    code, err = search_main(capsys, search_recipe(write_recipe), "--out", tmp_path / "o",
                            "--budget", "host=1", "--workers", str((os.cpu_count() or 1) + 1))
    assert code == 2 and "--workers" in err and "CPUs" in err


# --- real searches


def _ladder(out: Path) -> dict:
    return json.loads((out / "ladder" / "ladder.json").read_text())


def _trials(url: str, recipe: str = "tiny") -> list:
    import optuna

    trials = []
    for s in optuna.get_all_study_summaries(url):
        if s.study_name.startswith(f"edgekd:{recipe}:"):
            trials += [
                (s.study_name, t) for t in optuna.load_study(study_name=s.study_name, storage=url).trials
            ]
    return trials


@pytest.mark.heavy
def test_search_on_sqlite_writes_a_ladder_resumes_and_redraws(write_recipe, tmp_path):
    rec, out = search_recipe(write_recipe, transfer_samples=500), tmp_path / "s"  # trials: a 500-input proxy
    # a budget no cnn1d can meet on the simulated A17 (prescreened, never trained) and one it can on host
    args = ["search", rec, "--out", out, "--budget", "apple-a17-pro-ane=0.0001", "--budget", "host=5"]
    r = run_cli(*args, "--trials", 4)
    assert r.returncode == 0, r.stderr
    url = f"sqlite:///{out / 'study.db'}"
    trials = _trials(url)
    assert len(trials) == 4 and {t.state.name for _, t in trials} <= {"COMPLETE", "PRUNED"}
    ane = [t for name, t in trials if name.endswith("apple-a17-pro-ane=0.0001")]
    assert ane and all(t.user_attrs["outcome"].startswith("over budget before training") for t in ane)
    assert all(t.constraints["budget_overshoot"] > 0 for t in ane)  # the sampler is told they are infeasible
    assert not any((out / "trials").glob("apple-a17-pro-ane-0.0001-*"))  # nothing was trained for them
    ladder = _ladder(out)
    by = {x["budget"]: x for x in ladder["rungs"]}
    assert by["apple-a17-pro-ane=0.0001"]["met"] is False
    host = by["host=5"]
    assert host["met"] and host["latency_ms"] <= 5 and host["format"] == "tflite"
    lo, hi = host["retention_interval_95"]  # on the tiny recipe's test split
    assert lo < host["retention"] <= hi and host["trials_within_interval"] in range(len(trials))
    # every file of every finished trial is recorded with its hash, retention and latency
    done = [t for _, t in trials if t.user_attrs.get("files")]
    assert all(
        len(f["sha256"]) == 64 and f["retention"] is not None for t in done for f in t.user_attrs["files"]
    )

    # the rung's recipe trains the same student: `edgekd run` on it reaches the trial's accuracy
    rung = out / "ladder" / host["recipe"]
    cfg = yaml.safe_load(rung.read_text())
    assert cfg["students"][0]["width"] == host["student"]["width"]
    r = run_cli("distill", rung, "--out", tmp_path / "rerun")
    assert r.returncode == 0, r.stderr
    trial = next(t for n, t in trials if f"{n.rsplit(':', 1)[-1]}#{t.number}" == host["trial"])
    assert json.loads(r.stdout)["student_accuracy"] == pytest.approx(trial.user_attrs["student_accuracy"])
    # ... and its full-data twin trains that student on the recipe's whole transfer set, nothing else changed
    full = yaml.safe_load((out / "ladder" / host["recipe_full_data"]).read_text())
    assert cfg["data"]["transfer_samples"] == 500 and full["data"]["transfer_samples"] == 2000
    assert {k: v for k, v in full.items() if k not in ("name", "data")} == {
        k: v for k, v in cfg.items() if k not in ("name", "data")}
    assert _ladder(out)["transfer_proxy"] == [500, 2000]
    assert "rungs/BUDGET.full.yaml on all of them" in (out / "ladder" / "ladder.md").read_text()

    # resumed: one more trial, not four
    r = run_cli(*args, "--trials", 5)
    assert r.returncode == 0, r.stderr
    assert len(_trials(url)) == 5
    # redrawn from the storage alone: same ladder, nothing trained
    before = sorted(p.name for p in (out / "trials").iterdir())
    (out / "ladder").rename(tmp_path / "old-ladder")
    r = run_cli("search", "--report", out)
    assert r.returncode == 0, r.stderr
    assert _ladder(out)["rungs"] == json.loads((tmp_path / "old-ladder" / "ladder.json").read_text())["rungs"]
    assert sorted(p.name for p in (out / "trials").iterdir()) == before
    # a study of another recipe under the same name is left out of the ladder, and said so
    import optuna

    other = optuna.create_study(storage=url, study_name="edgekd:tiny:host=9", direction="maximize")
    other.set_user_attr("recipe_sha256", "0" * 64)
    other.set_user_attr("max_size_bytes", None)
    r = run_cli("search", "--report", out)
    assert r.returncode == 0, r.stderr
    assert _ladder(out)["ignored_studies"] == ["edgekd:tiny:host=9 (another recipe of the same name)"]
    # another budget list from the same trials
    r = run_cli("ladder", out, "--budget", "host=0.0001", "--out", tmp_path / "l2")
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "l2" / "ladder.json").read_text())["rungs"][0]["met"] is False
    # a rung below its recipe's policy floor says so (`edgekd run` on it would fail its gate)
    assert host["below_policy"] == (host["retention"] < 0.97)
    assert ("below host-5.policy.yaml's min_retention" in rung.read_text()) == host["below_policy"]
    # drawn again into the same folder for budgets no trial meets: no rung recipe of the last ladder stays
    r = run_cli("ladder", out, "--budget", "host=0.0001")
    assert r.returncode == 0, r.stderr
    assert not list((out / "ladder" / "rungs").glob("*.yaml"))
    # a search (or another ladder) writing the folder holds it: drawing into it waits its turn
    from edgekd.runfolder import locked

    with locked(out):
        busy = run_cli("ladder", out)
    assert busy.returncode == 2 and "another edgekd process" in busy.stderr, busy.stderr
    # --report redraws; it takes no recipe or budgets (they would be ignored)
    r = run_cli("search", rec, "--report", out, "--budget", "host=1")
    assert r.returncode == 2 and "takes no RECIPE or --budget" in r.stderr
    # another version of the recipe in this folder (a new budget makes new studies) is refused before its
    # teacher would be trained again over the one these trials learned from
    teacher = (out / "teacher" / "model.safetensors").read_bytes()
    changed = yaml.safe_load(rec.read_text())
    changed["teacher"]["train"]["epochs"] = 3
    r = run_cli("search", write_recipe(changed, "changed.yaml"), "--out", out, "--budget", "host=7",
                "--trials", 1)
    assert r.returncode == 2 and "holds the search of another recipe" in r.stderr, r.stderr
    assert (out / "teacher" / "model.safetensors").read_bytes() == teacher


@pytest.mark.heavy
def test_a_teacher_below_its_floor_leaves_no_study_behind(write_recipe, tmp_path):
    """The studies are created only once the teacher passed its floor: lowering the floor and running again
    in the same folder and storage works."""
    import optuna

    r = yaml.safe_load(search_recipe(write_recipe).read_text())
    r["teacher"]["min_accuracy"] = 0.9999
    out, url = tmp_path / "s", f"sqlite:///{tmp_path / 's' / 'study.db'}"
    args = ["--out", out, "--budget", "host=5", "--trials", 1]
    failed = run_cli("search", write_recipe(r, "high.yaml"), *args)
    assert failed.returncode == 1 and "min_accuracy" in failed.stderr, failed.stderr
    assert optuna.get_all_study_summaries(url) == []
    r["teacher"]["min_accuracy"] = 0.5
    ok = run_cli("search", write_recipe(r, "low.yaml"), *args)
    assert ok.returncode == 0, ok.stderr
    assert len(_trials(url)) == 1


@pytest.mark.heavy
def test_pruner_stops_trials_that_trail_their_rung(write_recipe, tmp_path):
    """The same search with and without the pruner: only the pruned one stops trials early."""
    states = {}
    for pruner in ("ladder", "none"):
        rec = search_recipe(write_recipe, pruner=pruner, epochs=[3, 3])
        out = tmp_path / pruner
        r = run_cli("search", rec, "--out", out, "--budget", "host=5", "--trials", 6)
        assert r.returncode == 0, r.stderr
        states[pruner] = [t.state.name for _, t in _trials(f"sqlite:///{out / 'study.db'}")]
    assert states["none"].count("PRUNED") == 0 and len(states["none"]) == 6
    assert states["ladder"].count("PRUNED") >= 1, states


@pytest.fixture(scope="module")
def postgres():
    from postgres import Server

    server = Server()
    yield server
    server.stop()


def test_another_recipe_of_the_same_name_in_the_storage_is_refused(write_recipe, tmp_path, capsys):
    import optuna

    url = f"sqlite:///{tmp_path / 'shared.db'}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=url, study_name="edgekd:tiny:host=1", direction="maximize")
    study.set_user_attr("recipe_sha256", "0" * 64)
    study.set_user_attr("max_size_bytes", None)
    code, err = search_main(capsys, search_recipe(write_recipe), "--out", tmp_path / "o",
                            "--budget", "host=1", "--storage", url)
    assert code == 2 and "from another recipe of the same name" in err and "--storage" in err, err
    assert not (tmp_path / "o").exists()


@pytest.mark.heavy
def test_a_search_no_candidate_fits_keeps_its_study_and_says_so(write_recipe, tmp_path):
    rec, out = search_recipe(write_recipe), tmp_path / "s"
    r = run_cli("search", rec, "--out", out, "--budget", "apple-a17-pro-ane=0.0001", "--trials", 2)
    assert r.returncode == 0, r.stderr
    assert "no trial meets it" in r.stdout
    assert (out / "study.db").is_file() and _ladder(out)["rungs"][0]["met"] is False


@pytest.mark.heavy
def test_two_workers_on_postgres_record_every_trial_once_and_survive_a_killed_worker(
    postgres, write_recipe, tmp_path
):
    url = postgres.create_db("two_workers")
    rec = search_recipe(write_recipe, epochs=[3, 3], pruner="none")
    out = tmp_path / "s"
    cmd = [
        sys.executable,
        "-m",
        "edgekd.cli",
        "search",
        str(rec),
        "--out",
        str(out),
        "--budget",
        "host=5",
        "--budget",
        "apple-a17-pro-ane=1",
        "--trials",
        "6",
        "--workers",
        "2",
        "--storage",
        url,
        "--heartbeat-s",
        "2",
    ]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent)},
    )
    victim = None
    end = time.time() + 300
    while victim is None and time.time() < end and proc.poll() is None:
        running = [t for _, t in _trials(url) if t.state.name == "RUNNING" and "worker_pid" in t.user_attrs]
        if running:
            victim = running[0]
            os.kill(victim.user_attrs["worker_pid"], signal.SIGKILL)
        time.sleep(0.2)
    stdout, stderr = proc.communicate(timeout=600)
    assert victim is not None, stderr
    assert proc.returncode == 0, stderr
    assert "killed by signal 9" in stderr
    trials = _trials(url)
    states = {(n, t.number): t.state.name for n, t in trials}
    killed = next(
        k
        for k in states
        if k[1] == victim.number and k[0] == next(n for n, t in trials if t._trial_id == victim._trial_id)
    )
    assert states[killed] == "FAIL"  # marked failed by heartbeat, not lost, not left running
    assert sum(s in ("COMPLETE", "PRUNED") for s in states.values()) == 6
    assert "RUNNING" not in states.values()
    # every trial recorded once and none lost: one folder per trial that trained, none without a trial
    def folder(n, t):
        return f"{n.rsplit(':', 1)[-1].replace('=', '-')}-{t.number:03d}"

    folders = {p.name for p in (out / "trials").iterdir()}
    assert folders <= {folder(n, t) for n, t in trials}
    assert {folder(n, t) for n, t in trials if t.state.name != "FAIL"
            and not t.user_attrs["outcome"].startswith("over budget")} <= folders
    # the study resumes where it stopped
    r = run_cli(
        "search",
        rec,
        "--out",
        out,
        "--budget",
        "host=5",
        "--budget",
        "apple-a17-pro-ane=1",
        "--trials",
        7,
        "--storage",
        url,
    )
    assert r.returncode == 0, r.stderr
    assert sum(t.state.name in ("COMPLETE", "PRUNED") for _, t in _trials(url)) == 7


def test_pruner_stops_a_trial_only_when_it_can_no_longer_win_a_budget_it_could_meet():
    import optuna

    from edgekd.search.pruner import LadderPruner

    tight = Budget("apple-a17-pro-ane", "apple-a17-pro-ane", 0.03, "coreml", False)
    loose = Budget("host", "tflite", 1.0, "tflite", True)
    pruner = LadderPruner([tight, loose], None, n_min_trials=3, margin=0.005)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", pruner=pruner)
    pruner.studies = [study]

    def file(ane_ms, host_ms, retention=0.9):
        latency = {tight.where: ane_ms, loose.where: host_ms}
        return FileResult("f", "coreml", "fp32", 100, "h", retention, latency).to_dict()

    def finished(at_75, final, ane_ms, more_files=(), retention=None):
        t = study.ask()
        t.report(at_75 - 0.1, 50)  # each gained 0.1 more from half than from three quarters
        t.report(at_75, 75)
        t.report(final, 100)
        t.set_user_attr("files", [file(ane_ms, 0.5, retention or final), *more_files])
        study.tell(t, final)

    def running(agreement, step, predicted_ane_ms):
        t = study.ask()
        t.set_user_attr("predicted_ms", {tight.key: predicted_ane_ms})
        t.report(agreement, step)
        return t

    for _ in range(2):
        finished(0.97, 0.99, 0.05)  # large students: they meet only the loose budget; gained 0.02 after 3/4
    assert not running(0.50, 75, 0.02).should_prune()  # two finished trials: too few to judge by
    finished(0.85, 0.90, 0.02)  # a small one meets both, and gained 0.05: the largest gain seen
    # at half, the largest gain seen from half on (0.15) keeps a late bloomer: curves still cross there
    assert not running(0.75, 50, 0.02).should_prune()  # 0.75 + 0.15 + 0.005 >= 0.90
    assert running(0.74, 50, 0.02).should_prune()
    # a small student: could it still reach the tight budget's best (0.90) with the largest gain seen?
    assert not running(0.85, 75, 0.02).should_prune()  # 0.85 + 0.05 + 0.005 >= 0.90
    assert running(0.84, 75, 0.02).should_prune()  # 0.895: behind on both budgets
    # a large one cannot meet the tight budget: judged on the loose one alone (best 0.99)
    assert running(0.93, 75, 0.06).should_prune()
    assert not running(0.94, 75, 0.06).should_prune()
    # when training ends, before export: no gain left, only the margin
    assert running(0.894, 100, 0.02).should_prune()
    assert not running(0.896, 100, 0.02).should_prune()
    # a large student that meets the tight budget only through a lossy file (0.80 against its 0.995 one)
    # is not the tight budget's best: the small ones stay the bar there
    finished(0.99, 0.995, 0.05, [file(0.02, 0.5, retention=0.80)])
    assert not running(0.85, 75, 0.02).should_prune()
    # a budget no finished trial met keeps every trial that could meet it running
    unmet = Budget("arm-cortex-a78", "arm-cortex-a78", 1e-6, "tflite", False)
    pruner.budgets.append(unmet)
    assert not running(0.10, 100, 0.02).should_prune()
    # trials tied on the tight budget's best file (0.90): the lowest bar, whatever their order
    finished(0.85, 0.95, 0.02, retention=0.90)
    done = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert pruner.bar(done, tight) == pruner.bar(done[::-1], tight) == pytest.approx(0.90)
    # the best trial's file for the budget loses 0.10 against its best file: the bar is 0.10 lower
    lossy = optuna.create_study(direction="maximize")
    t = lossy.ask()
    t.report(0.97, 100)
    t.set_user_attr("files", [file(0.05, 0.5, retention=0.95), file(0.02, 0.5, retention=0.85)])
    lossy.tell(t, 0.85)
    assert pruner.bar(lossy.get_trials(), tight) == pytest.approx(0.87)
