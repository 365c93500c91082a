"""Bench: simulator arithmetic, target profiles, graph readers, device-output parsing, and the CLI on
real exported files."""

import json
import shutil
from pathlib import Path

import pytest
import yaml

from edgekd.bench.graph import Op, read_graph
from edgekd.bench.simulator import op_time_us, simulate
from edgekd.bench.targets import Target, Unit, all_targets, get_targets, load_target, targets_dir
from edgekd.errors import InputError
from edgekd.runtimes.android import NoDevice, benchmark_command, parse_benchmark_output, run_on_device
from factories import make_checkpoint
from helpers import run_cli

DATA = Path(__file__).parent / "data"


def _unit(**kw) -> Unit:
    base = dict(name="npu", accelerator=True, peak_gops={"int8": 1000.0}, efficiency={"default": 0.5},
                memory_bandwidth_gbps=10.0, dispatch_overhead_us=2.0, ops=["conv", "activation"])
    return Unit(**{**base, **kw})


def _cpu() -> Unit:
    return _unit(name="cpu", accelerator=False, peak_gops={"fp32": 100.0, "int8": 100.0}, ops=["*"],
                 dispatch_overhead_us=1.0)


def test_op_time_is_dispatch_plus_roofline_max():
    conv = Op("conv", "CONV_2D", "int8", flops=1e6, bytes_in=1000, bytes_out=1000, bytes_weights=8000)
    # compute: 1e6 / (1000e9 * 0.5) = 2 us; memory: 10000 B / 10e9 B/s = 1 us -> 2 + max(2, 1) = 4 us
    assert op_time_us(conv, _unit()) == pytest.approx(4.0)
    # without overlap compute and memory add: 2 + 2 + 1 = 5 us
    assert op_time_us(conv, _unit(overlap=False)) == pytest.approx(5.0)


def test_simulation_places_fuses_and_falls_back():
    t = Target(name="t", description="", formats=["tflite"], invoke_overhead_us=10, unit_switch_us=7,
               transfer_bandwidth_gbps=1.0, units=[_unit(), _cpu()])
    ops = [Op("conv", "CONV_2D", "int8", 1e6, 1000, 1000, 8000),
           Op("activation", "RELU", "int8", 1000, 1000, 1000, 0),  # fused into the conv: free
           Op("softmax", "SOFTMAX", "int8", 5000, 1000, 1000, 0)]  # not an npu op: falls back to cpu
    sim = simulate(ops, t)
    assert [o.unit for o in sim.ops] == ["npu", "npu", "cpu"]
    assert sim.ops[1].time_us == 0.0
    # softmax on cpu: 1 us dispatch + max(5000 / (100e9 * 0.5) s = 0.1 us, 2000 B / 10e9 = 0.2 us) = 1.2 us,
    # plus the switch: 7 us + 1000 B / 1e9 B/s = 1 us -> 9.2 us
    assert sim.ops[2].time_us == pytest.approx(9.2)
    assert sim.latency_ms == pytest.approx((10 + 4 + 0 + 9.2) / 1000)
    assert sim.residency_ops == pytest.approx(2 / 3)
    assert sim.fallbacks == [{"op": "SOFTMAX", "kind": "softmax", "dtype": "int8",
                              "reason": "npu: op softmax"}]


def test_fp32_ops_fall_back_from_an_int8_only_unit():
    t = Target(name="t", description="", formats=["tflite"], invoke_overhead_us=0, unit_switch_us=0,
               transfer_bandwidth_gbps=1.0, units=[_unit(), _cpu()])
    sim = simulate([Op("conv", "CONV_2D", "fp32", 1e6, 10, 10, 10)], t)
    assert sim.ops[0].unit == "cpu" and "dtype fp32" in sim.fallbacks[0]["reason"]


def test_shipped_profiles_validate_and_cover_the_required_hardware():
    names = set(all_targets())
    assert {"apple-a17-pro-ane", "apple-a14-ane", "snapdragon-8-gen3-hexagon", "google-tensor-g3",
            "arm-cortex-a78", "host-cpu"} <= names
    for p in targets_dir().glob("*.yaml"):
        assert p.read_text().lstrip().startswith("#"), f"{p} must cite its sources in comments"


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(unit_switch_us="fast"), "unit_switch_us"),
    (lambda d: d["units"][0].update(ops=["conv", "warp"]), "unknown op kind"),
    (lambda d: d["units"][-1].update(ops=["conv"]), "is the fallback and must list ops"),
    (lambda d: d.update(colour="red"), "colour: unknown field"),
])
def test_bad_profile_fields_are_named(tmp_path, edit, message):
    d = yaml.safe_load((targets_dir() / "arm-cortex-a78.yaml").read_text())
    edit(d)
    p = tmp_path / "arm-cortex-a78.yaml"
    p.write_text(yaml.safe_dump(d))
    with pytest.raises(InputError, match=message) as e:
        load_target(p)
    assert str(p) in str(e.value)


def test_unknown_target_name():
    with pytest.raises(InputError, match="unknown target.*pixel-99.*available"):
        get_targets(["pixel-99"])


def test_benchmark_model_output_parsing():
    r = parse_benchmark_output((DATA / "benchmark_model_xnnpack.txt").read_text())
    assert r.latency_ms_avg == pytest.approx(0.0179063) and r.latency_ms_p50 == pytest.approx(0.017)
    assert r.latency_ms_p90 == pytest.approx(0.024) and r.init_ms == pytest.approx(1.861)
    assert r.runs == 53921 and r.peak_memory_bytes == int(2.0625 * 1024 * 1024) and r.delegated_nodes is None
    n = parse_benchmark_output((DATA / "benchmark_model_nnapi.txt").read_text())
    assert n.latency_ms_avg == pytest.approx(1.1869) and n.latency_ms_p50 is None
    assert n.delegated_nodes == (14, 15) and n.runs == 843
    assert n.peak_memory_bytes == int(7.80859 * 1024 * 1024)
    with pytest.raises(ValueError, match="no 'Inference timings"):
        parse_benchmark_output("ERROR: Could not open model")


def test_benchmark_command_per_delegate():
    cmd = benchmark_command("/data/local/tmp/m.tflite", "gpu", threads=2, runs=10)
    assert cmd[0].endswith("benchmark_model") and "--graph=/data/local/tmp/m.tflite" in cmd
    assert "--use_gpu=true" in cmd and "--num_threads=2" in cmd and "--num_runs=10" in cmd
    with pytest.raises(InputError, match="unknown delegate"):
        benchmark_command("m", "tpu")


def test_device_runner_without_device_says_so(tmp_path):
    with pytest.raises(NoDevice, match="no Android device attached"):
        run_on_device(tmp_path / "m.tflite", adb="adb-that-does-not-exist")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    teacher = make_checkpoint(root / "teacher", width=0.5, epochs=4, name="teacher")
    ckpt = make_checkpoint(root / "student", width=0.2, epochs=4)
    meta = json.loads((ckpt / "model.json").read_text())
    meta["provenance"]["teacher"] = str(teacher)
    (ckpt / "model.json").write_text(json.dumps(meta))
    r = run_cli("export", ckpt, "--out", root / "export", "--formats", "coreml,tflite,onnx",
                "--quant", "fp32,fp16,full-int8,static-int8")
    assert r.returncode in (0, 1), r.stderr  # a mode may miss parity on this tiny model; the rest stand
    return root


@pytest.mark.heavy
def test_graph_readers_count_the_work(exported):
    tfl = read_graph("tflite", exported / "export" / "student-fp32.tflite")
    cml = read_graph("coreml", exported / "export" / "student-fp16.mlpackage")
    # (a 1-channel Conv1d becomes DEPTHWISE_CONV_2D in TFLite, a conv in Core ML: count both)
    conv_flops = lambda ops: sum(o.flops for o in ops  # noqa: E731
                                 if o.kind in ("conv", "depthwise_conv", "fully_connected"))
    # the same network read from two formats does the same multiply-adds
    assert conv_flops(tfl) == pytest.approx(conv_flops(cml), rel=0.01) and conv_flops(tfl) > 0
    assert {o.dtype for o in cml if o.kind == "conv"} == {"fp16"}
    assert not [o for o in tfl if o.name in ("MUL", "ADD")], "BatchNorm must be folded into the convs"
    int8 = read_graph("tflite", exported / "export" / "student-full-int8.tflite")
    assert {o.dtype for o in int8 if o.kind == "conv"} == {"int8"}
    onx = read_graph("onnx", exported / "export" / "student-fp32.onnx")
    assert conv_flops(onx) == pytest.approx(conv_flops(tfl), rel=0.01)
    int8_onnx = sorted((exported / "export").glob("student-*int8*.onnx"))
    assert int8_onnx
    for path in int8_onnx:  # QDQ or integer ops: int8 kernels
        assert {o.dtype for o in read_graph("onnx", path) if o.kind == "conv"} == {"int8"}, path.name


@pytest.mark.heavy
def test_bench_cli_end_to_end(exported, tmp_path):
    r = run_cli("bench", exported / "export", "--out", tmp_path / "b", "--targets",
                "apple-a17-pro-ane,host-cpu,host-cpu-onnxruntime")
    assert r.returncode == 0, r.stderr
    bench = json.loads((tmp_path / "b" / "bench.json").read_text())
    rows = bench["rows"]
    measured = [x for x in rows if x["kind"] == "measured"]
    simulated = [x for x in rows if x["kind"] == "simulated"]
    assert {x["runner"] for x in measured} >= {"torch-eager", "tflite", "onnxruntime", "coreml-exec"}
    for x in measured:
        assert 0 < x["accuracy"] <= 1 and x["teacher_agreement"] is not None and x["retention"] > 0
        assert x["size_bytes"] > 0 and x["zip_size_bytes"] > 0
        if x["runner"] in ("tflite", "onnxruntime", "torch-eager"):
            assert x["latency_ms_p50"] > 0 and x["latency_ms_p90"] >= x["latency_ms_p50"]
            assert x["threads"] == 1 and x["cpu"] and x["runtime_version"]
    assert {x["target"] for x in simulated} == {"apple-a17-pro-ane", "host-cpu", "host-cpu-onnxruntime"}
    assert all(x.get("latency_ms_p90") is None for x in simulated)  # one estimate: its spread is the band
    onnx_sim = [x for x in simulated if x["target"] == "host-cpu-onnxruntime"]
    assert {x["format"] for x in onnx_sim} == {"onnx"} and not [x for x in onnx_sim if x.get("failed")]
    assert {x["quant"] for x in onnx_sim} == {x["quant"] for x in measured if x["format"] == "onnx"}
    assert all(x["latency_ms_p50"] > 0 for x in onnx_sim)
    assert "host-cpu-onnxruntime" in bench["host_profile"]
    ane = [x for x in simulated if x["target"] == "apple-a17-pro-ane"]
    assert all(x["format"] == "coreml" for x in ane)
    fp16 = next(x for x in ane if x["quant"] == "fp16")
    fp32 = next(x for x in ane if x["quant"] == "fp32")
    assert fp16["accelerator_residency"]["ops"] == 1.0 and not fp16["fallback_ops"]
    assert fp32["accelerator_residency"]["ops"] == 0.0 and fp32["fallback_ops"]  # ANE runs no fp32

    r = run_cli("compare", tmp_path / "b")
    assert r.returncode == 0, r.stderr
    assert "retention" in r.stdout and "apple-a17-" in r.stdout and "coreml/fp16" in r.stdout
    page = (tmp_path / "b" / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 2 and "<table" in page and "apple-a17-pro-ane" in page
    assert "gate has not run" in page  # compare alone: no verdict yet
    assert (tmp_path / "b" / "report.md").read_text().startswith("# student")


@pytest.mark.heavy
def test_bench_reports_missing_and_altered_files_and_keeps_the_rest(exported, tmp_path):
    export = tmp_path / "export"
    shutil.copytree(exported / "export", export)
    (export / "student-fp32.onnx").unlink()
    with open(export / "student-fp16.tflite", "ab") as f:
        f.write(b"tampered")
    r = run_cli("bench", export, "--out", tmp_path / "b", "--targets", "host-cpu")
    assert r.returncode == 0, r.stderr
    rows = json.loads((tmp_path / "b" / "bench.json").read_text())["rows"]
    failed = {x["artifact"]: x["failed"] for x in rows if "failed" in x}
    assert "file is missing" in failed["student-fp32.onnx"]
    assert "altered after export" in failed["student-fp16.tflite"]
    assert any(x["artifact"] == "student-fp32.tflite" and "failed" not in x for x in rows)


@pytest.mark.heavy
def test_bench_android_without_device_says_so(exported, tmp_path):
    r = run_cli("bench", exported / "export", "--out", tmp_path / "b", "--android", "xnnpack,nnapi")
    assert r.returncode == 2 and "no Android device attached" in r.stderr and not (tmp_path / "b").exists()


@pytest.mark.heavy
def test_bench_cli_bad_inputs(exported, tmp_path):
    r = run_cli("bench", exported / "export", "--out", tmp_path / "b", "--targets", "pixel-99")
    assert r.returncode == 2 and "unknown target" in r.stderr and not (tmp_path / "b").exists()
    r = run_cli("bench", tmp_path / "nothing.json", "--out", tmp_path / "c")
    assert r.returncode == 2 and "no such artifacts file" in r.stderr


def test_bench_on_named_data_scales_it_as_the_model_was_trained_and_keeps_its_split(tmp_path):
    """`edgekd bench --data NAME`: the data the model was trained on comes back with its own split seed and
    options; other data of the task is scaled with the model's recorded mean and std, not its own; data
    whose classes are named otherwise is refused."""
    import numpy as np

    from edgekd.bench.stage import check_data_fits, dataset_for_manifest
    from edgekd.data import load_dataset

    trained = load_dataset("digits", seed=7, normalization=[1.0, 0.05])
    manifest = {"checkpoint": "gone", "model": "s", "artifacts": [], "mean": trained.mean, "std": trained.std,
                "labels": list(trained.labels), "input_shape": list(trained.input_shape),
                "data": trained.source}
    path = tmp_path / "artifacts.json"
    path.write_text(json.dumps(manifest))
    again = dataset_for_manifest(path, "digits")
    assert again.fingerprint == trained.fingerprint  # seed 7's split and the fixed scale, not seed 42's
    path.write_text(json.dumps({**manifest, "data": {"name": "mnist1d", "seed": 42, "options": {}}}))
    other = dataset_for_manifest(path, "digits")  # not the recorded data: scaled as the model expects
    assert (other.mean, other.std) == (1.0, 0.05)
    own = load_dataset("digits")
    assert own.mean != 1.0 and not np.allclose(other.x_test, own.x_test)
    renamed = {**manifest, "labels": [f"digit {i}" for i in range(10)]}
    with pytest.raises(InputError, match=r"class 0 is 'digit 0' \(field 'labels'\).*calls it '0'"):
        check_data_fits(renamed, path, trained)
    path.write_text(json.dumps({k: v for k, v in manifest.items() if k not in ("mean", "std", "data")}))
    with pytest.raises(InputError, match="records no input normalisation"):
        dataset_for_manifest(path, "digits")


def test_the_runtime_library_is_imported_before_a_files_load_is_timed(monkeypatch):
    """The first file of each format must not be charged its runtime's import (3 s and 140 MB for Core ML's
    MIL loader): measure() imports it before it starts the clock and the memory watermark."""
    import sys

    import numpy as np

    from edgekd.bench import measure as m
    from edgekd.runtimes import FORMAT_RUNNER, RUNTIME_MODULES, import_runtime

    assert set(RUNTIME_MODULES) == set(FORMAT_RUNNER.values()) | {"torch"}
    for fmt in FORMAT_RUNNER:
        import_runtime(fmt)
        assert all(name in sys.modules for name in RUNTIME_MODULES[FORMAT_RUNNER[fmt]])
    calls = []

    class Stop(Exception):
        pass

    def loading(*args, **kwargs):
        calls.append("load")
        raise Stop

    monkeypatch.setattr(m, "import_runtime", lambda fmt: calls.append(f"import {fmt}"))
    monkeypatch.setattr(m, "load_runner", loading)
    with pytest.raises(Stop):
        x = np.zeros((1, 1, 4), np.float32)
        m.measure("coreml", Path("x.mlpackage"), x, np.zeros(1), np.zeros(1), None)
    assert calls == ["import coreml", "load"]


def test_bench_refuses_an_export_made_from_other_weights_than_its_checkpoint_holds_now(tmp_path):
    """A re-run stopped after distill and before export leaves the old files beside a new student: bench
    would give the old files' rows the new checkpoint's accuracy and parameter count."""
    from edgekd.bench.stage import bench_artifacts
    from edgekd.data import load_dataset

    make_checkpoint(tmp_path / "s", epochs=0)
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "artifacts.json").write_text(json.dumps(
        {"checkpoint": "../s", "checkpoint_sha256": "f" * 64, "model": "student", "params": 1,
         "artifacts": []}))
    with pytest.raises(InputError, match="exported from other weights than .*s holds now"):
        bench_artifacts(tmp_path / "e" / "artifacts.json", tmp_path / "b", targets=[],
                        data=load_dataset("mnist1d"))
    assert not (tmp_path / "b").exists()
