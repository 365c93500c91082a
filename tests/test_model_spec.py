"""Models from anywhere (edgekd.models.spec): factories with weights, torch.export programs, and the
checkpoint that records the spec so every stage rebuilds the same network."""

import numpy as np
import pytest
import torch

from edgekd.checkpoint import load_checkpoint, save_checkpoint
from edgekd.errors import InputError
from edgekd.models import resolve
from edgekd.types import ModelSpec
from own_nets import tiny_net

SPEC = ModelSpec("factory", factory="own_nets:tiny_net", kwargs={"in_features": 16, "num_classes": 3})


def _x() -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(0).normal(size=(5, 1, 16)).astype(np.float32))


def _trained_state() -> dict:
    torch.manual_seed(3)
    return tiny_net().state_dict()


def test_a_factory_with_safetensors_weights_and_a_renaming_map(tmp_path):
    from safetensors.torch import save_file

    state = _trained_state()
    save_file({f"module.{k}": v for k, v in state.items()}, str(tmp_path / "w.safetensors"))
    spec = ModelSpec(**{**SPEC.__dict__, "weights": str(tmp_path / "w.safetensors"),
                        "rename": {r"^module\.": ""}})
    model = resolve(spec, (1, 16), 3)
    reference = tiny_net()
    reference.load_state_dict(state)
    torch.testing.assert_close(model(_x()), reference.eval()(_x()))


def test_a_pytorch_state_dict_inside_a_training_checkpoint_wrapper(tmp_path):
    torch.save({"epoch": 3, "state_dict": _trained_state()}, tmp_path / "w.pt")
    model = resolve(ModelSpec(**{**SPEC.__dict__, "weights": str(tmp_path / "w.pt")}), (1, 16), 3)
    assert torch.equal(model.state_dict()["1.weight"], _trained_state()["1.weight"])


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # unpickling this would run code: create the marker file
        return (open, (self.marker, "w"))


def test_a_weights_file_that_holds_code_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "code-ran"
    torch.save({"1.weight": torch.zeros(8, 16), "payload": _Payload(str(marker))}, tmp_path / "evil.pt")
    with pytest.raises(InputError, match="evil.pt: refused.*pickled code"):
        resolve(ModelSpec(**{**SPEC.__dict__, "weights": str(tmp_path / "evil.pt")}), (1, 16), 3)
    assert not marker.exists()


@pytest.mark.parametrize("edit, first", [
    (lambda s: {k.replace("1.", "fc."): v for k, v in s.items()},
     "the model's '1.weight' is not in the file"),
    (lambda s: {**s, "1.weight": torch.zeros(8, 15)}, "'1.weight' has shape [8, 15] in the file, [8, 16]"),
    (lambda s: {**s, "extra.bias": torch.zeros(2)}, "the file's 'extra.bias' is not in the model"),
])
def test_weights_that_do_not_fit_name_the_first_bad_key(tmp_path, edit, first):
    torch.save(edit(_trained_state()), tmp_path / "w.pt")
    with pytest.raises(InputError, match="weights do not fit") as e:
        resolve(ModelSpec(**{**SPEC.__dict__, "weights": str(tmp_path / "w.pt")}), (1, 16), 3)
    assert first in str(e.value) and "model.rename" in str(e.value)


@pytest.mark.parametrize("ref, message", [
    ("no_such_package.nets:net", "module 'no_such_package.nets' does not import"),
    ("own_nets:missing", "has no callable 'missing'"),
    ("own_nets", "must read 'package.module:function'"),
    ("own_nets:not_a_module", "returned str, not a torch nn.Module"),
])
def test_a_factory_that_does_not_work_is_named(ref, message):
    with pytest.raises(InputError, match=message):
        resolve(ModelSpec("factory", factory=ref), (1, 16), 3)


def test_a_checkpoint_records_its_spec_and_rebuilds_the_same_network(tmp_path):
    model = resolve(SPEC, (1, 16), 3)
    ckpt = save_checkpoint(model, tmp_path / "ck", name="own", role="teacher", arch="factory", width=1.0,
                           depth=None, input_shape=(1, 16), labels=("a", "b", "c"), mean=0.0, std=1.0,
                           data_fingerprint="f", accuracy=None, spec=SPEC)
    again, rebuilt = load_checkpoint(ckpt.path)
    assert again.model_spec == SPEC and again.model_spec.kind == "factory"
    torch.testing.assert_close(rebuilt(_x()), model(_x()))


def test_a_torch_export_program(tmp_path):
    model = tiny_net().eval()
    torch.export.save(torch.export.export(model, (_x(),)), tmp_path / "m.pt2")
    loaded = resolve(ModelSpec("program", program=str(tmp_path / "m.pt2")), (1, 16), 3)
    torch.testing.assert_close(loaded(_x()), model(_x()))
    with pytest.raises(InputError, match="not a readable torch.export program"):
        (tmp_path / "bad.pt2").write_bytes(b"junk")
        resolve(ModelSpec("program", program=str(tmp_path / "bad.pt2")), (1, 16), 3)


def test_a_program_checkpoint_loads_again_and_its_file_is_its_cache_key(tmp_path):
    """A torch.export program's module refuses .eval(): loading its checkpoint (what export, bench and a
    second run's teacher do) must not call it. And the teacher cache keys on the file, not its path."""
    from edgekd.distill.stage import model_key

    batch = torch.export.Dim("batch")
    path = tmp_path / "m.pt2"
    model = tiny_net().eval()
    torch.export.save(torch.export.export(model, (_x(),), dynamic_shapes=({0: batch},)), path)
    spec = ModelSpec("program", program=str(path))
    key = model_key(spec)
    loaded = resolve(spec, (1, 16), 3)
    ckpt = save_checkpoint(loaded, tmp_path / "ck", name="prog", role="teacher", arch="program", width=1.0,
                           depth=None, input_shape=(1, 16), labels=("a", "b", "c"), mean=0.0, std=1.0,
                           data_fingerprint="f", accuracy=None, spec=spec)
    _, rebuilt = load_checkpoint(ckpt.path)
    torch.testing.assert_close(rebuilt(_x()), model(_x()))
    torch.manual_seed(9)
    torch.export.save(torch.export.export(tiny_net().eval(), (_x(),), dynamic_shapes=({0: batch},)), path)
    assert model_key(spec) != key  # another network saved under the same path


def test_a_program_fixed_to_one_batch_size_is_told_to_export_a_dynamic_batch(tmp_path):
    from edgekd.data import load_dataset
    from edgekd.distill.stage import check_fits_data

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.normal(size=(60, 1, 16)).astype(np.float32), y=np.arange(60) % 3)
    torch.export.save(torch.export.export(tiny_net().eval(), (_x()[:1],)), tmp_path / "one.pt2")
    model = resolve(ModelSpec("program", program=str(tmp_path / "one.pt2")), (1, 16), 3)
    with pytest.raises(InputError, match=r"dynamic batch: dynamic_shapes=\(\{0: torch.export.Dim"):
        check_fits_data(model, load_dataset("npz", tmp_path / "d.npz"), "one.pt2")


@pytest.mark.heavy
def test_export_and_bench_a_model_of_yours_with_no_distill_run(tmp_path):
    """`edgekd export MODEL.yaml`: a factory with weights, the data it is checked on, and nothing else."""
    import json

    from helpers import run_cli

    rng = np.random.default_rng(0)
    y = np.arange(90) % 3
    x = rng.normal(0, 0.3, (90, 1, 16)).astype(np.float32)
    x[np.arange(90), 0, y * 5] += 3.0
    np.savez(tmp_path / "d.npz", x=x, y=y, labels=np.array(["a", "b", "c"]))
    torch.save(_trained_state(), tmp_path / "w.pt")
    (tmp_path / "model.yaml").write_text(
        "name: mine\nmodel: {factory: 'own_nets:tiny_net', kwargs: {in_features: 16}, weights: w.pt}\n"
        "data: {name: npz, path: d.npz, normalization: [0.0, 1.0]}\n")
    r = run_cli("export", tmp_path / "model.yaml", "--out", tmp_path / "e", "--formats", "onnx,tflite",
                "--quant", "fp32")
    assert r.returncode == 0, r.stderr
    meta = json.loads((tmp_path / "e" / "model" / "model.json").read_text())
    assert meta["model"]["factory"] == "own_nets:tiny_net" and meta["mean"] == 0.0 and meta["std"] == 1.0
    from edgekd.fileio import sha256_file

    assert meta["provenance"]["imported"]["weights_sha256"] == sha256_file(tmp_path / "w.pt")  # which weights
    manifest = json.loads((tmp_path / "e" / "artifacts.json").read_text())
    assert {a["format"] for a in manifest["artifacts"]} == {"onnx", "tflite"}
    assert all(a["parity"]["top1_agreement"] == 1.0 for a in manifest["artifacts"])
    b = run_cli("bench", tmp_path / "e", "--out", tmp_path / "b", "--targets", "host-cpu")
    assert b.returncode == 0, b.stderr
    rows = json.loads((tmp_path / "b" / "bench.json").read_text())["rows"]
    assert {r["format"] for r in rows} == {"torch", "onnx", "tflite"} and all("failed" not in r for r in rows)
