"""`edgekd run` end to end on a tiny recipe: stages, bundles, gate, resume, reproducibility."""

import hashlib
import json

import pytest
import yaml

from conftest import tiny_recipe
from helpers import run_cli

pytestmark = pytest.mark.heavy


def _recipe(tmp_path):
    # The tiny student retains ~85% in seconds of training: gate it at 0.8 here (the built-in recipe's
    # full run against the default 0.97 policy is benchmarks/pipeline.py).
    policy = tmp_path / "policy.yaml"
    policy.write_text("min_retention: 0.8\n")
    # two jobs whatever the machine: the student's export starts from the distill step (side by side), and
    # the teacher trains on two threads; the two runs' bundles must still be the same bytes
    r = tiny_recipe(
        jobs=2, teacher={**tiny_recipe()["teacher"], "threads": 2},
        gate={"policy": "policy.yaml"},
        export={"formats": ["coreml", "tflite"], "quants": ["fp32", "fp16", "int8"], "parity_samples": 128,
                "min_top1_agreement": {"default": 0.95}},
        bench={"targets": ["apple-a17-pro-ane", "host-cpu"]},
        bundle={"validation_samples": 8})
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(r))
    return path


def _sha(p):
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    recipe = _recipe(root)
    results = []
    for name in ("a", "b"):
        r = run_cli("run", recipe, "--out", root / name)
        results.append(r)
    return root, recipe, results


def test_run_produces_report_bundles_and_passes(two_runs):
    root, _, (ra, rb) = two_runs
    assert ra.returncode == 0, ra.stderr + ra.stdout
    out = root / "a"
    for stage in ("[1/6] distill", "[3/6] bench", "[6/6] bundles"):
        assert stage in ra.stderr
    assert "gate: PASS" in ra.stdout
    assert (out / "report" / "report.html").is_file() and (out / "metrics.json").is_file()
    for platform, suffix in (("ios", ".mlpackage"), ("android", ".tflite")):
        manifest = json.loads((out / "bundles" / platform / "manifest.json").read_text())
        assert manifest["model"]["file"].endswith(suffix)
        assert manifest["metrics"]["retention"] >= 0.8
        prov = manifest["provenance"]
        assert prov["recipe"]["name"] == "tiny" and prov["teacher_sha256"] and prov["data_fingerprint"]
        assert prov["git_commit"] and prov["packages"]["coremltools"] == "9.0"
        assert run_cli("verify", out / "bundles" / f"{platform}.zip").returncode == 0
    gate = json.loads((out / "gate" / "gate.json").read_text())
    assert (gate["passed"] and (out / "gate" / "junit.xml").is_file()
            and (out / "gate" / "summary.md").is_file())


def test_same_seed_gives_byte_identical_bundles(two_runs):
    root, _, (ra, rb) = two_runs
    assert rb.returncode == 0, rb.stderr
    for platform in ("ios", "android"):
        assert (_sha(root / "a" / "bundles" / f"{platform}.zip")
                == _sha(root / "b" / "bundles" / f"{platform}.zip"))


def test_unmeetable_policy_fails_with_exit_1_and_names_the_rules(two_runs, tmp_path):
    root, _, _ = two_runs
    policy = tmp_path / "strict.yaml"
    policy.write_text("max_size_bytes: 1000\nmin_retention: 1.01\n")
    r = run_cli("gate", root / "a", "--policy", policy, "--out", tmp_path / "g")
    assert r.returncode == 1
    assert "gate: FAIL" in r.stdout and "max_size_bytes [file]" in r.stdout and "vs limit 1000" in r.stdout
    assert "min_retention" in r.stdout and "vs limit 1.01" in r.stdout
    assert 'failures="2"' in (tmp_path / "g" / "junit.xml").read_text()


def test_rerun_reuses_finished_stages_and_redoes_an_interrupted_one(two_runs):
    root, recipe, _ = two_runs
    out = root / "b"
    export_before = (out / "export" / "s" / "artifacts.json").stat().st_mtime_ns
    # an interrupted bench stage: its output is gone, its mark may remain
    (out / "bench" / "s" / "bench.json").unlink()
    r = run_cli("run", recipe, "--out", out)
    assert r.returncode == 0, r.stderr
    assert (out / "export" / "s" / "artifacts.json").stat().st_mtime_ns == export_before
    assert (out / "bench" / "s" / "bench.json").is_file()
    assert not list(out.rglob("*.tmp")) and not list(out.rglob("*.state.pt"))


def test_run_with_bad_inputs(tmp_path):
    r = run_cli("run", tmp_path / "missing.yaml", "--out", tmp_path / "o")
    assert r.returncode == 2 and "no such recipe file" in r.stderr and not (tmp_path / "o").exists()
    policy = tmp_path / "p.yaml"
    policy.write_text("min_retension: 0.9\n")
    r = run_cli("run", _recipe(tmp_path), "--out", tmp_path / "o", "--policy", policy)
    assert r.returncode == 2 and "min_retension: unknown rule" in r.stderr and not (tmp_path / "o").exists()


def test_a_renamed_student_never_ships_the_old_one_and_gate_keeps_the_recipes_platforms(two_runs, tmp_path):
    import shutil

    root, recipe, _ = two_runs
    out = tmp_path / "c"
    shutil.copytree(root / "a", out)
    r = yaml.safe_load(recipe.read_text())
    r["students"][0]["name"] = "s2"
    r["bundle"]["platforms"] = {"android": "tflite"}
    (tmp_path / "policy.yaml").write_text("min_retention: 0.8\n")
    renamed = tmp_path / "renamed.yaml"
    renamed.write_text(yaml.safe_dump(r))
    run = run_cli("run", renamed, "--out", out)
    assert run.returncode == 0, run.stderr
    assert (out / "bench" / "s" / "bench.json").is_file()  # the old student's files are still there...
    manifest = json.loads((out / "bundles" / "android" / "manifest.json").read_text())
    assert manifest["model"]["name"] == "s2"  # ...but only this recipe's student ships
    assert not (out / "bundles" / "ios").exists() and not (out / "bundles" / "ios.zip").exists()
    gate = json.loads((out / "gate" / "gate.json").read_text())
    assert {c["model"] for c in gate["candidates"]} == {"s2"} and set(gate["chosen"]) == {"android"}
    assert "s2" in (out / "report" / "report.html").read_text()
    # gated again, from another working directory, with a relative path: same verdict, same platforms
    again = run_cli("gate", "c", "--policy", tmp_path / "policy.yaml", "--out", "g", cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert json.loads((tmp_path / "g" / "gate.json").read_text())["chosen"]["android"]["model"] == "s2"
    assert "ios" not in json.loads((tmp_path / "g" / "gate.json").read_text())["chosen"]


def test_a_run_whose_export_was_written_over_exports_and_benches_again(two_runs, tmp_path):
    """`edgekd export` into a run's export folder (other modes) must not pass for the run's own export: the
    next `edgekd run` redoes export and bench, and the gate, until then, refuses the stale bench rows."""
    import shutil

    root, recipe, _ = two_runs
    out = tmp_path / "d"
    shutil.copytree(root / "a", out)
    before = json.loads((out / "export" / "s" / "artifacts.json").read_text())["artifacts"]
    r = run_cli("export", out / "students" / "s", "--out", out / "export" / "s", "--formats", "tflite",
                "--quant", "fp32")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (out / "export" / "s").glob("s-*")) == ["s-fp32.tflite"]
    gate = run_cli("gate", out)
    assert gate.returncode == 2 and "no longer lists" in gate.stderr, gate.stderr
    again = run_cli("run", recipe, "--out", out)
    assert again.returncode == 0, again.stderr
    after = json.loads((out / "export" / "s" / "artifacts.json").read_text())["artifacts"]
    assert sorted(a["path"] for a in after) == sorted(a["path"] for a in before)
    assert run_cli("gate", out, "--policy", root / "policy.yaml").returncode == 0
    # without --policy, a run folder is gated against the policy its run used (the recipe's 0.8 here, where
    # the built-in 0.97 would fail the tiny student)
    own = run_cli("gate", out)
    assert own.returncode == 0 and f"policy: {(root / 'policy.yaml').resolve()} (the run's" in own.stdout
