"""Export with the real converters and runtimes on tiny trained models."""

import json
import zipfile

import numpy as np
import pytest
import torch
from torch import nn

from edgekd.checkpoint import load_checkpoint
from edgekd.config import ExportConfig
from edgekd.data import load_dataset
from edgekd.errors import CheckFailed, InputError
from edgekd.export import export_checkpoint, plan_exports
from edgekd.export.common import EXPORTERS, ExportMeta
from edgekd.export.tflite_metadata import read_metadata
from edgekd.models import WithProbabilities
from edgekd.parity import measure_parity
from edgekd.runtimes import load_runner
from factories import make_checkpoint
from helpers import mounted_tmpfs, run_cli

pytestmark = pytest.mark.heavy  # real converters on trained checkpoints
DEFAULTS = ExportConfig().model_dump()


def _export(ckpt, out, formats, quants, **kw):
    cfg = {**DEFAULTS, "formats": formats, "quants": quants, **kw}
    return export_checkpoint(ckpt, out, **cfg)


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "student", width=0.3125)  # the ~10x student


# mixed-pal exists only for a checkpoint the compress step trained (tests/test_compress.py)
ALL_MODES = [(f, q) for f in EXPORTERS.names() for q in EXPORTERS.get(f).quants if q != "mixed-pal"]


@pytest.mark.parametrize("fmt, quant", ALL_MODES, ids=[f"{f}-{q}" for f, q in ALL_MODES])
def test_every_mode_exports_and_matches_pytorch(student, tmp_path, fmt, quant):
    # Thresholds for mechanics on a tiny, briefly trained model; the real defaults are measured on the
    # MNIST-1D student in benchmarks/export_matrix.py.
    # pruning and 2-bit palettes without fine-tuning cost most (the compress step trains them back)
    floor = {"prune-pal4": 0.9, "pal2": 0.5}.get(quant, 0.95)
    (a,) = _export(student, tmp_path, [fmt], [quant], min_top1_agreement={"default": floor})
    assert a.path.exists() and a.size_bytes > 0
    # the shared parity helper, re-run here through the same runner on fresh held-out inputs
    ckpt, model = load_checkpoint(student)
    data = load_dataset("mnist1d")
    x = data.x_test[-300:]
    with torch.no_grad():
        ref = WithProbabilities(model)(torch.from_numpy(x)).numpy()
    p = measure_parity(ref, load_runner(fmt, a.path).predict(x))
    if quant == "fp32":
        assert p.top1_agreement == 1.0 and p.max_abs_diff <= 1e-5
    else:
        assert p.top1_agreement >= floor and p.cosine > min(floor, 0.9)
    assert not [f for f in tmp_path.iterdir() if ".tmp" in f.name]
    manifest = json.loads((tmp_path / "artifacts.json").read_text())
    row = manifest["artifacts"][0]
    assert row["format"] == fmt and row["quant"] == quant and row["size_bytes"] == a.size_bytes
    assert set(row["parity"]) >= {"top1_agreement", "max_abs_diff", "cosine", "snr_db"}


def test_quantised_files_are_smaller(student, tmp_path):
    arts = {(a.format, a.quant): a.size_bytes
            for a in _export(student, tmp_path, ["tflite", "coreml"], ["fp32", "fp16", "int8"])}
    for fmt in ("tflite", "coreml"):
        assert arts[(fmt, "int8")] < arts[(fmt, "fp16")] < arts[(fmt, "fp32")]


SHAPES = {"cnn1d": "mnist1d", "mlp": "mnist1d", "transformer": "mnist1d", "mobilenet2d": "digits",
          "mobilenet2d-s2": "digits"}


@pytest.mark.parametrize("arch", sorted(SHAPES))
def test_every_model_family_exports_to_every_format(arch, tmp_path):
    ckpt = make_checkpoint(tmp_path / "ck", arch=arch, dataset=SHAPES[arch], width=0.25, epochs=1)
    arts = _export(ckpt, tmp_path / "out", ["coreml", "tflite", "onnx"], ["fp32"], parity_samples=64)
    assert sorted(a.format for a in arts) == ["coreml", "onnx", "tflite"]
    for a in arts:
        assert a.parity.top1_agreement == 1.0 and a.parity.max_abs_diff <= 1e-5, (a.format, a.parity)


def test_coreml_fp16_is_emulated_not_idealised(tmp_path):
    ckpt = make_checkpoint(tmp_path / "ck", arch="transformer", width=0.25, epochs=1)
    (a,) = _export(ckpt, tmp_path / "out", ["coreml"], ["fp16"], parity_samples=64)
    assert 0 < a.parity.max_abs_diff < 5e-3  # fp16 rounding is visible but small


def test_coreml_package_carries_labels_and_descriptions(student, tmp_path):
    import coremltools as ct

    (a,) = _export(student, tmp_path, ["coreml"], ["int8"])
    spec = ct.models.MLModel(str(a.path), skip_model_load=True).get_spec()
    d = spec.description
    assert d.predictedFeatureName == "classLabel"
    assert d.metadata.author == "edgekd" and d.metadata.license and d.metadata.versionString == "1.0.0"
    assert d.metadata.shortDescription and "normalised" in d.input[0].shortDescription
    assert json.loads(d.metadata.userDefined["edgekd.labels"]) == [str(i) for i in range(10)]
    assert spec.specificationVersion >= 9  # iOS18
    labels = list(spec.mlProgram.functions["main"].block_specializations.values())[0].operations[-1]
    assert labels.type == "classify"


def test_tflite_metadata_carries_labels_and_normalisation(student, tmp_path):
    (a,) = _export(student, tmp_path, ["tflite"], ["full-int8"])
    md = read_metadata(a.path)
    ckpt, _ = load_checkpoint(student)
    assert md["labels"] == list(ckpt.labels) and md["associated_files"] == ["labels.txt"]
    assert (md["mean"] == [pytest.approx(ckpt.mean, abs=1e-6)]
            and md["std"] == [pytest.approx(ckpt.std, rel=1e-6)])
    assert md["author"] == "edgekd" and md["min_parser_version"] == "1.0.0"
    assert zipfile.is_zipfile(a.path)
    runner = load_runner("tflite", a.path)
    assert runner.inputs["x"]["dtype"] == np.int8  # full-integer: int8 in, int8 out


def test_onnx_metadata(student, tmp_path):
    import onnx

    (a,) = _export(student, tmp_path, ["onnx"], ["fp32"])
    props = {p.key: p.value for p in onnx.load(str(a.path)).metadata_props}
    assert json.loads(props["edgekd.labels"])[3] == "3" and props["quant"] == "fp32"


def test_a_row_is_predicted_alike_alone_or_batched(student, tmp_path):
    """A row's prediction does not depend on the rows run beside it. onnxruntime's dynamic int8 scales
    activations by the range of the whole input tensor, so its files run a row at a time, as an app runs
    them; batched, one loud row would change every other row's result."""
    from edgekd.runtimes.onnxrt import batch_dependent

    arts = _export(student, tmp_path, ["onnx", "tflite"], ["fp32", "dynamic-int8"])
    x = load_dataset("mnist1d").x_test[:64].copy()
    x[0] *= 50  # widens any range shared across the batch
    for a in arts:
        runner = load_runner(a.format, a.path)
        alone = np.concatenate([runner.predict(x[i:i + 1]) for i in range(len(x))])
        assert np.abs(runner.predict(x) - alone).max() < 1e-5, (a.format, a.quant)
    assert [batch_dependent(a.path) for a in arts if a.format == "onnx"] == [False, True]


def test_a_file_below_its_threshold_fails_the_export_and_is_not_kept(student, tmp_path):
    with pytest.raises(CheckFailed, match=r"tflite/fp32 .*max abs diff .* > allowed 0"):
        _export(student, tmp_path, ["tflite", "onnx"], ["fp32"], fp32_max_abs_diff=0.0)
    manifest = json.loads((tmp_path / "artifacts.json").read_text())
    assert {f["format"] for f in manifest["failures"]} <= {"tflite", "onnx"} and manifest["failures"]
    assert not list(tmp_path.glob("*.tflite")) and not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


def test_exporting_again_into_a_folder_leaves_no_file_the_new_manifest_does_not_list(student, tmp_path):
    """A file an earlier export wrote (another plan, or one that now misses parity) must not stay beside the
    new artifacts.json under a name an app would ship."""
    _export(student, tmp_path, ["onnx", "tflite"], ["fp32", "dynamic-int8"])
    assert len(list(tmp_path.glob("student-*"))) == 4
    (tmp_path / "notes.txt").write_text("mine")  # not edgekd's: kept
    _export(student, tmp_path, ["onnx"], ["fp32"])
    assert sorted(p.name for p in tmp_path.glob("student-*")) == ["student-fp32.onnx"]
    with pytest.raises(CheckFailed):  # the fp32 file now misses parity: the old one goes too
        _export(student, tmp_path, ["onnx"], ["fp32"], fp32_max_abs_diff=0.0)
    assert not list(tmp_path.glob("student-*")) and (tmp_path / "notes.txt").is_file()


def test_plan_rejects_unknown_and_misplaced_modes():
    with pytest.raises(InputError, match="unknown quantisation 'int3'"):
        plan_exports(["tflite"], ["int3"])
    with pytest.raises(InputError, match="'w8a8' .* is not a mode of tflite"):
        plan_exports(["tflite"], ["w8a8"])
    assert plan_exports(["tflite", "coreml"], ["fp16"]) == [("tflite", "fp16"), ("coreml", "fp16")]


def test_coreml_executor_refuses_unknown_ops_by_name(tmp_path):
    import coremltools as ct

    from edgekd.runtimes.coreml_exec import MILExecutor

    class Odd(nn.Module):
        def forward(self, x):
            return torch.sin(x) * 2

    ml = ct.convert(torch.jit.trace(Odd().eval(), torch.zeros(1, 4)),
                    inputs=[ct.TensorType(name="x", shape=(1, 4))], convert_to="mlprogram",
                    minimum_deployment_target=ct.target.iOS16)
    ml.save(str(tmp_path / "odd.mlpackage"))
    with pytest.raises(InputError, match="does not support op.*sin"):
        MILExecutor(tmp_path / "odd.mlpackage")


def test_export_cli_bad_inputs(student, tmp_path):
    r = run_cli("export", student, "--out", tmp_path / "a", "--quant", "int3")
    assert r.returncode == 2 and "unknown quantisation 'int3' (--quant)" in r.stderr
    assert not (tmp_path / "a").exists()
    r = run_cli("export", student, "--out", tmp_path / "b", "--formats", "coreml", "--quant", "w8a8",
                "--coreml-target", "iOS16")
    assert r.returncode == 2 and "needs deployment target iOS17" in r.stderr and "--coreml-target" in r.stderr
    r = run_cli("export", tmp_path, "--out", tmp_path / "c")
    assert r.returncode == 2 and "not an edgekd checkpoint" in r.stderr
    r = run_cli("export", student, "--out", tmp_path / "d", "--formats", "tensorrt")
    assert r.returncode == 2 and "formats" in r.stderr and "Traceback" not in r.stderr


def test_export_cli_writes_artifacts(student, tmp_path):
    r = run_cli("export", student, "--out", tmp_path / "o", "--formats", "onnx,tflite", "--quant",
                "fp32,dynamic-int8")
    assert r.returncode == 0, r.stderr
    manifest = json.loads((tmp_path / "o" / "artifacts.json").read_text())
    assert [(a["format"], a["quant"]) for a in manifest["artifacts"]] == [
        ("onnx", "fp32"), ("onnx", "dynamic-int8"), ("tflite", "fp32"), ("tflite", "dynamic-int8")]
    assert all((tmp_path / "o" / a["path"]).is_file() for a in manifest["artifacts"])


def test_a_full_disk_is_an_input_error_naming_the_path_not_a_converter_failure(student, tmp_path):
    with mounted_tmpfs(tmp_path / "full", "size=8k") as full:
        r = run_cli("export", student, "--out", full / "out", "--formats", "onnx,tflite", "--quant", "fp32")
        assert r.returncode == 2, r.stderr
        assert "No space left on device" in r.stderr and str(full) in r.stderr, r.stderr
        assert "converter" not in r.stderr.lower() and "Traceback" not in r.stderr
        assert not (full / "out").exists()


def test_coreml_executor_runs_relu6_and_padding_as_efficientnet_lite_needs(tmp_path):
    """clip (ReLU6) and pad (TF 'SAME' padding as a ZeroPad2d) are executed, matching PyTorch."""
    model = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(3, 4, 3, stride=2), nn.ReLU6(), nn.Flatten(),
                          nn.Linear(4 * 8 * 8, 5)).eval()
    wrapped = WithProbabilities(model).eval()
    x = np.random.default_rng(0).normal(size=(8, 3, 16, 16)).astype(np.float32) * 4
    meta = ExportMeta(name="t", labels=tuple("abcde"), mean=0.0, std=1.0, input_shape=(3, 16, 16))
    EXPORTERS.get("coreml").write(wrapped, x[:1], tmp_path / "t.mlpackage", "fp32", x, meta, target="iOS18")
    with torch.no_grad():
        reference = wrapped(torch.from_numpy(x)).numpy()
    p = measure_parity(reference, load_runner("coreml", tmp_path / "t.mlpackage").predict(x))
    assert p.top1_agreement == 1.0 and p.max_abs_diff < 1e-5
