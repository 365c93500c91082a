"""Measured rows: run an artifact on a real runtime here. Warm-up, then timed runs until the median
is stable; threads, runtime version and CPU recorded with every row."""

from __future__ import annotations

import io
import platform
import statistics
import time
import zipfile
from pathlib import Path

import numpy as np

from edgekd.metrics import retention, top1_agreement
from edgekd.runtimes import import_runtime, load_runner


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def zip_size(path: Path) -> int:
    """Bytes the file adds to an app download (deflate, as APK/IPA packaging does)."""
    buf = io.BytesIO()
    path = Path(path)
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for p in ([path] if path.is_file() else sorted(q for q in path.rglob("*") if q.is_file())):
            z.write(p, p.relative_to(path.parent))
    return len(buf.getvalue())


def _rss_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def time_runs(run, x1: np.ndarray, warmup: int = 20, min_runs: int = 50, min_seconds: float = 0.3,
              max_runs: int = 5000) -> list[float]:
    """Latencies in ms of single inferences after warm-up; at least `min_runs` and `min_seconds`."""
    for _ in range(warmup):
        run(x1)
    times, start = [], time.perf_counter()
    while len(times) < max_runs and (len(times) < min_runs or time.perf_counter() - start < min_seconds):
        t0 = time.perf_counter()
        run(x1)
        times.append((time.perf_counter() - t0) * 1000)
    return times


def measure(fmt: str, path: Path, x_test: np.ndarray, y_test: np.ndarray, teacher_top1: np.ndarray,
            teacher_accuracy: float | None, threads: int = 1) -> dict:
    """The numbers of one measured row (Measurement fields): load time, latency percentiles, peak
    memory growth, accuracy, retention. Load time and memory are this file's alone: the runtime library is
    imported first (else the first file of each format carries its import: 3 s and 140 MB for Core ML's)."""
    import_runtime(fmt)
    try:  # reset the peak-RSS watermark so VmHWM measures this runner (Linux >= 4.0)
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    rss0 = _rss_kb("VmRSS:")
    t0 = time.perf_counter()
    runner = load_runner(fmt, path, threads)
    load_ms = (time.perf_counter() - t0) * 1000
    probs = runner.predict(x_test)
    top1 = probs.argmax(1)
    row = {"kind": "measured", "runner": runner.name, "runtime_version": runner.version, "threads": threads,
           "cpu": cpu_model(), "load_ms": round(load_ms, 3), "latency_ms_p50": None, "latency_ms_p90": None}
    if runner.measures_latency:
        times = time_runs(runner.run_one, x_test[:1])
        row.update(latency_ms_p50=statistics.median(times), latency_ms_p90=float(np.percentile(times, 90)),
                   timed_runs=len(times))
    hwm = _rss_kb("VmHWM:")
    row["peak_memory_bytes"] = (hwm - rss0) * 1024 if hwm is not None and rss0 is not None else None
    acc = float((top1 == y_test).mean())
    row.update(accuracy=acc, retention=retention(acc, teacher_accuracy),
               teacher_agreement=top1_agreement(top1, teacher_top1) if (teacher_top1 >= 0).all() else None)
    return row

