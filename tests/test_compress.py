"""The compress step: fake compression on the exporters' own grids, BatchNorm folding, the bit allocation
by sensitivity, and (heavy) trained files that the real converters store exactly."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from conftest import tiny_recipe
from edgekd.compress.allocate import allocate_bits, average_bits
from edgekd.compress.fake import Int8, Palette, distinct_per_group, int8_grid
from edgekd.compress.fold import fold, neutral_variance, unfold, weighted_layers
from edgekd.errors import InputError
from edgekd.models import resolve
from edgekd.types import ModelSpec
from helpers import run_cli, run_main


def _randomised(arch: str, shape, width: float = 0.25, depth=None) -> nn.Module:
    """A zoo network with BatchNorm statistics that are not the identity (as after training)."""
    torch.manual_seed(0)
    model = resolve(ModelSpec.zoo(arch, width, depth), shape, 10)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


@pytest.mark.parametrize("arch,shape", [("cnn1d", (1, 40)), ("mobilenet2d", (1, 16, 16))])
def test_fold_keeps_the_outputs_and_leaves_batchnorm_a_pure_shift(arch, shape):
    model = _randomised(arch, shape)
    x = torch.randn(8, *shape)
    with torch.no_grad():
        before = model(x)
        folded = fold(model, arch)
        during = model(x)
        unfold(model, folded)
        after = model(x)
    assert folded.norms, "the zoo network has BatchNorms to fold"
    assert torch.allclose(before, during, atol=1e-4) and torch.allclose(before, after, atol=1e-4)
    for bn in folded.norms.values():  # scale exactly 1: a converter's fold leaves the weights alone
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        assert torch.equal(scale, torch.ones_like(scale)) and not bn.running_mean.any()


def test_neutral_variance_is_exactly_one_in_float32():
    for eps in (1e-5, 1e-3, 1e-6):
        v = neutral_variance(eps)
        assert (torch.tensor(v, dtype=torch.float32) + eps).item() == 1.0


def test_int8_grid_is_the_converters_formula_and_idempotent():
    w = torch.randn(6, 3, 5)
    q = int8_grid(w)
    scale = w.flatten(1).abs().amax(1) / 127  # coremltools linear_symmetric = ai-edge-quantizer symmetric
    ints = q / scale.view(-1, 1, 1)
    assert torch.allclose(ints, ints.round(), atol=1e-3) and ints.abs().max() <= 127 + 1e-3
    assert torch.equal(int8_grid(q), q)  # re-quantising the snapped weights changes nothing
    w.requires_grad_(True)
    Int8()(w).sum().backward()  # straight-through: the gradient reaches the float weight unchanged
    assert torch.equal(w.grad, torch.ones_like(w))


@pytest.mark.parametrize("bits,per_channel,sparsity", [(2, True, 0.0), (4, True, 0.0), (4, True, 0.5),
                                                       (6, False, 0.0)])
def test_palette_snap_holds_at_most_its_entries_and_the_sparsity(bits, per_channel, sparsity):
    torch.manual_seed(0)
    w = torch.randn(8, 4, 9)
    fake = Palette(w, bits, per_channel, sparsity, ramp_steps=4)
    fake.train()
    for _ in range(5):  # training forwards ramp the sparsity up and move the centroids
        fake(w)
    snapped = fake.snap(w)
    assert distinct_per_group(snapped, per_channel) <= 2 ** bits
    if sparsity:
        assert abs((snapped == 0).float().mean().item() - sparsity) < 0.01
    else:
        assert (snapped == 0).sum() == 0
    assert torch.equal(snapped, snapped.half().float())  # the float16 palette the file stores


def test_palette_sparsity_ramps_with_training_steps():
    w = torch.randn(16, 16)
    fake = Palette(w, 4, True, sparsity=0.5, ramp_steps=10)
    fake.train()
    shares = []
    for _ in range(12):
        out = fake(w)
        shares.append((out == 0).float().mean().item())
    assert shares[0] < 0.2 < shares[4] < 0.5 and abs(shares[-1] - 0.5) < 0.01


def test_allocate_bits_moves_the_least_sensitive_weights_first():
    sens = {"a": {"kl": 0.50, "weights": 100}, "b": {"kl": 0.01, "weights": 300},
            "c": {"kl": 0.02, "weights": 100}, "d": {"kl": 0.001, "weights": 100}}
    bits = allocate_bits(sens, 2, 4, 3.5)
    # per weight: d 1e-5, b 3.3e-5, c 2e-4, a 5e-3. d alone: 3.67 bits; d and b: 2.67 <= 3.5
    assert bits == {"a": 4, "b": 2, "c": 4, "d": 2}
    assert average_bits(bits, {n: s["weights"] for n, s in sens.items()}) == pytest.approx(16 / 6)
    assert allocate_bits(sens, 2, 4, 4.0) == {n: 4 for n in sens}
    with pytest.raises(InputError, match="compress.average_bits"):
        allocate_bits(sens, 2, 4, 1.5)


def test_allocate_sparsity_puts_the_zeros_where_they_cost_least_and_meets_the_share():
    from edgekd.compress.allocate import SPARSITY_LADDER, allocate_sparsity

    rungs = len(SPARSITY_LADDER)
    sens = {"cheap": {"weights": 800, "kl": [0.001 * i for i in range(rungs)]},  # zeros cost little here
            "dear": {"weights": 100, "kl": [0.5 * i for i in range(rungs)]},
            "mid": {"weights": 100, "kl": [0.01 * i ** 2 for i in range(rungs)]}}
    weights = {n: s["weights"] for n, s in sens.items()}
    for target in (0.3, 0.5, 0.95):
        got = allocate_sparsity(sens, target)
        zeros = sum(round(got[n] * weights[n]) for n in got)  # what Palette prunes: a count per layer
        assert abs(zeros - target * 1000) <= 1, (target, got)
        assert sum(s not in SPARSITY_LADDER for s in got.values()) <= 1, got  # one layer between rungs
    got = allocate_sparsity(sens, 0.5)
    assert got["cheap"] > got["mid"] >= got["dear"] and got["dear"] == 0.0, got
    with pytest.raises(InputError, match="compress.sparsity"):
        allocate_sparsity(sens, 0.97)


def test_weighted_layers_are_what_the_exporters_quantise():
    model = _randomised("cnn1d", (1, 40))
    layers = weighted_layers(model)
    assert layers and all(isinstance(m, (nn.Conv1d, nn.Linear)) for m in layers.values())


@pytest.mark.parametrize("field,modes,needle", [
    ("tflite", ["pal2"], "TFLite files cannot carry 'pal2'"),
    ("onnx", ["int8"], "ONNX files cannot carry 'int8'"),
    ("coreml", ["pal3"], "unknown compression 'pal3'"),
    ("coreml", ["full-int8"], "move 'full-int8' under compress.tflite"),
    ("tflite", ["static-int8"], "move 'static-int8' under compress.onnx"),
])
def test_a_compression_a_format_cannot_carry_is_refused_naming_the_field(write_recipe, capsys, field,
                                                                        modes, needle):
    path = write_recipe(tiny_recipe(compress={field: modes}))
    code, err = run_main(["compress", str(path), "--out", str(path.parent / "out")], capsys)
    assert code == 2 and f"compress.{field}" in err and needle in err
    assert not (path.parent / "out").exists()


@pytest.mark.parametrize("over,needles", [
    ({"sparsity": 0.97}, ["compress", "sparsity 0.97", "sparsity_by: tensor"]),
    ({"fidelity": 1.5}, ["compress.fidelity", "less than or equal to 1"]),
    ({"sparsity_by": "global"}, ["compress.sparsity_by", "'sensitivity' or 'tensor'"]),
    ({"average_bits": 1.5}, ["compress", "average_bits 1.5 is below the low width of mixed_bits [2, 4]"]),
])
def test_a_bad_sparsity_or_fidelity_is_refused_before_training(write_recipe, capsys, over, needles):
    path = write_recipe(tiny_recipe(compress={"coreml": ["prune-pal4"], **over}))
    code, err = run_main(["compress", str(path), "--out", str(path.parent / "out")], capsys)
    assert code == 2 and all(n in err for n in needles), err
    assert not (path.parent / "out").exists()


def test_compress_needs_a_mode_and_a_distilled_folder(write_recipe, capsys):
    path = write_recipe(tiny_recipe())
    code, err = run_main(["compress", str(path), "--out", str(path.parent / "out")], capsys)
    assert code == 2 and "names no mode" in err
    path = write_recipe(tiny_recipe(compress={"coreml": ["pal4"]}))
    code, err = run_main(["compress", str(path), "--out", str(path.parent / "out")], capsys)
    assert code == 2 and "metrics.json" in err and "edgekd distill" in err


def test_mixed_palettes_are_refused_for_a_checkpoint_not_trained_for_them(tmp_path, capsys):
    from factories import make_checkpoint

    ckpt = make_checkpoint(tmp_path / "s", epochs=0)
    code, err = run_main(["export", str(ckpt), "--out", str(tmp_path / "out"), "--formats", "coreml",
                          "--quant", "mixed-pal"], capsys)
    assert code == 2 and "mixed-pal" in err and "compress.coreml" in err
    assert not (tmp_path / "out" / "artifacts.json").exists()


def test_a_trained_palette_is_stored_at_its_own_bits_whatever_numpy_float16_sort_does():
    """A 128x64 weight of the Fashion-MNIST student, per-tensor 4-bit palette: numpy 2.3.5's float16 sort
    misorders it on AVX-512 CPUs, so coremltools' `unique` mode counted 24 values and stored 6 bits."""
    from edgekd.export.coreml import _TrainedLUT

    w = np.load(Path(__file__).parent / "data" / "fp16_palette_weight.npy")  # (128, 64, 1, 1) float16
    layer = nn.Conv2d(64, 128, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(w.astype(np.float32)))
    lut_function = _TrainedLUT(layer, {"per_channel": False, "bits": {"l": 4}})
    lut, indices = lut_function(w)
    assert len(lut) == 16 and np.array_equal(lut[indices].reshape(w.shape), w)


# --- heavy: real training, real converters


@pytest.fixture(scope="module")
def distilled(tmp_path_factory):
    """A tiny teacher and student, distilled for real (the pipeline's own distill stage)."""
    from edgekd import pipeline
    from edgekd.config import Recipe

    root = tmp_path_factory.mktemp("compress")
    recipe = Recipe.model_validate({**tiny_recipe(), "jobs": 1})
    data = pipeline.load_data(recipe)
    metrics = pipeline.distill(recipe, root, data)
    return root, recipe, data, metrics


def _compress(distilled, mode: str, lr: float = 3e-4, out: Path | None = None, teacher_model=None, **over):
    from edgekd.checkpoint import load_checkpoint, read_checkpoint
    from edgekd.compress import compress_student
    from edgekd.types import CompressSpec

    root, recipe, data, metrics = distilled
    teacher = replace(read_checkpoint(root / "teacher"), accuracy=metrics["teacher_accuracy"])
    if teacher_model is None:
        _, teacher_model = load_checkpoint(root / "teacher")
    else:  # another network: its outputs must not meet the real teacher's in the output cache
        teacher = replace(teacher, weights_sha256=f"{teacher.weights_sha256}+{type(teacher_model).__name__}")
    spec = CompressSpec(mode=mode, epochs=2, batch_size=128, lr=lr, weight_decay=0.0, temperature=4.0,
                        **{"alpha": 0.1, "seed": 0, **over})
    return compress_student(data, teacher, teacher_model, root / "students" / "s", out or root / "students",
                            spec, transfer_samples=recipe.data.transfer_samples, cache_dir=None)


def _export(ckpt: Path, out: Path, formats, quant, threshold=0.999):
    from edgekd.export import export_checkpoint

    return export_checkpoint(ckpt, out, formats=formats, quants=[quant], coreml_target="iOS18",
                             parity_samples=256, calibration_samples=16,
                             min_top1_agreement={"default": threshold}, fp32_max_abs_diff=1e-5)


@pytest.mark.heavy
@pytest.mark.parametrize("mode,formats,over", [
    ("int8", ["coreml", "tflite"], {}),
    ("pal4", ["coreml"], {}),
    ("pal4", ["coreml"], {"per_channel": False}),
    ("prune-pal4", ["coreml"], {"sparsity": 0.5}),
    ("prune-pal4", ["coreml"], {"sparsity": 0.5, "sparsity_by": "sensitivity", "sensitivity_samples": 500}),
    ("mixed-pal", ["coreml"], {"average_bits": 3.0, "sensitivity_samples": 500}),
])
def test_the_fake_quantised_network_and_its_file_agree(distilled, tmp_path, mode, formats, over):
    result = _compress(distilled, mode, **over)
    if mode == "mixed-pal":
        assert result.average_bits <= 3.0 and set(result.bits.values()) == {2, 4} and result.sensitivity
    if over.get("sparsity_by") == "sensitivity":  # the zeros the checkpoint holds, spread unevenly
        per_layer = result.layer_sparsity
        assert result.sparsity >= 0.5 and len(set(per_layer.values())) > 1, (result.sparsity, per_layer)
    artifacts = _export(result.checkpoint, tmp_path / mode, formats, mode)
    assert [a.format for a in artifacts] == formats
    for a in artifacts:  # the file computes the trained network: nothing was re-quantised differently
        assert a.parity.top1_agreement >= 0.999 and a.parity.max_abs_diff < 0.05, (a.format, a.parity)


@pytest.mark.heavy
@pytest.mark.parametrize("mode,fmt", [("full-int8", "tflite"), ("static-int8", "onnx")])
def test_an_int8_activation_file_computes_its_trained_program(distilled, tmp_path, mode, fmt):
    """Integer kernels are not bit-exact to the fake-quantised program (bias rounded to int32, fixed-point
    requantisation: one step of a scale here and there), so the file may differ at a near-tie; wherever
    the program's top two classes are apart by more than that error, it must agree."""
    from edgekd.checkpoint import extra_file, load_checkpoint
    from edgekd.models import export_graph, qat
    from edgekd.runtimes import load_runner

    data = distilled[2]
    result = _compress(distilled, mode)
    artifact = _export(result.checkpoint, tmp_path / mode, [fmt], mode, threshold=0.98)[0]
    ckpt, model = load_checkpoint(result.checkpoint)
    program = export_graph(qat.restore(model, data.x_train[:2], extra_file(ckpt, qat.STATE), mode))
    x = data.x_test
    with torch.no_grad():
        reference = program(torch.from_numpy(x)).numpy()
    outputs = load_runner(fmt, artifact.path, 1).predict(x)
    top2 = np.sort(reference, 1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 0.05
    assert np.abs(outputs - reference).max() < 0.05
    assert clear.mean() > 0.8 and (outputs.argmax(1) == reference.argmax(1))[clear].all()
    assert result.accuracy == pytest.approx(float((reference.argmax(1) == data.y_test).mean()), abs=1e-9)


def test_int8_activation_training_refuses_a_batchnorm_it_cannot_fold():
    """A BatchNorm outside an nn.Sequential conv pair would train on batch statistics while the file keeps
    fixed ones: refused before anything is exported, naming the layer."""
    from edgekd.models import qat

    class Loose(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn, self.head = nn.Conv1d(1, 4, 3), nn.BatchNorm1d(4), nn.Linear(4, 10)

        def forward(self, x):
            return self.head(self.bn(self.conv(x)).mean(-1))

    with pytest.raises(InputError, match="'bn' of Loose follows none.*remove full-int8 / static-int8"):
        qat.prepare(Loose().eval(), np.zeros((2, 1, 40), np.float32))
    model = _randomised("cnn1d", (1, 40))  # the zoo's pairs fold: nothing is left
    graph = qat.prepare(model, np.zeros((2, 1, 40), np.float32))
    assert not [m for m in graph.modules() if isinstance(m, nn.BatchNorm1d)]


def test_int8_activation_state_saves_and_restores_with_shared_ranges(tmp_path):
    """MobileNet's residual adds share one quantiser between inputs and output (one module, two names):
    the state must still write to safetensors and load back into a fresh graph."""
    from safetensors.torch import load_file, save_file

    from edgekd.models import qat

    model = _randomised("mobilenet2d", (1, 16, 16), width=0.5)
    x = np.random.default_rng(0).normal(size=(8, 1, 16, 16)).astype(np.float32)
    graph = qat.prepare(model, x)
    qat.calibrate(graph, x)
    save_file(qat.state(graph), str(tmp_path / qat.STATE))
    again = qat.prepare(model, x)
    again.load_state_dict(load_file(str(tmp_path / qat.STATE)), strict=True)
    with torch.no_grad():
        assert torch.equal(qat.freeze(graph)(torch.from_numpy(x)), qat.freeze(again)(torch.from_numpy(x)))


@pytest.mark.heavy
def test_a_missing_or_changed_range_file_is_trained_again_or_refused(distilled, tmp_path):
    """The trained ranges are hashed in model.json: a deleted file makes the compress step train again
    (not reuse a checkpoint it cannot export); a changed file, or a model.json that drops the record, is
    refused at export."""
    import json
    import shutil

    from edgekd.models import qat

    first = _compress(distilled, "full-int8")
    (first.checkpoint / qat.STATE).unlink()
    again = _compress(distilled, "full-int8")
    assert again.train_s > 0 and (again.checkpoint / qat.STATE).is_file()
    changed = tmp_path / "changed"
    shutil.copytree(again.checkpoint, changed)
    raw = bytearray((changed / qat.STATE).read_bytes())
    raw[-1] ^= 1  # one bit of a range or weight
    (changed / qat.STATE).write_bytes(bytes(raw))
    with pytest.raises(InputError, match="changed since it was written"):
        _export(changed, tmp_path / "out", ["tflite"], "full-int8", threshold=0.98)
    edited = tmp_path / "edited"
    shutil.copytree(again.checkpoint, edited)
    meta = json.loads((edited / "model.json").read_text())
    del meta["extras"]
    (edited / "model.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="no activations.safetensors recorded"):
        _export(edited, tmp_path / "out", ["tflite"], "full-int8", threshold=0.98)
    assert not list((tmp_path / "out").glob("*.tflite"))
    (again.checkpoint / "model.json").write_text(json.dumps(meta))  # the compress step trains it again
    assert _compress(distilled, "full-int8").train_s > 0


def _input_scale(ckpt: Path, data) -> float:
    """The trained range of the graph's input: the scale of the fake quantiser the input goes through."""
    from safetensors.torch import load_file

    from edgekd.checkpoint import load_checkpoint
    from edgekd.models import qat

    _, model = load_checkpoint(ckpt)
    graph = qat.prepare(model, data.x_train[:2])
    first = next(n for n in graph.graph.nodes if n.op == "placeholder")
    quantiser = next(u.target for u in first.users if u.op == "call_module" and "post_process" in u.target)
    return float(load_file(str(ckpt / qat.STATE))[f"{quantiser}.scale"])


@pytest.mark.heavy
def test_int8_activation_files_carry_the_trained_ranges_not_recalibrated_ones(distilled, tmp_path):
    """TFLite full-int8 and ONNX static-int8 files of a student trained for them quantise their input with
    the scale training settled on (a recalibration on the export's samples would give its own), and keep
    their weights as int8."""
    import onnx
    from ai_edge_litert.interpreter import Interpreter
    from onnx import numpy_helper

    data = distilled[2]
    for mode, fmt in (("full-int8", "tflite"), ("static-int8", "onnx")):
        result = _compress(distilled, mode)
        trained = _input_scale(result.checkpoint, data)
        path = _export(result.checkpoint, tmp_path / mode, [fmt], mode, threshold=0.98)[0].path
        if fmt == "tflite":
            stored = Interpreter(model_path=str(path)).get_input_details()[0]["quantization"][0]
        else:
            m = onnx.load(str(path))
            consts = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
            consts.update({n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in m.graph.node
                           if n.op_type == "Constant"})
            q = next(n for n in m.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "x")
            stored = float(consts[q.input[1]])
            weights = [a for a in consts.values() if a.ndim >= 2]  # stored as int8, not quantised at run time
            assert weights and all(a.dtype == np.int8 for a in weights), [a.dtype for a in weights]
        assert stored == pytest.approx(trained, rel=1e-6), (mode, stored, trained)


@pytest.mark.heavy
def test_a_weight_off_the_grid_is_caught_not_stored_as_float(distilled, tmp_path):
    """A checkpoint that claims a trained palette but holds float weights: coremltools' unique mode would
    skip those weights with a warning; the exporter's check refuses the file instead."""
    import json

    from edgekd.export import ExportMisses

    root = distilled[0]
    fake = tmp_path / "claims-pal4"
    import shutil

    shutil.copytree(root / "students" / "s", fake)
    meta = json.loads((fake / "model.json").read_text())
    meta["provenance"]["compression"] = {"mode": "pal4", "bits": {f"l{i}": 4 for i in range(5)},
                                         "per_channel": True, "sparsity": 0.0, "average_bits": 4.0}
    (fake / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ExportMisses, match="Core ML stored 5 compressed weight|not a trained palette") as e:
        _export(fake, tmp_path / "out", ["coreml"], "pal4")
    assert e.value.final  # a measured miss, not a converter crash to retry
    assert not list((tmp_path / "out").glob("*.mlpackage"))


@pytest.mark.heavy
def test_training_on_the_grid_recovers_what_post_training_palettes_lose(distilled):
    """The feature changes something: 2-bit palettes fine-tuned with the teacher keep more accuracy than
    the same palettes applied after training (the snapped network before any fine-tuning step)."""
    from edgekd.checkpoint import load_checkpoint
    from edgekd.distill.train import accuracy

    root, _, data, _ = distilled
    _, model = load_checkpoint(root / "students" / "s")
    folded = fold(model, "s")
    with torch.no_grad():
        for layer in weighted_layers(model).values():
            layer.weight.copy_(Palette(layer.weight, 2, per_channel=False).snap(layer.weight))
    unfold(model, folded)
    post_training = accuracy(model, data.x_test, data.y_test)
    trained = _compress(distilled, "pal2", per_channel=False, lr=1e-3).accuracy
    assert trained > post_training + 0.02, (trained, post_training)


class _Shifted(nn.Module):
    """A teacher that answers every input with the next class's logit (a supervisor the student must
    not follow where fidelity says so)."""

    def __init__(self, teacher: nn.Module):
        super().__init__()
        self.teacher = teacher

    def forward(self, x):
        return self.teacher(x).roll(1, dims=-1)


@pytest.mark.heavy
def test_fidelity_one_trains_towards_the_float_student_and_zero_towards_the_teacher(distilled, tmp_path):
    from edgekd.checkpoint import load_checkpoint
    from edgekd.distill.train import predictions

    root, _, data, _ = distilled
    _, float_student = load_checkpoint(root / "students" / "s")
    own = predictions(float_student, data.x_test)
    _, teacher_model = load_checkpoint(root / "teacher")
    shifted = _Shifted(teacher_model)

    def agreement(result) -> float:
        _, model = load_checkpoint(result.checkpoint)
        return float((predictions(model, data.x_test) == own).mean())

    kw = dict(lr=1e-3, alpha=0.0, per_channel=False)
    ignored = _compress(distilled, "pal4", out=tmp_path / "a", teacher_model=shifted, fidelity=1.0, **kw)
    same = _compress(distilled, "pal4", out=tmp_path / "b", fidelity=1.0, **kw)
    followed = _compress(distilled, "pal4", out=tmp_path / "c", teacher_model=shifted, fidelity=0.0, **kw)
    blended = _compress(distilled, "pal4", out=tmp_path / "d", teacher_model=shifted, fidelity=0.5, **kw)
    first, second = (load_checkpoint(r.checkpoint)[1].state_dict() for r in (ignored, same))
    assert all(torch.equal(first[k], second[k]) for k in first), "fidelity 1: the teacher is never read"
    at_0, at_half, at_1 = (agreement(r) for r in (followed, blended, ignored))
    assert at_0 < at_half < at_1, (at_0, at_half, at_1)
    assert at_1 >= 0.9 and at_0 < 0.5


def test_blended_targets_give_the_gradient_of_the_two_weighted_kd_terms():
    from edgekd.distill.batches import Blend, Chain
    from edgekd.distill.losses import kd_loss

    rng = np.random.default_rng(0)
    a, b = (rng.normal(0, 3, (6, 5)).astype(np.float32) for _ in range(2))
    rows = np.array([4, 0, 5, 2])
    target = Blend(Chain(a[:3], a[3:]), b, 0.3, 2.0)[rows]
    s = torch.randn(4, 5, requires_grad=True)
    y = torch.tensor([1, -1, 3, -1])

    def grad(loss):
        return torch.autograd.grad(loss, s)[0]

    def kd(t):
        return kd_loss(s, torch.from_numpy(t), y, temperature=2.0, alpha=0.2)

    assert torch.allclose(grad(kd(target)), grad(0.7 * kd(a[rows]) + 0.3 * kd(b[rows])), atol=1e-6)
    with pytest.raises(ValueError, match="share"):
        Blend(a, b, 1.0, 2.0)


@pytest.mark.heavy
def test_run_benches_and_gates_compressed_files_beside_post_training_ones(tmp_path, write_recipe):
    policy = tmp_path / "policy.yaml"
    policy.write_text("min_retention: 0.8\n")
    path = write_recipe(tiny_recipe(
        compress={"coreml": ["pal4", "int8"], "tflite": ["int8", "full-int8"], "onnx": ["static-int8"],
                  "train": {"epochs": 2, "batch_size": 128, "lr": 3e-4}},
        export={"formats": ["coreml", "tflite"], "quants": ["fp16", "int8", "pal4"],
                "min_top1_agreement": {"default": 0.95}, "parity_samples": 256},
        bench={"targets": ["host-cpu"]}, gate={"policy": "policy.yaml"}, bundle={"validation_samples": 4}))
    out = tmp_path / "run"
    r = run_cli("run", path, "--out", out)
    assert r.returncode == 0, r.stderr + r.stdout
    import json

    rows = [json.loads((out / "bench" / name / "bench.json").read_text())["rows"]
            for name in ("s", "s.pal4-kd", "s.int8-kd", "s.full-int8-kd", "s.static-int8-kd")]
    quants = [sorted({(r["format"], r["quant"]) for r in rs if r["format"] != "torch"}) for rs in rows]
    assert quants[1] == [("coreml", "pal4")] and quants[2] == [("coreml", "int8"), ("tflite", "int8")]
    assert quants[3] == [("tflite", "full-int8")] and quants[4] == [("onnx", "static-int8")]
    assert ("coreml", "pal4") in quants[0]
    report = (out / "report" / "report.md").read_text()
    assert "Compression-aware students" in report and "body.0:4" in report
    candidates = json.loads((out / "gate" / "gate.json").read_text())
    assert "s.pal4-kd" in json.dumps(candidates)
    assert np.isfinite(json.loads((out / "compress.json").read_text())["results"][0]["accuracy"])
