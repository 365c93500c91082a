"""A real Android device over adb, timed by TFLite's `benchmark_model`.

The device needs `benchmark_model` (TFLite's prebuilt android_aarch64 binary) in /data/local/tmp, or
pass its local path to push it. Without an attached device every call says so and nothing runs.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from edgekd.errors import InputError

REMOTE_DIR = "/data/local/tmp"
DELEGATES = {
    "cpu": ["--use_xnnpack=false"],
    "xnnpack": ["--use_xnnpack=true"],
    "gpu": ["--use_gpu=true"],
    "nnapi": ["--use_nnapi=true"],
}


class NoDevice(InputError):
    pass


@dataclass(frozen=True)
class DeviceResult:
    latency_ms_avg: float
    latency_ms_p50: float | None
    latency_ms_p90: float | None  # benchmark_model prints p95, not p90: we report p95 here when present
    init_ms: float
    first_ms: float
    peak_memory_bytes: int | None
    delegated_nodes: tuple[int, int] | None  # (replaced, total) when a delegate took part of the graph
    runs: int


def benchmark_command(remote_model: str, delegate: str = "xnnpack", threads: int = 1, runs: int = 100,
                      warmup_runs: int = 10, binary: str = f"{REMOTE_DIR}/benchmark_model") -> list[str]:
    if delegate not in DELEGATES:
        raise InputError(f"unknown delegate {delegate!r}; choose one of {', '.join(DELEGATES)}")
    return [binary, f"--graph={remote_model}", f"--num_threads={threads}", f"--num_runs={runs}",
            f"--warmup_runs={warmup_runs}", *DELEGATES[delegate]]


_NUM = r"([0-9.]+(?:e[+-]?[0-9]+)?)"
_TIMINGS = re.compile(rf"Inference timings in us: Init: {_NUM}, First inference: {_NUM}, "
                      rf"Warmup \(avg\): {_NUM}, Inference \(avg\): {_NUM}")
_COUNT = re.compile(rf"count=(\d+) first={_NUM} curr={_NUM} min={_NUM} max={_NUM} avg={_NUM} std={_NUM}"
                    rf"(?: p5={_NUM} median={_NUM} p95={_NUM})?")
_MEMORY = re.compile(rf"(?:Peak memory footprint \(MB\)|Memory footprint delta from the start of the tool \(MB\)): "
                     rf"init={_NUM} overall={_NUM}")
_DELEGATED = re.compile(r"Replacing (\d+) out of (\d+) node\(s\) with delegate")


def parse_benchmark_output(text: str) -> DeviceResult:
    """Parse benchmark_model's stdout (any log prefix such as `INFO:` or `I tflite  :` is fine)."""
    t = _TIMINGS.search(text)
    if not t:
        raise ValueError("no 'Inference timings in us' line in benchmark_model output")
    init_us, first_us, _, avg_us = (float(v) for v in t.groups())
    counts = _COUNT.findall(text)
    last = counts[-1] if counts else None  # the timed run comes after the warm-up run
    p50 = float(last[8]) / 1000 if last and last[8] else None
    p95 = float(last[9]) / 1000 if last and last[9] else None
    m = _MEMORY.search(text)
    d = _DELEGATED.search(text)
    return DeviceResult(latency_ms_avg=avg_us / 1000, latency_ms_p50=p50, latency_ms_p90=p95,
                        init_ms=init_us / 1000, first_ms=first_us / 1000,
                        peak_memory_bytes=int(float(m.group(2)) * 1024 * 1024) if m else None,
                        delegated_nodes=(int(d.group(1)), int(d.group(2))) if d else None,
                        runs=int(last[0]) if last else 0)


def attached_devices(adb: str = "adb") -> list[str]:
    if shutil.which(adb) is None:
        return []
    try:
        out = subprocess.run([adb, "devices"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.split()[0] for line in out.splitlines()[1:] if line.strip().endswith("device")]


def run_on_device(model: Path, delegate: str = "xnnpack", threads: int = 1, serial: str | None = None,
                  adb: str = "adb") -> DeviceResult:
    devices = attached_devices(adb)
    if not devices:
        raise NoDevice("no Android device attached (adb devices lists none, or adb is not installed); "
                       "the device runner was skipped")
    serial = serial or devices[0]
    base = [adb, "-s", serial]
    remote = f"{REMOTE_DIR}/{Path(model).name}"
    subprocess.run([*base, "push", str(model), remote], check=True, capture_output=True, timeout=120)
    out = subprocess.run([*base, "shell", " ".join(benchmark_command(remote, delegate, threads))],
                         capture_output=True, text=True, timeout=600)
    return parse_benchmark_output(out.stdout + out.stderr)
