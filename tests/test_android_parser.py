"""parse_benchmark_output against real benchmark_model outputs from public repositories and issues.

Each file in tests/data/benchmark_model/ starts with `# source: ...` lines naming where it was copied from
(SOURCES.md lists them); the expected numbers below were typed from reading each file, not from the parser.
"""

from pathlib import Path

import pytest

from edgekd.runtimes.android import parse_benchmark_output

DATA = Path(__file__).parent / "data" / "benchmark_model"
MB = 1024 * 1024

# ms and MB as the files print them (us / 1000 where the tool prints us); p95 lands in latency_ms_p90
MEASURED = {
    "tf2_xnnpack_cpu.txt": dict(avg=105.784, p50=105.718, p95=106.281, init=87.639, first=106.436, runs=50,
                                peak_mb=14.8164, nodes=None, fully=False, residency=None),
    "gpu_full_delegate.txt": dict(avg=115.246, p50=115.350, p95=116.620, init=1361.236, first=125.113,
                                  runs=50, peak_mb=132.816, nodes=None, fully=True, residency=1.0),
    # the timed statistics line (464.545 us) is preferred to LiteRT's rounded "0.46 ms (2112 runs)"; the
    # profiler's "Timings (microseconds): count=3166" must not be taken for the runs
    "litert2_cpu_profiler.txt": dict(avg=0.464545, p50=0.462, p95=0.478, init=4.48, first=1.03, runs=2112,
                                     peak_mb=11.51, nodes=(1, 1), fully=True, residency=1.0),
    "litert2_gpu_llm.txt": dict(avg=7430.20, p50=None, p95=None, init=23744.73, first=7441.04, runs=10,
                                peak_mb=6391.74, nodes=None, fully=False, residency=None),
    # "no stats: 394183" wins over the profiler's avg=394059; first inference = the warm-up's first=393500
    "tf1_no_stats_op_profiling.txt": dict(avg=394.183, p50=None, p95=None, init=18.764, first=393.5, runs=50,
                                          peak_mb=None, nodes=None, fully=False, residency=None),
    # no statistics line: the runs are the profiler's count=50
    "tf1_inference_op_profiling.txt": dict(avg=79.7609, p50=None, p95=None, init=38.467, first=None, runs=50,
                                           peak_mb=None, nodes=None, fully=False, residency=None),
    # only the profiler's tables were pasted: the regular runs' total per run, count=50 avg=158715
    "op_profiling_only_nnapi.txt": dict(avg=158.715, p50=None, p95=None, init=None, first=None, runs=50,
                                        peak_mb=None, nodes=None, fully=False, residency=None),
    "external_delegate_full.txt": dict(avg=163.347, p50=None, p95=None, init=12.017, first=1583.707, runs=50,
                                       peak_mb=35.4844, nodes=None, fully=True, residency=1.0),
    "external_delegate_partial.txt": dict(avg=12.8221, p50=None, p95=None, init=14.432, first=8454.279,
                                          runs=77, peak_mb=50.668, nodes=None, fully=False, residency=None),
}
FAILED = {
    "nnapi_op_failed.txt": ("ANEURALNETWORKS_OP_FAILED",
                            "Node number 248 (TfLiteNnapiDelegate) failed to prepare",
                            "Failed to apply NNAPI delegate.", "Benchmarking failed."),
    "nnapi_bad_data.txt": ("ANEURALNETWORKS_BAD_DATA at line 1068 while adding operation",
                           "Failed to apply NNAPI delegate.", "Benchmarking failed."),
    "gpu_opencl_build_failed.txt": ("printed no timings", "ERROR: Failed to build program executable"),
}


def read_output(name: str) -> str:
    """The tool's output without the `# source:` header (outputs have '#' lines of their own, e.g.
    '#threads used for CPU inference', so only the leading header block is dropped)."""
    lines = (DATA / name).read_text().splitlines()
    assert lines[0].startswith("# source: "), f"{name} must start with its source"
    while lines and lines[0].startswith("# "):
        lines.pop(0)
    return "\n".join(lines) + "\n"


def approx(value):
    return None if value is None else pytest.approx(value, rel=1e-6)


def test_every_data_file_has_expectations():
    files = {p.name for p in DATA.glob("*.txt")}
    assert files == set(MEASURED) | set(FAILED)
    assert len(files) >= 8


@pytest.mark.parametrize("name", sorted(MEASURED))
def test_measured_outputs(name):
    want, r = MEASURED[name], parse_benchmark_output(read_output(name))
    assert r.failed is None
    assert r.latency_ms_avg == approx(want["avg"])
    assert r.latency_ms_p50 == approx(want["p50"]) and r.latency_ms_p90 == approx(want["p95"])
    assert r.init_ms == approx(want["init"]) and r.first_ms == approx(want["first"])
    assert r.runs == want["runs"]
    assert r.peak_memory_bytes == (None if want["peak_mb"] is None else int(want["peak_mb"] * MB))
    assert r.delegated_nodes == want["nodes"] and r.fully_delegated is want["fully"]
    assert r.residency == want["residency"]


@pytest.mark.parametrize("name", sorted(FAILED))
def test_failed_outputs_quote_the_tool(name):
    r = parse_benchmark_output(read_output(name))
    assert r.failed is not None
    for quoted in FAILED[name]:
        assert quoted in r.failed
    assert r.latency_ms_avg is None and r.init_ms is None and r.runs == 0 and r.residency is None


def test_derived_latency_says_so():
    derived = parse_benchmark_output(read_output("op_profiling_only_nnapi.txt"))
    assert any("op profiler" in w for w in derived.warnings)
    printed = parse_benchmark_output(read_output("tf1_no_stats_op_profiling.txt"))
    assert printed.warnings == ()  # a printed timing summary is not derived, even with profiler tables around


def test_two_runs_in_one_output_are_refused():
    both = read_output("tf2_xnnpack_cpu.txt") + read_output("gpu_full_delegate.txt")
    with pytest.raises(ValueError, match="holds 2 runs"):
        parse_benchmark_output(both)
