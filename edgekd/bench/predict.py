"""`edgekd simulate`: one network or exported file on one target profile, without a run folder.

A standard network (by its constructor's name) is traced with torch.export at the requested precision;
a .tflite or Core ML file is read as exported (its own precision).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from edgekd.bench.graph import read_coreml, read_onnx, read_tflite
from edgekd.bench.simulator import error_band, outside_calibration, simulate
from edgekd.bench.targets import Target
from edgekd.errors import InputError


def load_ops(source: str, precision: str | None, input_shape: tuple[int, ...] | None):
    """(op list, what it is): a file by its suffix, else a built-in standard network (`precision` None:
    fp16); a folder of the same name as a built-in network does not hide it."""
    from edgekd.nets.standard import names

    path = Path(source)
    model_file = path.suffix in (".tflite", ".mlpackage", ".mlmodel", ".onnx")
    if model_file or (path.exists() and source not in names()):
        if not path.exists():
            raise InputError(f"{path}: no such file (NETWORK|FILE)")
        if not model_file:
            raise InputError(f"{path}: the simulator reads .tflite, Core ML (.mlpackage) and .onnx files; "
                             "export the model first, or name a built-in network")
        if precision is not None or input_shape is not None:
            flag = "--precision" if precision is not None else "--input-shape"
            raise InputError(f"{flag}: {path} runs in the precision and input shape it was exported with; "
                             f"drop {flag} (it applies to built-in networks)")
        if path.suffix == ".tflite":
            return read_tflite(path), {"file": str(path), "format": "tflite"}
        if path.suffix in (".mlpackage", ".mlmodel"):
            return read_coreml(path), {"file": str(path), "format": "coreml"}
        return read_onnx(path), {"file": str(path), "format": "onnx"}
    from edgekd.bench.torchgraph import export_ops
    from edgekd.nets.standard import build

    precision = precision or "fp16"
    if source not in names():
        raise InputError(f"unknown network {source!r} (NETWORK|FILE): not a file, and not one of the "
                         f"built-in networks: {', '.join(names())}")
    model, example = build(source, input_shape)
    return export_ops(model, example, precision), {"network": source, "precision": precision,
                                                   "input_shape": list(example[0].shape)}


def predict(source: str, target: Target, precision: str | None = None,
            input_shape: tuple[int, ...] | None = None, runtime: str | None = None) -> dict:
    ops, what = load_ops(source, precision, input_shape)
    seen = target.for_runtime(runtime)
    sim = simulate(ops, seen)
    note = target.runtime_note(runtime)
    # a runtime left without the accelerator runs everything on the CPU: the fit priced the accelerator
    # only, so its band does not apply
    off = note is not None and not any(u.accelerator for u in seen.units)
    # the whole profile, not `seen`: its calibrated unit is there
    band, why = (None, "this runtime leaves the calibrated accelerator") if off else error_band(sim, target)
    fallbacks = Counter((f["kind"], f["reason"]) for f in sim.fallbacks)
    if off:
        fallbacks = Counter({("all", note): len(ops)})
    return {
        **what, "target": target.name, "runtime": runtime, "ops": len(ops),
        "latency_ms": round(sim.latency_ms, 4),
        # the profile's 80% interval on networks its fit never saw; None: uncalibrated profile, kernels or
        # units its calibration never priced, or a runtime that leaves the accelerator
        "latency_band_ms": [round(sim.latency_ms * band[0], 4), round(sim.latency_ms * band[1], 4)]
        if band else None,
        "calibrated": target.calibration.calibrated,  # the profile: held against real devices
        # kernels of dtypes the profile's calibration never ran (a quantised file on a host profile
        # fitted on fp32 files): the figure is the roofline's, with no measured error
        "uncalibrated_dtypes": [] if off else outside_calibration(sim, target),
        "no_band": why,  # why there is no band
        "accelerator_share": round(sim.residency_ops, 4) if any(u.accelerator for u in target.units)
        else None,
        "accelerator_time_share": round(sim.residency_time, 4),
        "fallback_ops": [{"kind": k, "reason": r, "count": n} for (k, r), n in fallbacks.items()],
    }


def describe(p: dict) -> str:
    what = p.get("network") or p.get("file")
    band = (f" (80% band {p['latency_band_ms'][0]:.3g}-{p['latency_band_ms'][1]:.3g} ms)"
            if p["latency_band_ms"] else f" (no error band: {p['no_band']})")
    on = f" through {p['runtime']}" if p.get("runtime") else ""
    lines = [f"{what} on {p['target']}{on}: {p['latency_ms']:.3g} ms{band}, {p['ops']} ops"]
    if p["accelerator_share"] is not None:
        lines.append(f"  on the accelerator: {p['accelerator_share']:.0%} of ops, "
                     f"{p['accelerator_time_share']:.0%} of time")
    for f in p["fallback_ops"]:
        lines.append(f"  fallback: {f['count']} {f['kind']} op(s) on the CPU ({f['reason']})")
    return "\n".join(lines)
