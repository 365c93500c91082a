"""Simulated phones against published ones: each calibrated target profile fitted to its chip's rows of
the published-latency set, every row predicted by a fit that never saw its network (leave one network
out), residency against the published layer placement, and what calibrating and simulating cost.

    python benchmarks/simulator_truth.py --out results/simulator_truth.json [--csv FILE] [--write-profiles]

--write-profiles stores each fit in targets/NAME.yaml (keeping its sources). The networks are built
without weights (edgekd.nets.standard: torchvision, timm, transformers configs) and read through
torch.export, so no converter runs.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import environment, print_goals, write  # noqa: E402

DEFAULT_CSV = Path(__file__).resolve().parents[2] / "shared" / "device-latency" / "published_calibration.csv"
LATENCY_CHIPS = ("snapdragon-8-gen3-hexagon", "apple-a17-pro-ane", "apple-a14-ane")  # the bars
REPORTED_CHIPS = ("snapdragon-7-gen4-hexagon",)  # calibrated and reported, no bar


def why(row: dict, target, cache: dict) -> str:
    """Which op class dominates the prediction of a badly predicted row (the fitted profile's own op
    times), and its direction."""
    from edgekd.bench.calibrate import Row, row_ops
    from edgekd.bench.simulator import simulate

    r = Row(row["row_id"], row["network"], row["variant"], tuple(row["input_shape"]), row["precision"],
            row["runtime"], row["published_ms"], None, None, None)
    sim = simulate(row_ops(r, cache), target)
    by_kind: dict[str, float] = {}
    for t in sim.ops:
        by_kind[t.kind] = by_kind.get(t.kind, 0.0) + t.time_us
    top = max(by_kind, key=by_kind.get)
    share = by_kind[top] / max(1e-9, sim.latency_ms * 1000)
    direction = "over" if row["held_out_error"] > 0 else "under"
    return (f"{direction}-predicted by {abs(row['held_out_error']):.0%}; {top} ops take {share:.0%} of the "
            f"predicted {sim.latency_ms:.2f} ms; runtime {row['runtime']}")


def residency(csv_path: Path, targets: dict, cache: dict) -> tuple[list[dict], list[dict]]:
    """Predicted share of ops on the accelerator against the published share of layers, for rows of the
    calibrated chips that name their placement; and every published full-CPU fallback in the set."""
    import csv

    from edgekd.bench.calibrate import Row, _shape, precision_of, row_ops
    from edgekd.bench.simulator import simulate
    from edgekd.nets.standard import from_constructor

    chips = {t.calibration.chipset: t for t in targets.values() if t.calibration.chipset}
    rows, full_cpu = [], []
    with open(csv_path, newline="", encoding="utf-8") as f:
        published = list(csv.DictReader(f))
    for r in published:
        if r["layers_total"] in ("", None):
            continue
        total, npu = float(r["layers_total"]), float(r["layers_npu"] or 0)
        target, network = chips.get(r["chipset_norm"]), from_constructor(r["torch_constructor"])
        seen = target.for_runtime(r["runtime"]) if target else None  # the units this runtime uses
        if npu == 0:
            # a runtime whose rule leaves no accelerator falls back whatever the graph (so also for
            # networks not buildable here); otherwise the simulated graph must land wholly on the CPU
            full_cpu.append({"row_id": r["row_id"], "model": r["model"], "chip": r["chipset_norm"],
                             "runtime": r["runtime"], "profile": target.name if target else None,
                             "runtime_rule": target.runtime_note(r["runtime"]) if target else None,
                             "predicted_fallback": bool(seen) and not any(u.accelerator for u in seen.units)})
        precision = precision_of(r["precision"])
        if target is None or network is None or precision is None:
            continue
        row = Row(r["row_id"], network, r["model_variant"], _shape(r["input_shape"], network), precision,
                  r["runtime"], float(r["latency_ms"]), npu, float(r["layers_cpu"] or 0), total)
        sim = simulate(row_ops(row, cache), seen)
        if npu == 0:
            full_cpu[-1]["predicted_fallback"] = sim.residency_ops == 0
        rows.append({"row_id": r["row_id"], "network": network, "precision": precision,
                     "runtime": r["runtime"],
                     "chip": r["chipset_norm"], "published_npu_share": round(npu / total, 4),
                     "predicted_npu_share": round(sim.residency_ops, 4),
                     "predicted_fallback": sim.residency_ops == 0})
    return rows, full_cpu


def export_check(networks: list[str]) -> list[dict]:
    """The shortcut (torch.export, no converter) against the file a converter writes: each network
    converted to TFLite fp32, read back, and simulated on the CPU target next to its torch graph."""
    import tempfile

    from edgekd.bench.graph import read_tflite
    from edgekd.bench.simulator import simulate
    from edgekd.bench.targets import all_targets, targets_dir
    from edgekd.bench.torchgraph import export_ops
    from edgekd.export.common import ExportMeta
    from edgekd.export.quiet import quiet
    from edgekd.export.tflite import write_tflite
    from edgekd.nets.standard import build

    cpu, out = all_targets(targets_dir())["arm-cortex-a78"], []
    with tempfile.TemporaryDirectory(prefix="edgekd-export-check-") as work:
        for name in networks:
            model, (x,) = build(name)
            path = Path(work) / f"{name}.tflite"
            meta = ExportMeta(name=name, labels=tuple(str(i) for i in range(1000)), mean=0.0, std=1.0,
                              input_shape=tuple(x.shape[1:]))
            t0 = time.perf_counter()
            with quiet():
                write_tflite(model, x.numpy(), path, "fp32", x.numpy(), meta)
            convert_s = time.perf_counter() - t0
            f_ops, t_ops = read_tflite(path), export_ops(model, (x,), "fp32")
            out.append({"network": name, "convert_s": round(convert_s, 1), "file_ops": len(f_ops),
                        "torch_ops": len(t_ops),
                        "file_gflops": round(sum(o.flops for o in f_ops) / 1e9, 4),
                        "torch_gflops": round(sum(o.flops for o in t_ops) / 1e9, 4),
                        "file_sim_ms": round(simulate(f_ops, cpu).latency_ms, 3),
                        "torch_sim_ms": round(simulate(t_ops, cpu).latency_ms, 3)})
            print(out[-1], flush=True)
    return out


def main() -> None:
    from edgekd.bench.calibrate import calibrate, write_profile
    from edgekd.bench.simulator import simulate
    from edgekd.bench.targets import Target, all_targets, targets_dir
    from edgekd.bench.torchgraph import export_ops
    from edgekd.nets.standard import build

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--csv", default=str(DEFAULT_CSV))
    ap.add_argument("--write-profiles", action="store_true")
    ap.add_argument("--export-check", default="mobilenet_v2,resnet18,efficientnet_b0",
                    help="networks converted to TFLite to check the torch.export reader ('' to skip)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    csv_path = Path(args.csv)
    targets = all_targets(targets_dir())
    rows, goals, per_chip, cache = [], {}, {}, {}
    for name in (*LATENCY_CHIPS, *REPORTED_CHIPS):
        t0 = time.perf_counter()
        res = calibrate(targets[name], csv_path, progress=lambda m: print(f"  {name}: {m}", flush=True),
                        cache=cache)
        wall = time.perf_counter() - t0
        fitted = Target.model_validate(res.profile)
        if args.write_profiles:
            write_profile(res.profile, targets_dir() / f"{name}.yaml", targets_dir() / f"{name}.yaml")
        errs = np.array([r["held_out_error"] for r in res.rows])
        worst = sorted(res.rows, key=lambda r: -abs(r["held_out_error"]))[:5]
        for r in worst:
            r["why"] = why(r, fitted, cache)
        per_precision = {}
        for p in sorted({r["precision"] for r in res.rows}):
            e = [abs(r["held_out_error"]) for r in res.rows if r["precision"] == p]
            per_precision[p] = {"rows": len(e), "median_abs_error": round(float(np.median(e)), 3)}
        per_chip[name] = {"rows": len(res.rows), "networks": res.profile["calibration"]["networks"],
                          "median_abs_error": round(float(np.median(np.abs(errs))), 4),
                          "within_35pct": round(float(np.mean(np.abs(errs) <= 0.35)), 4),
                          "error_band": res.profile["calibration"]["error_band"],
                          "per_precision": per_precision,
                          "family_rows": res.profile["calibration"].get("family_rows", 0),
                          "family_factors": res.profile["calibration"].get("family_factors"),
                          "worst": worst, "skipped": res.skipped, "calibrate_s": round(wall, 1),
                          "build_s": round(res.build_s, 1), "fit_s": round(res.fit_s, 1)}
        rows += [{"target": name, **r} for r in res.rows]
        print(f"{name}: median |error| {per_chip[name]['median_abs_error']:.3f}, within 35% "
              f"{per_chip[name]['within_35pct']:.2f} over {len(res.rows)} rows ({wall:.0f} s)", flush=True)
        if name not in LATENCY_CHIPS:
            continue
        goals[f"{name}_median_abs_error"] = {"value": per_chip[name]["median_abs_error"], "goal": "<= 0.25",
                                             "met": per_chip[name]["median_abs_error"] <= 0.25}
        goals[f"{name}_within_35pct"] = {"value": per_chip[name]["within_35pct"], "goal": ">= 0.70",
                                         "met": per_chip[name]["within_35pct"] >= 0.70}
        goals[f"{name}_calibrate_minutes"] = {"value": round(wall / 60, 2), "goal": "< 5", "met": wall < 300}

    res_rows, full_cpu = residency(csv_path, all_targets(targets_dir()), cache)  # placement: no fitted value
    close = [abs(r["published_npu_share"] - r["predicted_npu_share"]) <= 0.10 for r in res_rows]
    goals["residency_within_10pts"] = {"value": round(float(np.mean(close)), 4) if close else None,
                                       "goal": ">= 0.80", "met": bool(close) and float(np.mean(close)) >= 0.8}
    predicted = sum(f["predicted_fallback"] for f in full_cpu)
    goals["full_cpu_fallbacks_predicted"] = {
        "value": f"{predicted} of {len(full_cpu)} published full-CPU fallbacks predicted as fallbacks",
        "goal": "every one predicted", "met": bool(full_cpu) and predicted == len(full_cpu)}

    model, example = build("densenet121")  # ~300 ops
    ops = export_ops(model, example, "fp16")
    t0 = time.perf_counter()
    for t in all_targets(targets_dir()).values():
        simulate(ops, t)
    sim_s = time.perf_counter() - t0
    goals["simulate_all_targets_s"] = {"value": round(sim_s, 4), "goal": f"< 1 ({len(ops)} ops)",
                                       "met": sim_s < 1}
    # the host: `edgekd calibrate host` here (TFLite, then ONNX Runtime), then its held-out models
    from edgekd.hostprofile import HOST_PROFILES, calibrate_host

    host = {}
    for name in HOST_PROFILES:
        t0 = time.perf_counter()
        host_profile, host_rows = calibrate_host(all_targets(targets_dir())[name], threads=1)
        if args.write_profiles:  # this machine builds the package: its fit is the packaged one
            write_profile(host_profile, targets_dir() / f"{name}.yaml", targets_dir() / f"{name}.yaml")
        held = [r for r in host_rows if r["set"] == "held_out"]
        within = sum(abs(r["error"]) <= 0.10 for r in held) / len(held)
        goals[f"{name}_after_calibrate_within_10pct"] = {"value": round(within, 3), "goal": ">= 0.90",
                                                         "met": within >= 0.90}
        host[name] = {"rows": host_rows, "calibrate_s": round(time.perf_counter() - t0, 1),
                      "within_10pct": round(within, 3),
                      "within_20pct": round(sum(abs(r["error"]) <= 0.20 for r in held) / len(held), 3),
                      "calibration": host_profile["calibration"]}
        print(f"{name}: held-out within 10% {within:.2f}", flush=True)
    exports = export_check([n for n in args.export_check.split(",") if n])
    worst_sim = max((abs(e["torch_sim_ms"] / e["file_sim_ms"] - 1) for e in exports), default=0.0)
    goals["torch_reader_vs_tflite_file"] = {"value": round(worst_sim, 4), "goal": "reported (simulated "
                                            "latency, torch graph vs converted file, worst relative gap)",
                                            "met": True}
    write(args.out, {"benchmark": "simulator_truth", "export_check": exports, "environment": environment(),
                     "csv": csv_path.name,
                     "per_chip": per_chip, "host": host, "residency": res_rows,
                     "full_cpu_fallbacks": full_cpu,
                     "rows": rows, "goals": goals})
    print_goals(goals)


if __name__ == "__main__":
    main()
