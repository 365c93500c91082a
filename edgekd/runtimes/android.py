"""A real Android device over adb, timed by TFLite's `benchmark_model`.

The device needs `benchmark_model` (TFLite's prebuilt android_aarch64 binary) in /data/local/tmp, or
pass its local path to push it. Without an attached device every call says so and nothing runs.

`parse_benchmark_output` reads the tool's stdout from its generations: TFLite 2.x (`Inference timings
in us: Init: ...`), TF 1.x-era (`Average inference timings in us: Warmup: ..., Init: ..., no stats: ...`),
LiteRT 2.x `benchmark_model` (`Inference (avg): 0.46 ms (2112 runs)`, litert/tools/benchmark_litert_model.h)
and `--enable_op_profiling` tables. A run the tool reports as failed, or a delegate that was asked for and
did not run, is a `DeviceResult` with `failed` quoting the tool's lines; real outputs of every kind are in
tests/data/benchmark_model/.
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
    """One benchmark_model run. When `failed` is set every measurement is None (runs 0)."""

    latency_ms_avg: float | None
    latency_ms_p50: float | None
    latency_ms_p90: float | None  # benchmark_model prints p95, not p90: we report p95 here when present
    init_ms: float | None
    first_ms: float | None
    peak_memory_bytes: int | None
    delegated_nodes: tuple[int, int] | None  # (replaced, total) from "Replacing N out of M node(s)"
    runs: int
    fully_delegated: bool = False  # the tool said the delegate executes the whole graph
    failed: str | None = None  # why there is no measurement, quoting the tool's own lines
    warnings: tuple[str, ...] = ()  # ERROR lines of a run that still finished; how a number was derived

    @property
    def residency(self) -> float | None:
        """Fraction of the graph's nodes the delegate runs: replaced/total, 1.0 when the tool said the graph
        is completely delegated without counting nodes, None when the output says nothing about it."""
        if self.delegated_nodes:
            replaced, total = self.delegated_nodes
            return replaced / total if total else None
        return 1.0 if self.fully_delegated else None


def benchmark_command(remote_model: str, delegate: str = "xnnpack", threads: int = 1, runs: int = 100,
                      warmup_runs: int = 10, binary: str = f"{REMOTE_DIR}/benchmark_model") -> list[str]:
    if delegate not in DELEGATES:
        raise InputError(f"unknown delegate {delegate!r}; choose one of {', '.join(DELEGATES)}")
    return [binary, f"--graph={remote_model}", f"--num_threads={threads}", f"--num_runs={runs}",
            f"--warmup_runs={warmup_runs}", *DELEGATES[delegate]]


_NUM = r"([0-9.]+(?:e[+-]?[0-9]+)?)"
# TFLite 2.x, tensorflow/lite/tools/benchmark/benchmark_model.cc (BenchmarkLoggingListener)
_TF2 = re.compile(rf"Inference timings in us: Init: {_NUM}, First inference: {_NUM}, "
                  rf"Warmup \(avg\): {_NUM}, Inference \(avg\): {_NUM}")
# TF 1.x-era TFLite ("no stats" until ~2019, then "Inference"); full-TF's tool has no Init field
_TF1 = re.compile(rf"Average inference timings in us: Warmup: {_NUM}(?:, Init: {_NUM})?, "
                  rf"(?:no stats|Inference): {_NUM}")
# LiteRT 2.x, litert/tools/benchmark_litert_model.h (BenchmarkLoggingListener::OnBenchmarkEnd)
_LITERT_AVG = re.compile(rf"Inference \(avg\):\s+{_NUM} ms \((\d+) runs\)")
_LITERT_INIT = re.compile(rf"Model initialization:\s+{_NUM} ms")
_LITERT_FIRST = re.compile(rf"Warmup \(first\):\s+{_NUM} ms")
# the op profiler's summary (tensorflow/core/util/stats_calculator.cc): its per-run total, not wall clock
_PROFILE_TIMINGS = re.compile(r"Timings \(microseconds\): (count=.*)")
_REGULAR_PROFILE = "Operator-wise Profiling Info for Regular Benchmark Runs"
_STATS_NOT_RUNS = ("Timings (microseconds)", "Memory (bytes)")  # count= lines of the profiler, not runs
_KEY_VALUE = re.compile(rf"(\w+)={_NUM}")

# most specific first: periodic monitoring sees the real peak; LiteRT prints "%.2f MB" lines
_MEMORY_MB = (
    re.compile(rf"Overall peak memory footprint \(MB\) via periodic monitoring: {_NUM}"),
    re.compile(rf"Peak memory footprint \(MB\): init={_NUM} overall={_NUM}"),
    re.compile(rf"Memory footprint delta from the start of the tool \(MB\): init={_NUM} overall={_NUM}"),
    re.compile(rf"Peak memory:\s+{_NUM} MB"),
    re.compile(rf"Overall footprint:\s+{_NUM} MB"),
)
_DELEGATED = re.compile(r"Replacing (\d+) out of (\d+) node\(s\) with delegate")
# benchmark_tflite_model.cc logs one of these per delegate it applied
_APPLIED = re.compile(r"[Aa]pplied \w+ delegate, and the model graph will be (completely|partially) executed")
# ... and its words for a delegate that did not run; "Benchmarking failed." is benchmark_main.cc's
_NOT_RUN = re.compile(r"Failed to apply \w+ delegate|Though \w+ delegate is explicitly applied, the model "
                      r"graph will not be executed|Benchmarking failed")
_FAILURE = re.compile(_NOT_RUN.pattern + r"|ANEURALNETWORKS_[A-Z_]+|failed to (?:prepare|invoke)"
                      r"|Failed to allocate tensors")
_ERROR_LINE = re.compile(r"(?:^|\s)(?:ERROR:|E tflite\s*:)")  # TFLite's own log prefix, or logcat's
_QUOTED_LINES = 8  # a failing op can repeat its error per node; the first lines say why


@dataclass(frozen=True)
class _Summary:
    """What a timing summary line says, in milliseconds."""

    avg_ms: float
    init_ms: float | None
    first_ms: float | None
    runs: int | None
    note: str | None = None  # set when the number is derived rather than printed by the tool


def parse_benchmark_output(text: str) -> DeviceResult:
    """Parse benchmark_model's stdout+stderr for one run (any log prefix such as `INFO:` or `I tflite  :`).

    Returns a failed result when the tool reports a failure or a requested delegate that did not run;
    raises ValueError when the text is not recognisably one benchmark_model run."""
    lines = text.splitlines()
    _refuse_several_runs(text)
    summary = _timing_summary(text, lines)
    if summary is None:
        reason = _why_no_timings(text, lines)
        if reason:
            return _failed(reason)
        summary = _profile_summary(text)
    if summary is None:
        errors = _quote([line for line in lines if _ERROR_LINE.search(line)])
        raise ValueError("no 'Inference timings in us' line (nor TF1 'Average inference timings', LiteRT "
                         "'Inference (avg): ... ms (N runs)' or op-profiling 'Timings (microseconds)' "
                         "line) in benchmark_model output" + (f"; its errors: {errors}" if errors else ""))
    not_run = _quote([line for line in lines if _NOT_RUN.search(line)])
    if not_run:
        return _failed(f"the requested delegate did not run (any timings are another backend's): {not_run}")
    return _measured(text, lines, summary)


def _refuse_several_runs(text: str) -> None:
    starts = text.count("STARTING!")
    if starts > 1:
        raise ValueError(f"benchmark_model output holds {starts} runs ('STARTING!' lines); "
                         "parse one at a time")


def _timing_summary(text: str, lines: list[str]) -> _Summary | None:
    warmup, timed = _run_stats(lines)
    for read in (_tf2_summary, _tf1_summary, _litert_summary):
        summary = read(text, warmup, timed)
        if summary is not None:
            return summary
    return None


def _only(pattern: re.Pattern, text: str) -> re.Match | None:
    found = list(pattern.finditer(text))
    if len(found) > 1:
        raise ValueError(f"benchmark_model output holds {len(found)} timing summaries "
                         f"({found[0].group(0)!r} ...); parse one run at a time")
    return found[0] if found else None


def _tf2_summary(text: str, warmup: dict | None, timed: dict | None) -> _Summary | None:
    m = _only(_TF2, text)
    if not m:
        return None
    init_us, first_us, _, avg_us = (float(v) for v in m.groups())
    return _Summary(avg_us / 1000, init_us / 1000, first_us / 1000, _count(timed))


def _tf1_summary(text: str, warmup: dict | None, timed: dict | None) -> _Summary | None:
    m = _only(_TF1, text)
    if not m:
        return None
    _, init_us, avg_us = m.groups()
    # "Warmup:" is the warm-up average; the first inference is the warm-up's first run, when printed
    first_us = (warmup or {}).get("first", (warmup or {}).get("curr"))
    return _Summary(float(avg_us) / 1000, float(init_us) / 1000 if init_us else None,
                    first_us / 1000 if first_us is not None else None, _count(timed))


def _litert_summary(text: str, warmup: dict | None, timed: dict | None) -> _Summary | None:
    m = _only(_LITERT_AVG, text)
    if not m:
        return None
    avg_ms, runs = float(m.group(1)), int(m.group(2))
    if timed and _count(timed) == runs and "avg" in timed:
        avg_ms = timed["avg"] / 1000  # the same runs in microseconds; LiteRT rounds to 0.01 ms
    init, first = _LITERT_INIT.search(text), _LITERT_FIRST.search(text)
    return _Summary(avg_ms, float(init.group(1)) if init else None, float(first.group(1)) if first else None,
                    runs)


def _profile_summary(text: str) -> _Summary | None:
    """The op profiler's total per regular run, for outputs that kept only its tables."""
    start = text.find(_REGULAR_PROFILE)
    found = _PROFILE_TIMINGS.findall(text[start:] if start >= 0 else text)
    if not found:
        return None
    stats = _key_values(found[0] if start >= 0 else found[-1])  # without the header: one table, the last
    avg_us = stats.get("avg", stats.get("curr"))
    if avg_us is None:
        return None
    note = ("latency_ms_avg is the op profiler's per-run total ('Timings (microseconds)' of the regular "
            "runs), not benchmark_model's wall-clock average: the output has no timing summary; init and "
            "first inference are unknown")
    return _Summary(avg_us / 1000, None, None, _count(stats), note)


def _run_stats(lines: list[str]) -> tuple[dict | None, dict | None]:
    """(warm-up, timed) statistics: the first `count=` line after each "Running benchmark for" header.
    Pasted outputs without headers keep the old rule: the last statistics line is the timed one."""
    blocks: list[dict | None] = []
    loose: list[dict] = []
    for line in lines:
        if "Running benchmark for" in line:
            blocks.append(None)
        elif "count=" in line and not any(tag in line for tag in _STATS_NOT_RUNS):
            stats = _key_values(line)
            if blocks and blocks[-1] is None:
                blocks[-1] = stats
            elif not blocks:
                loose.append(stats)
    if blocks:
        return blocks[0], blocks[1] if len(blocks) > 1 else None
    return (loose[-2] if len(loose) > 1 else None), (loose[-1] if loose else None)


def _key_values(line: str) -> dict[str, float]:
    return {key: float(value) for key, value in _KEY_VALUE.findall(line)}


def _count(stats: dict | None) -> int | None:
    return int(stats["count"]) if stats and "count" in stats else None


def _why_no_timings(text: str, lines: list[str]) -> str | None:
    """The failure an output without timings reports, or None when it reports none."""
    failures = _quote([line for line in lines if _FAILURE.search(line) or _ERROR_LINE.search(line)])
    if any(_FAILURE.search(line) for line in lines):
        return f"benchmark_model failed: {failures}"
    if "STARTING!" not in text:
        return None  # not recognisably benchmark_model's output: the caller gets a ValueError
    if failures:
        return f"benchmark_model printed no timings; its errors: {failures}"
    if _profile_summary(text) is None:
        last = next((line.strip() for line in reversed(lines) if line.strip()), "")
        return ("benchmark_model started but printed no timings and no error (killed or cut short?); "
                f"last line: {last}")
    return None


def _quote(lines: list[str]) -> str:
    seen = list(dict.fromkeys(line.strip() for line in lines if line.strip()))
    more = f" | ... ({len(seen) - _QUOTED_LINES} more)" if len(seen) > _QUOTED_LINES else ""
    return " | ".join(seen[:_QUOTED_LINES]) + more


def _failed(reason: str) -> DeviceResult:
    return DeviceResult(latency_ms_avg=None, latency_ms_p50=None, latency_ms_p90=None, init_ms=None,
                        first_ms=None, peak_memory_bytes=None, delegated_nodes=None, runs=0, failed=reason)


def _measured(text: str, lines: list[str], summary: _Summary) -> DeviceResult:
    _, timed = _run_stats(lines)
    median, p95 = (timed or {}).get("median"), (timed or {}).get("p95")
    delegated, fully = _delegation(text)
    errors = [line.strip() for line in lines if _ERROR_LINE.search(line)]
    warnings = tuple(dict.fromkeys(errors)) + ((summary.note,) if summary.note else ())
    return DeviceResult(latency_ms_avg=summary.avg_ms, latency_ms_p50=_ms(median), latency_ms_p90=_ms(p95),
                        init_ms=summary.init_ms, first_ms=summary.first_ms,
                        peak_memory_bytes=_peak_memory_bytes(text), delegated_nodes=delegated,
                        runs=_runs(text, summary), fully_delegated=fully, warnings=warnings)


def _runs(text: str, summary: _Summary) -> int:
    """Timed runs; when the output printed no statistics line, the op profiler's count of regular runs."""
    if summary.runs is not None:
        return summary.runs
    profile = _profile_summary(text)
    return profile.runs if profile and profile.runs is not None else 0


def _ms(us: float | None) -> float | None:
    return us / 1000 if us is not None else None


def _peak_memory_bytes(text: str) -> int | None:
    for pattern in _MEMORY_MB:
        m = pattern.search(text)
        if m:
            return int(float(m.groups()[-1]) * 1024 * 1024)
    return None


def _delegation(text: str) -> tuple[tuple[int, int] | None, bool]:
    """(replaced, total) of the first delegate that counted nodes; whether the whole graph is delegated."""
    m = _DELEGATED.search(text)
    delegated = (int(m.group(1)), int(m.group(2))) if m else None
    said = {a.group(1) for a in _APPLIED.finditer(text)}
    counted_all = bool(delegated) and delegated[0] == delegated[1]
    fully = "completely" in said or ("partially" not in said and counted_all)
    return delegated, fully


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
