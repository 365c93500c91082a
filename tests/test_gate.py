"""The gate on hand-made bench rows (rule logic, choice, reports) and bundles on real files."""

import json
import xml.etree.ElementTree as ET
import zipfile

import numpy as np
import pytest
import yaml

from edgekd.config import BundleConfig, Policy, load_policy
from edgekd.errors import CheckFailed, InputError
from edgekd.gate.bundle import deterministic_zip, load_baseline, write_bundle
from edgekd.gate.reports import junit_xml, markdown
from edgekd.gate.verdict import BenchRow, evaluate, explain
from edgekd.gate.verify import verify_bundle
from edgekd.types import Measurement


def _rows(tmp_path, specs):
    """specs: (artifact, format, quant, size, retention, {target: (latency, residency)})"""
    rows = []
    for art, fmt, quant, size, ret, sims in specs:
        common = {"model": "s", "artifact": art, "format": fmt, "quant": quant, "size_bytes": size}
        rows.append(BenchRow(tmp_path, Measurement(**common, kind="measured", runner=fmt, retention=ret,
                                                   teacher_agreement=ret, latency_ms_p50=0.01)))
        for t, (lat, res) in sims.items():
            rows.append(BenchRow(tmp_path, Measurement(
                **common, kind="simulated", target=t, runner=f"sim:{t}", latency_ms_p50=lat, accelerator=True,
                accelerator_residency={"ops": res, "time": res})))
    return rows


SPECS = [
    ("a-fp32.tflite", "tflite", "fp32", 60_000, 0.995, {"hexagon": (0.40, 0.0)}),
    ("a-int8.tflite", "tflite", "full-int8", 20_000, 0.990, {"hexagon": (0.20, 0.9)}),
    ("a-dyn.tflite", "tflite", "dynamic-int8", 18_000, 0.960, {"hexagon": (0.50, 0.3)}),
    ("a-fp16.mlpackage", "coreml", "fp16", 40_000, 0.995, {"ane": (0.11, 1.0)}),
    ("a-pal4.mlpackage", "coreml", "pal4", 15_000, 0.985, {"ane": (0.12, 1.0)}),
]
PLATFORMS = BundleConfig().platforms


def test_smallest_passing_file_ships(tmp_path):
    v = evaluate(_rows(tmp_path, SPECS), Policy(min_retention=0.97), PLATFORMS)
    assert v.passed
    assert v.chosen["android"].artifact == "a-int8.tflite"  # a-dyn is smaller but retention 0.96 < 0.97
    assert v.chosen["ios"].artifact == "a-pal4.mlpackage"
    dyn = next(c for c in v.candidates if c.artifact == "a-dyn.tflite")
    assert [f.rule for f in dyn.failures] == ["min_retention"] and dyn.failures[0].value == 0.96


def test_prefer_latency_and_per_target_rules(tmp_path):
    p = Policy(min_retention=0.97, prefer="latency", max_latency_ms={"ane": 0.115},
               min_accelerator_residency={"hexagon": 0.5})
    v = evaluate(_rows(tmp_path, SPECS), p, PLATFORMS)
    assert v.chosen["ios"].artifact == "a-fp16.mlpackage"  # pal4 breaks max_latency_ms on the ane
    assert v.chosen["android"].artifact == "a-int8.tflite"
    fp32 = next(c for c in v.candidates if c.artifact == "a-fp32.tflite")
    assert [(f.rule, f.where, f.value, f.limit) for f in fp32.failures] == [
        ("min_accelerator_residency", "hexagon", 0.0, 0.5)]


def test_unmeetable_policy_fails_and_names_every_rule(tmp_path):
    v = evaluate(_rows(tmp_path, SPECS), Policy(max_size_bytes=1000, min_retention=1.01), PLATFORMS)
    assert not v.passed and v.chosen == {"ios": None, "android": None}
    text = explain(v)
    assert "FAIL" in text and "max_size_bytes [file]: 20000 vs limit 1000" in text
    assert "min_retention [tflite]: 0.99 vs limit 1.01" in text
    suite = ET.fromstring(junit_xml(v))
    assert suite.get("tests") == "2" and suite.get("failures") == "2"
    assert "a-int8.tflite" in " ".join(f.text for f in suite.iter("failure"))
    md = markdown(v)
    assert "❌ FAIL" in md and "nothing passes" in md


def test_junit_for_a_pass(tmp_path):
    suite = ET.fromstring(junit_xml(evaluate(_rows(tmp_path, SPECS), Policy(), PLATFORMS)))
    assert suite.get("failures") == "0" and len(suite.findall("testcase")) == 2


def test_regression_against_baseline(tmp_path):
    baseline = {"platform": "android",
                "metrics": {"retention": 0.999, "simulated": {"hexagon": {"latency_ms": 0.1}}},
                "model": {"size_bytes": 10_000}}
    p = Policy(max_regression={"retention": 0.005, "latency_pct": 50, "size_pct": 100})
    v = evaluate(_rows(tmp_path, SPECS[:2]), p, {"android": "tflite"}, baseline)
    int8 = next(c for c in v.candidates if c.artifact == "a-int8.tflite")
    rules = {f.rule for f in int8.failures}
    assert rules == {"max_regression.retention", "max_regression.latency_pct"}  # 20 kB <= 2 x 10 kB is fine
    assert not v.passed


def test_prefer_latency_ranks_by_the_time_measured_here_without_simulated_targets(tmp_path):
    """A run benched on no simulated target (a host-budget rung recipe) still ships its fastest file."""
    rows = []
    for art, size, ms in [("a-fp16.tflite", 9_000, 0.0021), ("a-dyn.tflite", 7_000, 0.0024)]:
        rows.append(BenchRow(tmp_path, Measurement(model="s", artifact=art, format="tflite", quant="fp16",
                                                   size_bytes=size, kind="measured", runner="tflite",
                                                   retention=0.99, latency_ms_p50=ms)))
    android = {"android": "tflite"}
    assert evaluate(rows, Policy(prefer="latency"), android).chosen["android"].artifact == "a-fp16.tflite"
    assert evaluate(rows, Policy(), android).chosen["android"].artifact == "a-dyn.tflite"  # the smaller


def test_latency_regression_with_nothing_to_compare_is_refused_and_another_platform_noted(tmp_path):
    p = Policy(max_regression={"latency_pct": 10})
    no_sims = {"platform": "android", "metrics": {"retention": 0.99, "simulated": {}},
               "model": {"size_bytes": 10_000}}
    with pytest.raises(InputError, match="max_regression.latency_pct.*no simulated row"):
        evaluate(_rows(tmp_path, SPECS[:2]), p, {"android": "tflite"}, no_sims)
    ios = {**no_sims, "platform": "ios"}
    v = evaluate(_rows(tmp_path, SPECS), Policy(max_regression={"retention": 0.5}), PLATFORMS, ios)
    assert "max_regression not checked for android: the baseline bundle is for ios" in v.notes


def test_the_gate_refuses_bench_rows_of_files_exported_again_since(tmp_path):
    """bench.json must describe the files artifacts.json lists now: a re-export, or a run stopped between
    export and bench, would let the gate judge (and ship) a file by another file's numbers."""
    from edgekd.gate.verdict import load_bench_rows

    row = {"model": "m", "artifact": "m.onnx", "format": "onnx", "quant": "fp32", "kind": "measured",
           "runner": "onnxruntime", "retention": 1.0, "size_bytes": 10}
    (tmp_path / "e").mkdir()
    (tmp_path / "b").mkdir()

    def write(listed: list, files: dict | None, rows=(row,)):
        (tmp_path / "e" / "artifacts.json").write_text(json.dumps(
            {"checkpoint": "c", "model": "m", "artifacts": listed}))
        bench = {"artifacts": "../e/artifacts.json", "model": "m", "rows": list(rows),
                 **({"files": files} if files is not None else {})}
        (tmp_path / "b" / "bench.json").write_text(json.dumps(bench))

    import hashlib

    onnx = tmp_path / "e" / "m.onnx"
    onnx.write_bytes(b"0123456789")
    a, b = hashlib.sha256(b"0123456789").hexdigest(), hashlib.sha256(b"another file").hexdigest()
    same = {"format": "onnx", "quant": "fp32", "path": "m.onnx", "size_bytes": 10, "sha256": a}
    write([same], {"m.onnx": a})
    assert [r.row.artifact for r in load_bench_rows([tmp_path / "b"])] == ["m.onnx"]
    onnx.write_bytes(b"another file")  # re-exported: artifacts.json lists the new file, bench the old
    write([{**same, "sha256": b, "size_bytes": 12}], {"m.onnx": a})
    with pytest.raises(InputError, match="measured another m.onnx.*re-run `edgekd bench`"):
        load_bench_rows([tmp_path / "b"])
    write([{**same, "sha256": b, "size_bytes": 12}], None)  # a bench.json from before hashes: sizes
    with pytest.raises(InputError, match="measured another m.onnx"):
        load_bench_rows([tmp_path / "b"])
    write([], {"m.onnx": a})
    with pytest.raises(InputError, match="measured m.onnx, which .* no longer lists"):
        load_bench_rows([tmp_path / "b"])
    write([same], {"m.onnx": a})  # artifacts.json and bench agree, but the file was written over since
    with pytest.raises(InputError, match="m.onnx: not the file .* lists"):
        load_bench_rows([tmp_path / "b"])
    onnx.write_bytes(b"0123456789")
    (tmp_path / "e" / "artifacts.json").write_text(json.dumps(
        {"checkpoint": "ck", "checkpoint_sha256": "f" * 64, "model": "m", "artifacts": [same]}))
    from factories import make_checkpoint

    make_checkpoint(tmp_path / "e" / "ck", epochs=0)  # other weights than the export was made from
    with pytest.raises(InputError, match="exported from other weights than .*ck holds now"):
        load_bench_rows([tmp_path / "b"])
    (tmp_path / "e" / "artifacts.json").unlink()
    with pytest.raises(InputError, match="is gone"):
        load_bench_rows([tmp_path / "b"])


def test_policy_rule_naming_unknown_target(tmp_path):
    with pytest.raises(InputError, match="max_latency_ms names 'pixel-99'"):
        evaluate(_rows(tmp_path, SPECS), Policy(max_latency_ms={"pixel-99": 1.0}), PLATFORMS)


def test_policy_file_errors(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text(yaml.safe_dump({"min_retention": 0.9, "max_sise_bytes": 10}))
    with pytest.raises(InputError, match="max_sise_bytes: unknown rule"):
        load_policy(p)
    p.write_text(yaml.safe_dump({"max_latency_ms": {"ane": "fast"}}))
    with pytest.raises(InputError, match="max_latency_ms.ane"):
        load_policy(p)
    # limits no file could meet are refused, not failed file by file
    for rules, field in [({"max_latency_ms": {"tflite": 0}}, "max_latency_ms.tflite"),
                         ({"max_latency_ms": {"tflite": -1.0}}, "max_latency_ms.tflite"),
                         ({"min_accelerator_residency": {"ane": 1.5}}, "min_accelerator_residency.ane")]:
        p.write_text(yaml.safe_dump(rules))
        with pytest.raises(InputError, match=field.replace(".", r"\.")):
            load_policy(p)
    assert load_policy().min_retention == 0.97  # the built-in policy


def test_deterministic_zip(tmp_path):
    d = tmp_path / "b"
    (d / "sub").mkdir(parents=True)
    (d / "sub" / "x.bin").write_bytes(b"\x00\x01" * 100)
    (d / "a.txt").write_text("hello")
    first = deterministic_zip(d)
    (d / "a.txt").touch()  # new mtime, same content
    assert deterministic_zip(d) == first
    names = zipfile.ZipFile(__import__("io").BytesIO(first)).namelist()
    assert names == ["b/a.txt", "b/sub/x.bin"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from edgekd.bench.stage import bench_artifacts
    from edgekd.bench.targets import get_targets
    from edgekd.config import ExportConfig
    from edgekd.data import load_dataset
    from edgekd.export import export_checkpoint
    from edgekd.gate.verdict import load_bench_rows
    from factories import make_checkpoint

    root = tmp_path_factory.mktemp("bundle")
    ckpt = make_checkpoint(root / "s", width=0.2, epochs=4)
    cfg = {**ExportConfig().model_dump(), "formats": ["tflite"], "quants": ["fp32", "int8"]}
    export_checkpoint(ckpt, root / "export", **cfg)
    data = load_dataset("mnist1d")
    bench_artifacts(root / "export" / "artifacts.json", root / "bench", targets=get_targets(["host-cpu"]),
                    data=data)
    v = evaluate(load_bench_rows([root / "bench"]), Policy(min_retention=0.5), {"android": "tflite"})
    d, z = write_bundle(v.chosen["android"], "android", root / "bundles", validation_x=data.x_test[:8],
                        labels=list(data.labels), mean=data.mean, std=data.std,
                        input_shape=list(data.input_shape), params=100,
                        provenance={"recipe_name": "t", "teacher_sha256": "x", "data_fingerprint": "f"})
    return d, z


@pytest.mark.heavy
def test_bundle_contents_and_verify(bundle, tmp_path):
    d, z = bundle
    manifest = json.loads((d / "manifest.json").read_text())
    assert manifest["model"]["file"] == "student-int8.tflite"
    assert set(manifest["files"]) == {"student-int8.tflite", "labels.txt", "MODEL_CARD.md",
                                      "validation/inputs.npy", "validation/expected.npy"}
    assert (d / "labels.txt").read_text().split() == [str(i) for i in range(10)]
    assert manifest["provenance"]["packages"]["torch"].startswith("2.13")
    assert "Model card" in (d / "MODEL_CARD.md").read_text()
    assert verify_bundle(d)["ok"] and verify_bundle(z)["ok"]
    assert zipfile.ZipFile(z).namelist()[0].startswith("android/")


@pytest.mark.heavy
def test_verify_catches_altered_and_added_files(bundle, tmp_path):
    import shutil

    d, _ = bundle
    bad = tmp_path / "android"
    shutil.copytree(d, bad)
    with open(bad / "student-int8.tflite", "ab") as f:
        f.write(b"x")
    (bad / "extra.txt").write_text("?")
    with pytest.raises(CheckFailed) as e:
        verify_bundle(bad)
    assert ("student-int8.tflite: sha256/size differ" in str(e.value)
            and "extra.txt: not listed" in str(e.value))


@pytest.mark.heavy
def test_verify_reruns_the_validation_inputs(bundle, tmp_path):
    """A bundle whose files all match its manifest but whose model no longer gives the expected outputs
    (here: expected outputs rewritten and the manifest's hashes forged to match) fails verification."""
    import shutil

    from edgekd.fileio import sha256_file

    d, _ = bundle
    bad = tmp_path / "android"
    shutil.copytree(d, bad)
    np.save(bad / "validation" / "expected.npy", np.full((8, 10), 0.1, np.float32))
    manifest = json.loads((bad / "manifest.json").read_text())
    p = bad / "validation" / "expected.npy"
    manifest["files"]["validation/expected.npy"] = {"sha256": sha256_file(p), "size_bytes": p.stat().st_size}
    (bad / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckFailed, match="validation outputs differ"):
        verify_bundle(bad)


@pytest.mark.heavy
def test_baseline_of_another_model_is_refused(bundle):
    d, _ = bundle
    with pytest.raises(InputError, match="baseline bundle is of another model"):
        load_baseline(d, ["cat", "dog"], [3, 32, 32])
    assert load_baseline(d, [str(i) for i in range(10)], [1, 40])["platform"] == "android"
