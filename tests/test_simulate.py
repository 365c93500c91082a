"""The simulator on standard networks: the torch.export reader, the calibration fit, `edgekd simulate`, and
the error band from a profile's calibration through bench rows and the gate."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from edgekd.bench.calibrate import (
    FEW,
    FULL_FIT_NETWORKS,
    PARAMS,
    TIED,
    Packed,
    calibrate,
    fit,
    free_params,
    initial_theta,
    precision_of,
    write_profile,
)
from edgekd.bench.simulator import simulate
from edgekd.bench.targets import Target, all_targets, load_target
from edgekd.bench.torchgraph import export_ops
from edgekd.config import Policy
from edgekd.errors import InputError
from edgekd.gate.verdict import BenchRow, evaluate
from edgekd.nets.standard import build, from_constructor
from edgekd.types import Measurement

HEXAGON = "snapdragon-8-gen3-hexagon"


def test_torch_reader_counts_the_work_a_converter_would_run():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.Flatten(), nn.Linear(8 * 16 * 16, 10))
    ops = export_ops(net, (torch.randn(1, 3, 16, 16),), "int8")
    assert [o.kind for o in ops] == ["conv", "activation", "depthwise_conv", "fully_connected"]  # BN folded
    conv, _, dw, fc = ops
    assert conv.flops == 2 * 8 * 16 * 16 * 3 * 9 and dw.flops == 2 * 8 * 16 * 16 * 9
    assert fc.flops == 2 * 10 * 8 * 16 * 16
    assert conv.bytes_weights == 8 * 3 * 9 + 8 and conv.bytes_in == 3 * 16 * 16  # int8: a byte each
    assert {o.dtype for o in ops} == {"int8"}
    fp16 = export_ops(net, (torch.randn(1, 3, 16, 16),), "fp16")
    assert fp16[0].bytes_weights == 2 * conv.bytes_weights
    assert (conv.channels, dw.channels, fc.channels) == (8, 8, 10)


def test_a_cpu_unit_pads_a_kernels_channels_to_its_simd_tile():
    """36 output channels on a 16-wide tile cost what 48 do; 32 cost 32; ops other than kernels, or of
    unknown width, are not padded."""
    from dataclasses import replace

    from edgekd.bench.simulator import op_time_us, tiled_flops

    net = nn.Sequential(nn.Conv1d(8, 36, 5), nn.Conv1d(36, 32, 5))
    wide, even = export_ops(net, (torch.randn(1, 8, 40),), "fp32")
    assert (wide.channels, even.channels) == (36, 32)
    assert tiled_flops(wide, 16) == pytest.approx(wide.flops * 48 / 36) and tiled_flops(wide, 1) == wide.flops
    assert tiled_flops(even, 16) == even.flops and tiled_flops(replace(wide, channels=0), 16) == wide.flops
    from edgekd.hostprofile import simd_tile

    assert simd_tile("onnxruntime") == 1 and simd_tile("tflite") in (1, 8, 16)
    cpu = all_targets()["host-cpu"].units[0]
    flat, tiled = (cpu.model_copy(update={"channel_tile": t, "dispatch_overhead_us": 0.0,
                                          "dispatch_by_kind_us": None}) for t in (1, 16))
    assert op_time_us(wide, tiled) > op_time_us(wide, flat)
    assert op_time_us(even, tiled) == pytest.approx(op_time_us(even, flat))


def test_a_batch_norm_left_standing_is_a_scale_and_shift_its_activation_fuses_into():
    """Pre-activation (BN, ReLU, conv: DenseNet) cannot fold the BN into a conv: a converter writes a
    scale and shift per element, and the ReLU after it runs fused, as after any elementwise op."""
    net = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 1))
    ops = export_ops(net, (torch.randn(1, 3, 16, 16),), "fp16")
    assert [o.kind for o in ops] == ["conv", "activation", "elementwise", "activation", "conv"]
    assert ops[2].flops == 2 * 8 * 16 * 16
    sim = simulate(ops, all_targets()[HEXAGON])
    assert sim.ops[3].time_us == 0.0  # fused into the scale and shift


@pytest.mark.heavy
@pytest.mark.parametrize("name,gmacs", [("mobilenet_v2", 0.30), ("resnet18", 1.82), ("vit_b_16", 17.6)])
def test_standard_networks_have_their_published_size(name, gmacs):
    """Multiply-adds as their papers give them (MobileNetV2 300M, ResNet-18 1.8G, ViT-B/16 17.6G)."""
    model, example = build(name)
    flops = sum(o.flops for o in export_ops(model, example, "fp16"))
    assert flops / 2e9 == pytest.approx(gmacs, rel=0.05)


@pytest.mark.heavy
def test_attention_is_two_matmuls_and_a_softmax():
    ops = export_ops(*build("distilbert", (1, 32)), "fp16")
    kinds = [o.kind for o in ops]
    assert kinds.count("softmax") == 6 and kinds.count("matmul") == 12  # 6 layers


def test_published_cells_map_to_networks_and_precisions():
    assert from_constructor("torchvision.models.mobilenet_v3_large()") == "mobilenet_v3_large"
    assert from_constructor("timm.create_model('mobilevit_s') [AI Hub]") == "mobilevit_s"
    assert from_constructor("transformers DistilBertForMaskedLM(DistilBertConfig())") == "distilbert"
    assert from_constructor("ultralytics YOLO('yolov8n.yaml')") is None
    assert [precision_of(p) for p in ("float", "w8a16", "w8a8_mixed_int16", "W8 weight-only (post)",
                                      "fp16 (Core ML default)", "uint8 (QAT)", "bf16")] == \
        ["fp16", "w8a16", "w8a16", "w8", "fp16", "int8", None]


NETS = ("squeezenet1_1", "mobilenet_v3_small", "shufflenet_v2_x0_5", "mnasnet0_5", "resnet18")
CONSTRUCTOR = "torchvision.models.{}()"


def _synthetic_csv(path, truth: Target, chipset: str, nets=NETS, slower: float = 1.0, append: bool = False):
    """Latencies a known profile predicts (times `slower`), in the published file's columns: what the fit
    must recover."""
    cols = ["row_id", "model", "model_variant", "torch_constructor", "input_shape", "precision", "runtime",
            "compute_target", "chipset_norm", "latency_ms", "layers_total", "layers_npu", "layers_gpu",
            "layers_cpu"]
    with open(path, "a" if append else "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        if not append:
            w.writeheader()
        for i, net in enumerate(nets):
            for j, (cell, prec) in enumerate((("float", "fp16"), ("w8a8", "int8"))):
                ms = simulate(export_ops(*build(net), prec), truth).latency_ms * slower
                w.writerow({"row_id": f"{chipset}{i}{j}", "model": net, "model_variant": net,
                            "torch_constructor": CONSTRUCTOR.format(net), "input_shape": "224x224",
                            "precision": cell, "runtime": "TFLite", "compute_target": "NPU",
                            "chipset_norm": chipset, "latency_ms": f"{ms:.5f}", "layers_total": "",
                            "layers_npu": "", "layers_gpu": "", "layers_cpu": ""})
        w.writerow({"row_id": f"{chipset}99", "model": "yolo", "model_variant": "", "chipset_norm": chipset,
                    "torch_constructor": "ultralytics YOLO('yolov8n.yaml')", "input_shape": "640x640",
                    "precision": "float", "runtime": "TFLite", "compute_target": "NPU", "latency_ms": "2"})


@pytest.mark.heavy
def test_the_fit_recovers_a_known_profile_and_predicts_networks_it_did_not_see(tmp_path):
    base = all_targets()[HEXAGON].model_dump()
    truth = dict(base, calibration={"chipset": "Test Chip"})
    acc = truth["units"][0]
    acc["efficiency"] = {**acc["efficiency"], "conv": 0.3, "depthwise_conv": 0.1, "default": 0.05}
    acc["dispatch_overhead_us"], truth["invoke_overhead_us"] = 7.0, 300.0
    truth = Target.model_validate(truth)
    _synthetic_csv(tmp_path / "rows.csv", truth, "Test Chip")
    start = Target.model_validate(dict(base, calibration={"chipset": "Test Chip"}))
    res = calibrate(start, tmp_path / "rows.csv")
    assert res.profile["calibration"]["rows"] == 10 and res.profile["calibration"]["networks"] == 5
    assert [s["why"] for s in res.skipped] == ["network not buildable here"]
    fitted = [r["fitted_ms"] / r["published_ms"] for r in res.rows]
    assert max(abs(np.log(fitted))) < 0.05, fitted  # the model can express its own kind exactly
    held_out = [abs(r["held_out_error"]) for r in res.rows]
    assert np.median(held_out) < 0.10, held_out  # and predicts networks left out of the fit
    # the written profile is valid, and simulates what the fit predicted
    write_profile(res.profile, tmp_path / "fitted.yaml", None)
    prof = load_target(tmp_path / "fitted.yaml")
    assert prof.calibration.calibrated and prof.calibration.rows == 10
    row = next(r for r in res.rows if r["network"] == "resnet18" and r["precision"] == "int8")
    predicted = simulate(export_ops(*build("resnet18"), "int8"), prof).latency_ms
    assert predicted == pytest.approx(row["fitted_ms"], rel=1e-3)
    # fitted again, it starts where the first fit started, not from figures that saw every network: the
    # held-out predictions are the first fit's
    assert prof.calibration.start == res.profile["calibration"]["start"]
    again = calibrate(prof, tmp_path / "rows.csv")
    assert again.profile["calibration"]["start"] == pytest.approx(prof.calibration.start, rel=1e-3)
    held_out_again = [r["held_out_ms"] for r in again.rows]
    assert held_out_again == pytest.approx([r["held_out_ms"] for r in res.rows], rel=0.02)


@pytest.mark.heavy
def test_a_chip_with_few_networks_borrows_its_family_rows(tmp_path):
    """A17 Pro's case: two networks of its own; a sibling chip's rows (the same design, its own speed)
    pin the chip-wide figures, and the sibling's speed factor comes out as its own figure."""
    base = all_targets()[HEXAGON].model_dump()
    truth = dict(base, calibration={"chipset": "Test Chip"}, invoke_overhead_us=300.0)
    truth["units"][0]["efficiency"] = {**truth["units"][0]["efficiency"], "conv": 0.3, "fully_connected": 0.3}
    truth = Target.model_validate(truth)
    rows = tmp_path / "rows.csv"
    _synthetic_csv(rows, truth, "Test Chip", nets=("squeezenet1_1", "resnet18"))
    _synthetic_csv(rows, truth, "Sibling", slower=1.5, append=True)
    with open(rows, "a", newline="") as f:  # a row whose input shape nobody stated: it cannot be priced
        f.write("s1,resnet18,resnet18,torchvision.models.resnet18(),not stated,float,TFLite,NPU,Sibling,9"
                ",,,,\n")
    start = Target.model_validate(dict(base, calibration={"chipset": "Test Chip", "family": ["Sibling"]}))
    res = calibrate(start, rows)
    c = res.profile["calibration"]
    assert c["rows"] == 4 and c["networks"] == 2 and c["family_rows"] == 10
    assert c["family_factors"]["Sibling"] == pytest.approx(1.5, rel=0.05)
    assert {s["why"] for s in res.skipped} == {"network not buildable here", "input shape not stated"}
    assert max(abs(r["held_out_error"]) for r in res.rows) < 0.10, res.rows
    # the written profile keeps its family, and a refit starts from the same figures
    write_profile(res.profile, tmp_path / "fitted.yaml", None)
    prof = load_target(tmp_path / "fitted.yaml")
    assert prof.calibration.family == ["Sibling"] and prof.calibration.start == c["start"]
    # a held-out network leaves every chip's rows: the sibling's own runs of it, however far off, do not
    # move the chip's held-out predictions of it (they do move the full fit)
    skewed = tmp_path / "skewed.csv"
    skewed.write_text("\n".join(
        ",".join(f"{float(c) * 3:.5f}" if i == 9 else c for i, c in enumerate(line.split(",")))
        if line.startswith("Sibling") and ",squeezenet1_1," in line else line
        for line in rows.read_text().splitlines()) + "\n")
    again = calibrate(start, skewed)
    held = lambda result: [r["held_out_ms"] for r in result.rows if r["network"] == "squeezenet1_1"]  # noqa: E731
    assert len(held(res)) == 2 and held(again) == pytest.approx(held(res), rel=1e-6)
    assert [r["fitted_ms"] for r in again.rows] != pytest.approx([r["fitted_ms"] for r in res.rows], rel=1e-3)
    # a family chip the file has no rows for is bad input, named
    lonely = Target.model_validate(dict(base, calibration={"chipset": "Test Chip", "family": ["Nowhere"]}))
    with pytest.raises(InputError, match="calibration.family names 'Nowhere'"):
        calibrate(lonely, rows)
    # the band is the chip's own rows': so are the kernels it covers, whatever the family ran
    assert c["dtypes"] == ["fp16", "int8"]
    fp16_own = tmp_path / "fp16-own.csv"
    fp16_own.write_text("\n".join(line for line in rows.read_text().splitlines()
                                   if not (line.startswith("Test Chip") and ",w8a8," in line)) + "\n")
    assert calibrate(start, fp16_own).profile["calibration"]["dtypes"] == ["fp16"]
    for family in (["Test Chip"], ["Sibling", "Sibling"]):  # itself, or a chip twice: refused
        with pytest.raises(ValueError, match="name other chips, each once"):
            Target.model_validate(dict(base, calibration={"chipset": "Test Chip", "family": family}))


@pytest.mark.heavy
def test_vectorised_fit_prices_ops_as_the_simulator_does():
    target = all_targets()[HEXAGON]
    # a SIMD tile on the accelerator (odd widths: mnasnet's 40 and 80 channels pad on 16) and a weight
    # bandwidth away from the datasheet's: the fit and the simulator must price both alike
    acc = target.units[0].model_copy(update={"channel_tile": 16})
    target = target.model_copy(update={"units": [acc, *target.units[1:]]})
    ops = [export_ops(*build(n), p) for n, p in (("squeezenet1_1", "fp16"), ("mnasnet0_5", "int8"),
                                                   ("resnet18", "w8a16"))]
    packed = Packed(ops, target)
    theta = initial_theta(target)
    theta[PARAMS.index("rate:mem")] = np.log(1.7)
    from edgekd.bench.calibrate import apply

    prof = Target.model_validate(apply(target, theta, {"chipset": "x"}))
    # the profile stores 4 significant digits of each figure (a rate times a peak rounds once more)
    assert packed.predict_ms(theta) == pytest.approx([simulate(o, prof).latency_ms for o in ops], rel=1e-4)
    assert len(theta) == len(PARAMS)
    # fitting to the profile's own predictions stays there
    th = fit(packed, packed.predict_ms(theta), theta)
    assert packed.predict_ms(th) == pytest.approx(packed.predict_ms(theta), rel=1e-3)
    # on few networks only the chip-wide figures move (fully connected with conv), the rest stay the start
    assert free_params(FULL_FIT_NETWORKS) == PARAMS and free_params(FULL_FIT_NETWORKS - 1) == FEW
    th = fit(packed, packed.predict_ms(theta) * 1.7, theta, free_params(3))
    before, after = dict(zip(PARAMS, theta)), dict(zip(PARAMS, th))
    assert all(after[k] == before[k] for k in PARAMS if k not in FEW and k not in TIED)
    assert after["eff:fully_connected"] == after["eff:conv"]
    assert packed.predict_ms(th) == pytest.approx(packed.predict_ms(theta) * 1.7, rel=0.05)
    # a figure no row prices (the integer rates, with fp16 rows only) is held at its start, not jittered
    unused = dict(zip(PARAMS, Packed(ops[:1], target).unused()))
    assert unused["rate:int8"] and unused["rate:int16"] and not unused["eff:conv"] and not unused["rate:mem"]
    # ...but a figure priced through a tie moves: fully connected layers alone still fit the conv share
    mlp = [export_ops(nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 10)),
                      (torch.randn(1, 256),), "fp16")]
    only_fc = Packed(mlp, target)
    assert dict(zip(PARAMS, only_fc.unused()))["eff:conv"]
    th = fit(only_fc, only_fc.predict_ms(theta) * 3.0, theta, free_params(1))
    assert th[PARAMS.index("eff:conv")] != theta[PARAMS.index("eff:conv")]
    assert th[PARAMS.index("eff:fully_connected")] == th[PARAMS.index("eff:conv")]


def test_shipped_profiles_say_whether_they_are_calibrated():
    targets = all_targets()
    for name in (HEXAGON, "apple-a17-pro-ane", "apple-a14-ane", "snapdragon-7-gen4-hexagon"):
        c = targets[name].calibration
        assert c.calibrated and c.rows > 0 and c.error_band[0] < 1 < c.error_band[1], name
    for name in ("google-tensor-g3", "arm-cortex-a78"):
        assert not targets[name].calibration.calibrated, name  # no published rows for these chips


@pytest.mark.heavy
def test_onnx_reader_counts_what_the_torch_reader_counts(tmp_path):
    """An .onnx file read for the host's ONNX Runtime profile: the same work as its PyTorch graph, with
    attention's head size (left open by ONNX's own shape inference) resolved."""
    from edgekd.bench.graph import read_graph
    from edgekd.export.common import ExportMeta
    from edgekd.export.onnx import write_onnx
    from edgekd.models import build_model

    for family, shape in (("mobilenet2d", (1, 8, 8)), ("transformer", (1, 40))):
        torch.manual_seed(0)
        model = build_model(family, shape, 10, width=1.0, depth=2).eval()
        x = np.zeros((1, *shape), np.float32)
        meta = ExportMeta(name=family, labels=tuple("0123456789"), mean=0.0, std=1.0, input_shape=shape)
        write_onnx(model, x, tmp_path / f"{family}.onnx", "fp32", x, meta)
        ops = read_graph("onnx", tmp_path / f"{family}.onnx")
        want = export_ops(model, (torch.from_numpy(x),), "fp32")
        for kind in ("conv", "depthwise_conv", "fully_connected", "matmul"):
            got, expect = (sum(o.flops for o in g if o.kind == kind) for g in (ops, want))
            assert got == pytest.approx(expect, rel=0.01), (family, kind)
        # within 5%: the exporter folds batch norm into a bias the bias-free conv did not have
        weights = [sum(o.bytes_weights for o in g) for g in (ops, want)]
        assert weights[0] == pytest.approx(weights[1], rel=0.05)
        # static int8 (QDQ): the weights reach the kernels through DequantizeLinear, which ONNX Runtime
        # folds; the same work, in int8 kernels, each weight stored once at a byte per value
        calib = np.random.default_rng(0).normal(size=(16, *shape)).astype(np.float32)
        write_onnx(model, x, tmp_path / f"{family}-s8.onnx", "static-int8", calib, meta)
        s8 = read_graph("onnx", tmp_path / f"{family}-s8.onnx")
        for kind in ("conv", "depthwise_conv", "fully_connected"):
            got, expect = (sum(o.flops for o in g if o.kind == kind) for g in (s8, ops))
            assert got == pytest.approx(expect, rel=0.01), (family, kind, "static-int8")
        assert {o.dtype for o in s8 if o.kind in ("conv", "fully_connected")} == {"int8"}
        kinds = ("conv", "depthwise_conv", "fully_connected")
        kernels = [[o for o in g if o.kind in kinds] for g in (s8, ops)]
        assert all(o.bytes_weights > 0 for o in kernels[0])  # the weight found through its DequantizeLinear
        stored, fp32 = (sum(o.bytes_weights for o in k) for k in kernels)
        assert 0.2 * fp32 < stored < 0.7 * fp32, (stored, fp32)  # a byte a value, scales, int32 biases
    write_onnx(model, x, tmp_path / "q.onnx", "dynamic-int8", x, meta)
    q = read_graph("onnx", tmp_path / "q.onnx")
    assert {o.dtype for o in q if o.kind == "fully_connected"} == {"int8"}
    from edgekd.bench.predict import predict

    out = predict(str(tmp_path / "q.onnx"), all_targets()["host-cpu-onnxruntime"])
    assert out["format"] == "onnx" and out["ops"] == len(q) and out["latency_ms"] > 0


@pytest.mark.heavy
def test_readers_count_the_im2col_matrix_of_convolutions_wider_than_1x1(tmp_path):
    """A k-tap convolution lowered to a matrix product copies its input k times (im2col); a 1x1 or a
    depthwise convolution lowers nothing. The torch, ONNX, TFLite and Core ML readers agree."""
    from edgekd.bench.graph import read_graph
    from edgekd.export.common import ExportMeta
    from edgekd.export.coreml import write_coreml
    from edgekd.export.onnx import write_onnx
    from edgekd.export.tflite import write_tflite

    net = nn.Sequential(nn.Conv1d(4, 8, 5, padding=2), nn.ReLU(), nn.Conv1d(8, 8, 1),
                        nn.Conv1d(8, 8, 3, padding=1, groups=8), nn.Conv1d(8, 8, 3, padding=1, groups=2),
                        nn.Flatten(), nn.Linear(8 * 40, 10)).eval()
    x = np.random.default_rng(0).normal(size=(1, 4, 40)).astype(np.float32)
    ops = export_ops(net, (torch.from_numpy(x),))
    # positions x input channels x taps x 4 bytes; the grouped conv lowers every input channel too
    want = [40 * 4 * 5 * 4, 0, 0, 40 * 8 * 3 * 4]
    assert [o.bytes_lowered for o in ops if o.kind in ("conv", "depthwise_conv")] == want
    meta = ExportMeta(name="n", labels=tuple("0123456789"), mean=0.0, std=1.0, input_shape=(4, 40))
    write_onnx(net, x, tmp_path / "n.onnx", "fp32", x, meta)
    write_tflite(net, x, tmp_path / "n.tflite", "fp32", x, meta)
    write_coreml(net, x, tmp_path / "n.mlpackage", "fp32", x, meta)
    for fmt, suffix in (("onnx", "onnx"), ("tflite", "tflite"), ("coreml", "mlpackage")):
        assert sum(o.bytes_lowered for o in read_graph(fmt, tmp_path / f"n.{suffix}")) == sum(want), fmt
    # a unit that lowers pays for the matrix at its im2col bandwidth; one that convolves in place does not
    cpu = all_targets()["host-cpu"].units[0]
    conv = next(o for o in ops if o.bytes_lowered)
    slow = cpu.model_copy(update={"im2col_gbps": 0.001})  # a byte a microsecond
    from edgekd.bench.simulator import op_time_us

    assert op_time_us(conv, slow) == pytest.approx(op_time_us(conv, cpu) + conv.bytes_lowered)


def test_onnx_reader_takes_k_from_the_weight_side_and_refuses_open_shapes(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgekd.bench.graph import read_onnx
    from edgekd.errors import InputError

    def save(name, nodes, inputs, inits):
        graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                                                                     None)],
                                  [numpy_helper.from_array(v, k) for k, v in inits.items()])
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / name)
        return tmp_path / name

    w = np.ones((64, 128), np.float32)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 128, 10])
    (op,) = read_onnx(save("left.onnx", [helper.make_node("MatMul", ["w", "x"], ["y"])], [x], {"w": w}))
    assert op.kind == "fully_connected" and op.flops == 2 * 64 * 10 * 128  # W @ x: K = W's columns
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 10, 64])
    (op,) = read_onnx(save("right.onnx", [helper.make_node("MatMul", ["x", "w"], ["y"])], [x], {"w": w}))
    assert op.flops == 2 * 10 * 128 * 64  # x @ W: K = W's rows
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", 64])
    with pytest.raises(InputError, match="input 'x' axis 1 has no fixed size"):
        read_onnx(save("open.onnx", [helper.make_node("MatMul", ["x", "w"], ["y"])], [x], {"w": w}))
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, None)
    with pytest.raises(InputError, match="input 'x' has no shape"):
        read_onnx(save("noshape.onnx", [helper.make_node("MatMul", ["x", "w"], ["y"])], [x], {"w": w}))


def test_a_runtime_rule_leaves_its_runtime_off_the_accelerator():
    """Published runs of ONNX Runtime's QNN EP on Snapdragon 7 Gen 4 put every layer on the CPU; TFLite
    and QNN use the NPU. The profile's `runtimes` rule says so, whatever the graph."""
    chip = all_targets()["snapdragon-7-gen4-hexagon"]
    ops = export_ops(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU()), (torch.randn(1, 3, 16, 16),), "int8")
    assert simulate(ops, chip.for_runtime("TFLite")).residency_ops == 1.0
    assert simulate(ops, chip.for_runtime("QNN_DLC")).residency_ops == 1.0
    for runtime in ("ONNX_Runtime(QNN EP)", "onnxruntime"):
        seen = chip.for_runtime(runtime)
        assert [u.name for u in seen.units] == ["cpu"] and simulate(ops, seen).residency_ops == 0.0
        assert "NPU offload failed" in chip.runtime_note(runtime)
    assert chip.for_runtime(None) is chip and chip.runtime_note("TFLite") is None
    data = chip.model_dump()
    data["runtimes"][0]["units"] = ["npu"]
    with pytest.raises(ValueError, match="no unit named 'npu'"):
        Target.model_validate(data)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "edgekd.cli", *args], capture_output=True, text=True)


@pytest.mark.heavy
def test_simulate_command_prints_latency_band_residency_and_fallbacks():
    r = _cli("simulate", "mobilenet_v2", "--target", HEXAGON, "--precision", "int8", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["latency_ms"] > 0 and out["accelerator_share"] == 1.0 and out["fallback_ops"] == []
    lo, hi = out["latency_band_ms"]
    assert lo < out["latency_ms"] < hi and out["calibrated"]
    # fp32 does not run on Hexagon: every op falls back, and says why
    r = _cli("simulate", "mobilenet_v2", "--target", HEXAGON, "--precision", "fp32", "--json")
    out = json.loads(r.stdout)
    assert out["accelerator_share"] == 0.0 and out["fallback_ops"]
    assert all("dtype fp32" in f["reason"] for f in out["fallback_ops"])
    # the band was measured on runs wholly on the accelerator: none for a file that falls back
    assert out["latency_band_ms"] is None and "on the CPU, which its calibration never" in out["no_band"]
    r = _cli("simulate", "resnet18", "--target", "google-tensor-g3", "--input-shape", "1,3,160,160")
    assert r.returncode == 0 and "uncalibrated" in r.stdout
    r = _cli("simulate", "mobilenet_v2", "--target", "snapdragon-7-gen4-hexagon", "--precision", "int8",
             "--runtime", "ONNX Runtime", "--json")
    out = json.loads(r.stdout)
    assert out["accelerator_share"] == 0.0 and out["latency_band_ms"] is None and out["calibrated"]
    assert out["uncalibrated_dtypes"] == []  # the runtime leaves the accelerator: its kernels are not why
    assert out["fallback_ops"][0]["kind"] == "all" and "offload failed" in out["fallback_ops"][0]["reason"]
    # a text encoder first in a fresh process (transformers imports torchvision, which needs its schemas)
    r = _cli("simulate", "albert", "--target", HEXAGON, "--input-shape", "1,16", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["latency_ms"] > 0


@pytest.mark.heavy
@pytest.mark.parametrize("args,needle", [
    (["nonet", "--target", HEXAGON], "unknown network 'nonet'"),
    (["mobilenet_v2", "--target", "pixel-99"], "unknown target(s) pixel-99"),
    (["mobilenet_v2", "--target", HEXAGON, "--input-shape", "1,3,x"], "--input-shape"),
    (["mobilenet_v2", "--target", HEXAGON, "--precision", "int4"], "unknown precision 'int4'"),
    (["pyproject.toml", "--target", HEXAGON], "reads .tflite, Core ML (.mlpackage) and .onnx"),
    (["tests/data/benchmark_model/x.tflite", "--target", HEXAGON], "no such file"),
])
def test_simulate_bad_input_exits_2(args, needle):
    r = _cli("simulate", *args)
    assert r.returncode == 2 and needle in r.stderr, r.stderr


def _sim_row(tmp_path, band, no_band=None):
    common = {"model": "s", "artifact": "a.tflite", "format": "tflite", "quant": "fp32", "size_bytes": 10}
    return [BenchRow(tmp_path, Measurement(**common, kind="measured", runner="tflite", retention=1.0,
                                           teacher_agreement=1.0, latency_ms_p50=0.01)),
            BenchRow(tmp_path, Measurement(**common, kind="simulated", target=HEXAGON,
                                           runner=f"sim:{HEXAGON}", latency_ms_p50=1.0,
                                           latency_band_ms=band, no_band=no_band))]


def test_gate_can_require_the_latency_limit_at_the_band_edge(tmp_path):
    plain = Policy(max_latency_ms={HEXAGON: 1.2})
    margin = Policy(max_latency_ms={HEXAGON: 1.2}, latency_margin="band")
    assert evaluate(_sim_row(tmp_path, (0.8, 1.1)), margin, {"android": "tflite"}).passed
    assert evaluate(_sim_row(tmp_path, (0.8, 1.5)), plain, {"android": "tflite"}).passed
    v = evaluate(_sim_row(tmp_path, (0.8, 1.5)), margin, {"android": "tflite"})
    rules = {f.rule for c in v.candidates for f in c.failures}
    assert not v.passed and "max_latency_ms (band edge)" in rules
    assert not evaluate(_sim_row(tmp_path, None), margin, {"android": "tflite"}).passed  # uncalibrated
    # a row without a band says why in the rule that fails it
    v = evaluate(_sim_row(tmp_path, None, "int8 kernels, which its calibration never ran"), margin,
                 {"android": "tflite"})
    assert {f.rule for c in v.candidates for f in c.failures} >= {
        "max_latency_ms (no error band: int8 kernels, which its calibration never ran)"}


def test_the_host_fit_prices_ops_as_the_simulator_does_with_launch_costs_per_op_class():
    """Latencies made by a host profile with its own launch cost per op class (matmul dear, as ONNX Runtime's
    CPU provider is) and an im2col cost are fitted back: the fit's linear form is the simulator's, fused
    activations and all."""
    from edgekd.hostprofile import CALIBRATION, HELD_OUT, fit_host
    from edgekd.models import build_model

    base = all_targets()["host-cpu-onnxruntime"]
    cpu = base.units[0]
    truth = base.model_copy(update={"invoke_overhead_us": 4.0, "units": [cpu.model_copy(update={
        "dispatch_overhead_us": 0.3, "dispatch_by_kind_us": {"matmul": 11.0, "conv": 1.2},
        "im2col_gbps": 5.0})]})

    def rows(models):
        out = []
        for family, shape, width, depth in models:
            torch.manual_seed(0)
            ops = export_ops(build_model(family, shape, 10, width=width, depth=depth),
                             (torch.randn(1, *shape),))
            out.append({"graph": ops, "measured_ms": simulate(ops, truth).latency_ms})
        return out

    assert any(o.kind == "activation" for o in rows(CALIBRATION[:1])[0]["graph"])  # unfused in the graph
    fitted = fit_host(rows(CALIBRATION), base)
    unit = fitted.units[0]
    assert unit.dispatch_us("matmul") == pytest.approx(11.0, rel=0.02)
    assert unit.dispatch_us("conv") == pytest.approx(1.2, rel=0.05)
    assert unit.im2col_gbps == pytest.approx(5.0, rel=0.05)  # ONNX Runtime lowers its convolutions
    held = rows(HELD_OUT)
    assert [simulate(r["graph"], fitted).latency_ms for r in held] == \
        pytest.approx([r["measured_ms"] for r in held], rel=0.01)
    with pytest.raises(ValueError, match="unknown op kind"):
        cpu.model_validate({**cpu.model_dump(), "dispatch_by_kind_us": {"attention": 3.0}})


@pytest.mark.heavy
def test_a_host_profile_fitted_here_replaces_the_packaged_one(tmp_path, monkeypatch):
    from edgekd.bench.measure import cpu_model
    from edgekd.bench.targets import host_profile_note, user_targets_dir
    from edgekd.hostprofile import CALIBRATION, HELD_OUT, ROUNDS, calibrate_host

    monkeypatch.setenv("EDGEKD_CONFIG_DIR", str(tmp_path / "config"))
    packaged = all_targets()["host-cpu"]
    assert "packaged" in host_profile_note(packaged)
    # the packaged profile warns on any CPU but the one it was fitted on
    assert ("warning" in host_profile_note(packaged)) == (packaged.calibration.host_cpu != cpu_model())
    data, rows = calibrate_host(packaged, calibration=CALIBRATION[::4], held_out=HELD_OUT[:2])
    assert len(rows) == len(CALIBRATION[::4]) + 2 and all(r["measured_ms"] > 0 for r in rows)
    # timed round-robin, the fastest round's median kept: one burst of load moves one round, not the figure
    assert all(len(r["round_ms"]) == ROUNDS for r in rows)
    assert all(r["measured_ms"] == pytest.approx(min(r["round_ms"]), rel=1e-3) for r in rows)
    write_profile(data, user_targets_dir() / "host-cpu.yaml", None)
    mine = all_targets()["host-cpu"]
    assert mine.calibration.host_cpu == cpu_model() and mine.calibration.fitted_at
    assert mine.units[0].model_dump() != packaged.units[0].model_dump()
    note = host_profile_note(mine)
    assert "yours" in note and "warning" not in note
    # ONNX Runtime: its own profile, measured through ONNX files read by the ONNX reader
    onnx_base = all_targets()["host-cpu-onnxruntime"]
    data, rows = calibrate_host(onnx_base, calibration=CALIBRATION[::4], held_out=HELD_OUT[:2])
    assert data["formats"] == ["onnx"] and "ONNX Runtime" in data["description"]
    assert all(r["measured_ms"] > 0 and r["ops"] > 0 for r in rows)
    # moved to another machine: the note says so
    text = (user_targets_dir() / "host-cpu.yaml").read_text().replace(cpu_model(), "Some Other CPU")
    (user_targets_dir() / "host-cpu.yaml").write_text(text)
    assert "warning: fitted on Some Other CPU" in host_profile_note(all_targets()["host-cpu"])


@pytest.mark.heavy
@pytest.mark.parametrize("arch,shape", [("mobilenet2d", (1, 8, 8)), ("transformer", (1, 40))])
def test_torch_reader_agrees_with_the_exported_tflite_file(tmp_path, arch, shape):
    """The shortcut (no converter) reads the same work as the file a converter writes."""
    from edgekd.bench.graph import read_tflite
    from edgekd.export.common import ExportMeta
    from edgekd.export.quiet import quiet
    from edgekd.export.tflite import write_tflite
    from edgekd.models import build_model

    torch.manual_seed(0)
    model = build_model(arch, shape, 10, width=0.5).eval()
    x = np.random.default_rng(0).normal(size=(1, *shape)).astype(np.float32)
    meta = ExportMeta(name="m", labels=tuple(str(i) for i in range(10)), mean=0.0, std=1.0, input_shape=shape)
    with quiet():
        write_tflite(model, x, tmp_path / "m.tflite", "fp32", x, meta)
    from_file = read_tflite(tmp_path / "m.tflite")
    from_torch = export_ops(model, (torch.from_numpy(x),), "fp32")
    for kinds in (("conv", "depthwise_conv"), ("fully_connected", "matmul")):
        a = sum(o.flops for o in from_file if o.kind in kinds)
        b = sum(o.flops for o in from_torch if o.kind in kinds)
        assert b == pytest.approx(a, rel=0.02), (kinds, a, b)
    assert sum(o.bytes_weights for o in from_torch) == pytest.approx(sum(o.bytes_weights for o in from_file),
                                                                     rel=0.05)


@pytest.mark.heavy
def test_compressed_weights_read_as_the_float_file_the_runtime_runs_and_int8_kernels_lose_the_band(tmp_path):
    """A weight-only int8 or fp16 .tflite file is the fp32 network with its weights stored small: the
    runtime decompresses them once, at load, and runs the float kernels. A full-int8 file runs integer
    kernels the host profile's calibration (fp32 files) never ran: simulated, it carries no error band."""
    from edgekd.bench.graph import read_tflite
    from edgekd.bench.predict import predict
    from edgekd.export.common import ExportMeta
    from edgekd.export.quiet import quiet
    from edgekd.export.tflite import write_tflite
    from edgekd.models import WithProbabilities, build_model

    torch.manual_seed(0)
    shape = (1, 8, 8)
    model = WithProbabilities(build_model("mobilenet2d", shape, 10, width=0.5)).eval()
    x = np.random.default_rng(0).normal(size=(8, 1, *shape)).astype(np.float32)[:, 0]
    meta = ExportMeta(name="m", labels=tuple(str(i) for i in range(10)), mean=0.0, std=1.0, input_shape=shape)
    graphs = {}
    for quant in ("fp32", "int8", "fp16", "full-int8"):
        with quiet():
            write_tflite(model, x[:1], tmp_path / f"{quant}.tflite", quant, x, meta)
        graphs[quant] = read_tflite(tmp_path / f"{quant}.tflite")
    strip = lambda ops: [(o.kind, o.dtype, o.flops, o.bytes_weights, o.bytes_in) for o in ops]  # noqa: E731
    assert strip(graphs["int8"]) == strip(graphs["fp32"]) == strip(graphs["fp16"])
    assert "quant" not in {o.kind for o in graphs["int8"]}
    host = all_targets()["host-cpu"]
    assert host.calibration.dtypes == ["fp32"]
    fp32 = predict(str(tmp_path / "fp32.tflite"), host)
    assert fp32["calibrated"] and fp32["latency_band_ms"] and fp32["uncalibrated_dtypes"] == []
    full = predict(str(tmp_path / "full-int8.tflite"), host)
    assert full["calibrated"] and full["latency_band_ms"] is None and full["uncalibrated_dtypes"] == ["int8"]
    with pytest.raises(InputError, match="runs in the precision and input shape it was exported with"):
        predict(str(tmp_path / "full-int8.tflite"), host, "int8")  # a file has its own: not ignored


@pytest.mark.parametrize("edit,needle", [
    (lambda rows: [{k: v for k, v in r.items() if k != "latency_ms"} for r in rows],
     "no column 'latency_ms'"),
    (lambda rows: [dict(r, latency_ms="fast") for r in rows], "field 'latency_ms' is 'fast', not a finite"),
    (lambda rows: [dict(r, latency_ms="nan") for r in rows], "field 'latency_ms' is 'nan', not a finite"),
    (lambda rows: [dict(r, latency_ms="inf") for r in rows], "field 'latency_ms' is 'inf', not a finite"),
    (lambda rows: [dict(r, latency_ms="0") for r in rows], "field 'latency_ms' is '0'"),
    (lambda rows: rows[:1], "fewer than 2 buildable networks"),
])
def test_a_bad_calibration_file_is_refused_naming_row_and_field(tmp_path, edit, needle):
    from edgekd.errors import InputError

    rows = [{"row_id": str(i), "model": n, "model_variant": n, "torch_constructor": CONSTRUCTOR.format(n),
             "input_shape": "224x224", "precision": "float", "runtime": "TFLite", "compute_target": "NPU",
             "chipset_norm": "Test Chip", "latency_ms": "1.0"} for i, n in enumerate(NETS[:2])]
    rows = edit(rows)
    with open(tmp_path / "bad.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    chip = {"chipset": "Test Chip"}
    target = Target.model_validate(dict(all_targets()[HEXAGON].model_dump(), calibration=chip))
    with pytest.raises(InputError, match="bad.csv.*") as e:
        calibrate(target, tmp_path / "bad.csv")
    assert needle in str(e.value)
    cpu_only = all_targets()["arm-cortex-a78"].model_dump()
    with pytest.raises(InputError, match="no accelerator unit"):
        calibrate(Target.model_validate(dict(cpu_only, calibration=chip)), tmp_path / "bad.csv")
