"""The backend table for the MNIST-1D teacher and the ~10x KD student: every exported file on every
runner here and every simulated target, and the student speed-up.

    python benchmarks/backends.py --out results/backends.json [--run DIR]

student_speedup = the fp32 teacher's measured TFLite p50 latency / the p50 of the fastest measured
student file whose retention is at least 0.99, both measured in this run.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import environment, teacher_and_student_args, write  # noqa: E402
from edgekd.bench.stage import bench_artifacts, dataset_for_manifest  # noqa: E402
from edgekd.bench.targets import get_targets  # noqa: E402
from edgekd.errors import CheckFailed  # noqa: E402
from edgekd.export import export_checkpoint  # noqa: E402


def main() -> None:
    args, recipe, models = teacher_and_student_args(__doc__, "edgekd-backends-")
    targets = get_targets(None)
    tables = {}
    for label, ckpt in models.items():
        out = Path(tempfile.mkdtemp(prefix=f"edgekd-bench-{label}-"))
        try:
            export_checkpoint(ckpt, out / "export", **recipe.export.model_dump())
        except CheckFailed as e:  # files that missed parity are reported; the rest are benchmarked
            print(f"{label}: {e}", flush=True)
        manifest = out / "export" / "artifacts.json"
        tables[label] = bench_artifacts(manifest, out / "bench", targets=targets,
                                        data=dataset_for_manifest(manifest))
    rows = [{**r, "model": label} for label, t in tables.items() for r in t["rows"]]
    for r in rows:
        r.pop("per_op", None)
    measured = [r for r in rows if r["kind"] == "measured" and r.get("latency_ms_p50") is not None]
    teacher_tfl = next(r for r in measured
                       if r["model"] == "teacher" and r["format"] == "tflite" and r["quant"] == "fp32")
    good = [r for r in measured if r["model"] == "student-10x" and (r.get("retention") or 0) >= 0.99]
    fastest = min(good, key=lambda r: r["latency_ms_p50"])
    sim = {}
    for r in rows:
        if r["kind"] == "simulated" and "failed" not in r:
            key = f"{r['model']}/{r['format']}/{r['quant']}"
            sim.setdefault(r["target"], {})[key] = round(r["latency_ms_p50"], 5)
    host = {f"{r['model']}/{r['runner']}/{r['quant']}": round(r["latency_ms_p50"], 5) for r in measured}
    speedup = teacher_tfl["latency_ms_p50"] / fastest["latency_ms_p50"]
    write(args.out, {
        "rows": rows,
        "student_speedup": speedup,
        "speedup_detail": {"teacher_tflite_fp32_p50_ms": teacher_tfl["latency_ms_p50"],
                           "fastest_student_file": fastest["artifact"],
                           "fastest_student_runner": fastest["runner"],
                           "fastest_student_p50_ms": fastest["latency_ms_p50"],
                           "fastest_student_retention": fastest["retention"]},
        "measured_p50_ms_here": host, "simulated_p50_ms": sim,
        "goals": {"student_speedup": {"value": round(speedup, 2), "goal": ">= 10 (issue 4)",
                                      "met": speedup >= 10}},
        "environment": environment(),
    })


if __name__ == "__main__":
    main()
