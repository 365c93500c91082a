"""Simulated latency on a target: walk the exported graph op by op with a roofline cost per op.

time(op) = dispatch[kind] + max(flops / (peak[dtype] * efficiency[kind]), weight bytes / DRAM bandwidth
                                                                       + activation bytes / cache bandwidth
                                                                       [+ im2col bytes / im2col bandwidth])
(a unit with `overlap: false` adds compute and memory time instead: small CPU kernels overlap little;
a unit with a channel_tile pads a kernel's output channels to a multiple of it: its SIMD tile)
An op runs on the first unit (in the profile's order) that takes its kind and dtype, else it falls back
to the last unit (CPU), paying a unit switch (sync + copying its input) whenever execution moves.
Layout ops stay on the unit before them; an activation right after conv/linear on a fusing unit is free.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from edgekd.bench.graph import Op
from edgekd.bench.targets import Target, Unit
from edgekd.types import UNCALIBRATED

FUSES_INTO = ("conv", "depthwise_conv", "fully_connected", "matmul", "elementwise")


@dataclass(frozen=True)
class OpTime:
    name: str
    kind: str
    dtype: str
    unit: str
    time_us: float


@dataclass(frozen=True)
class Simulation:
    target: str
    latency_ms: float
    ops: list[OpTime]
    residency_ops: float  # share of ops placed on an accelerator
    residency_time: float  # share of op time spent on an accelerator
    fallbacks: list[dict] = field(default_factory=list)  # ops an accelerator could not take, and why


TILED = ("conv", "depthwise_conv", "fully_connected")  # kernels whose output channels a SIMD tile covers


def tiled_flops(op: Op, tile: int) -> float:
    """The work a kernel does with its output channels padded to the unit's SIMD tile: 36 channels on a
    16-wide tile cost 48."""
    if tile <= 1 or op.kind not in TILED or op.channels <= 0:
        return op.flops
    return op.flops * math.ceil(op.channels / tile) * tile / op.channels


def op_time_us(op: Op, unit: Unit) -> float:
    eff = unit.efficiency.get(op.kind, unit.efficiency["default"])
    flops = tiled_flops(op, unit.channel_tile)
    compute_s = flops / (unit.peak_gops[op.dtype] * eff * 1e9) if flops else 0.0
    cache_bw = unit.cache_bandwidth_gbps or {}
    cache = cache_bw.get(op.kind, cache_bw.get("default", unit.memory_bandwidth_gbps))
    memory_s = (op.bytes_weights / (unit.memory_bandwidth_gbps * 1e9)
                + (op.bytes_in + op.bytes_out) / (cache * 1e9)
                + (op.bytes_lowered / (unit.im2col_gbps * 1e9) if unit.im2col_gbps else 0.0))
    work_s = max(compute_s, memory_s) if unit.overlap else compute_s + memory_s
    return unit.dispatch_us(op.kind) + 1e6 * work_s


def place(op: Op, target: Target, previous: Unit | None) -> Unit:
    if op.kind == "layout" and previous is not None and previous.runs(op.kind, _runnable_dtype(op, previous)):
        return previous
    for unit in target.units:
        if unit.runs(op.kind, op.dtype):
            return unit
    return target.units[-1]


def _runnable_dtype(op: Op, unit: Unit) -> str:
    return op.dtype if op.dtype in unit.peak_gops else next(iter(unit.peak_gops))


def walk(ops: list[Op], target: Target):
    """Per op: (the op in a dtype its unit runs, the unit, fused into the op before it, unit-switch cost in
    us). Where each op runs depends only on kinds and dtypes, not on any rate: the calibration fit walks
    once and prices the accelerator's ops itself."""
    prev_unit, prev_kind = None, None
    for op in ops:
        unit = place(op, target, prev_unit)
        run_op = op if op.dtype in unit.peak_gops else replace(op, dtype=_runnable_dtype(op, unit))
        fused = (op.kind == "activation" and prev_unit is unit and unit.fuses_activation
                 and prev_kind in FUSES_INTO)
        switch_us = (target.unit_switch_us + 1e6 * op.bytes_in / (target.transfer_bandwidth_gbps * 1e9)
                     if prev_unit is not None and unit is not prev_unit else 0.0)
        yield run_op, unit, fused, switch_us
        prev_unit, prev_kind = unit, op.kind


def simulate(ops: list[Op], target: Target) -> Simulation:
    times, fallbacks = [], []
    accelerators = [u for u in target.units if u.accelerator]
    total_us = target.invoke_overhead_us
    for op, (run_op, unit, fused, switch_us) in zip(ops, walk(ops, target)):
        if not unit.accelerator and accelerators and op.kind != "layout":
            why = [f"{u.name}: " + ("dtype " + op.dtype if op.dtype not in u.peak_gops else "op " + op.kind)
                   for u in accelerators]
            fallbacks.append({"op": op.name, "kind": op.kind, "dtype": op.dtype, "reason": "; ".join(why)})
        t = (0.0 if fused else op_time_us(run_op, unit)) + switch_us  # fused: into the op before it
        times.append(OpTime(op.name, op.kind, run_op.dtype, unit.name, t))
        total_us += t
    acc_names = {u.name for u in accelerators}
    counted = [t for t in times if t.kind != "layout"] or times
    op_total = sum(t.time_us for t in times) or 1.0
    return Simulation(
        target=target.name, latency_ms=total_us / 1000, ops=times,
        residency_ops=sum(t.unit in acc_names for t in counted) / max(1, len(counted)),
        residency_time=sum(t.time_us for t in times if t.unit in acc_names) / op_total,
        fallbacks=fallbacks)


def calibrated_unit(target: Target) -> Unit:
    """The unit a profile's calibration fits: its accelerator (a mobile profile), else its only unit (a
    host profile)."""
    return next((u for u in target.units if u.accelerator), target.units[0])


def outside_calibration(sim: Simulation, target: Target) -> list[str]:
    """The dtypes this simulation runs on the calibrated unit that the calibration never ran."""
    c = target.calibration
    if c.dtypes is None:
        return []
    unit = calibrated_unit(target).name
    return sorted({o.dtype for o in sim.ops if o.unit == unit} - set(c.dtypes))


def no_band_reason(sim: Simulation, target: Target) -> str | None:
    """Why this simulation carries no error band (None: it does): the profile was never calibrated; the
    file runs kernels its calibration never ran (an int8 file on a host profile fitted on fp32 files); or
    ops fell back from the accelerator to the CPU, whose figures no fit priced (the band was measured on
    published runs wholly on the accelerator: an fp32 file on a Hexagon profile runs all on the CPU)."""
    if not target.calibration.calibrated:
        return UNCALIBRATED
    missing = outside_calibration(sim, target)
    if missing:
        return f"{'/'.join(missing)} kernels, which its calibration never ran"
    if sim.fallbacks:
        return f"{len(sim.fallbacks)} ops on the CPU, which its calibration never priced"
    return None


def error_band(sim: Simulation, target: Target) -> tuple[tuple[float, float] | None, str | None]:
    """(the profile's 80% band, published or measured / predicted, where it applies to this simulation;
    why it does not: no_band_reason). A figure outside what the fit saw has no measured error."""
    why = no_band_reason(sim, target)
    return (None if why else target.calibration.error_band), why
