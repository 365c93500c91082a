"""The report leads with the answer: verdict, a matrix per student, Pareto plots, every row last.
Rows and the verdict are built by hand (two students, a CPU-only and an accelerator target, failed
rows); the page is checked as HTML here and, in the heavy test, rendered by headless Chromium."""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from edgekd.gate.verdict import Candidate, RuleFailure, Verdict
from edgekd.report import text_table, write_report
from edgekd.report.labels import place_labels, text_extent
from edgekd.report.pareto import pareto_front
from edgekd.types import Measurement

CHROMIUM = Path("/usr/bin/chromium")
CPU_TARGET, ACCEL_TARGET, ANE_TARGET = "arm-cortex-a78", "google-tensor-g3", "apple-a17-pro-ane"
FAILED_REASON = "RuntimeError: delegate rejected op <HARD_SWISH> & 2 more"
BROKEN_FILE_REASON = "sha256 mismatch: s_tiny_coreml_int8.mlpackage changed since export"
SHIPPED = "s_small/s_small_coreml_fp16.mlpackage"
EXT = {"torch": "pt", "tflite": "tflite", "onnx": "onnx", "coreml": "mlpackage"}
RUNNER = {"torch": "torch-eager", "tflite": "tflite", "onnx": "onnxruntime", "coreml": "coreml"}
TARGETS = {"tflite": [CPU_TARGET, ACCEL_TARGET], "coreml": [ANE_TARGET]}


def host(model: str, fmt: str, quant: str, size_bytes: int, retention: float, p50: float) -> Measurement:
    return Measurement(model=model, artifact=f"{model}_{fmt}_{quant}.{EXT[fmt]}", format=fmt, quant=quant,
                       kind="measured", runner=RUNNER[fmt], size_bytes=size_bytes, latency_ms_p50=p50,
                       latency_ms_p90=p50 * 1.3, accuracy=retention * 0.9, retention=retention,
                       teacher_agreement=retention - 0.01, runtime_version="1.0", threads=1)


def simulated(measured: Measurement, target: str, p50: float) -> Measurement:
    """A CPU-only target carries residency zeros, as older bench files do: the report must trust
    `accelerator`, not print them."""
    accelerator = target != CPU_TARGET
    share = {"ops": 0.9, "time": 0.75} if accelerator else {"ops": 0.0, "time": 0.0}
    band = (p50 * 0.8, p50 * 1.3) if target == ANE_TARGET else None  # the A17 profile is calibrated
    return dataclasses.replace(measured, kind="simulated", target=target, runner=f"sim:{target}",
                               latency_ms_p50=p50, latency_ms_p90=p50, runtime_version=None, threads=None,
                               accelerator=accelerator, accelerator_residency=share, latency_band_ms=band)


def student_rows(model: str, scale: float) -> list[Measurement]:
    files = [("torch", "fp32", 400_000, 1.0, 0.9), ("tflite", "fp32", 100_000, 0.995, 0.05),
             ("tflite", "int8", 28_000, 0.96, 0.03), ("onnx", "fp32", 101_000, 0.995, 0.04),
             ("coreml", "fp16", 52_000, 0.99, 0.2)]
    rows = []
    for fmt, quant, size_bytes, retention, p50 in files:
        measured = host(model, fmt, quant, int(size_bytes * scale), retention - (1 - scale) / 10, p50 * scale)
        rows.append(measured)
        for i, target in enumerate(TARGETS.get(fmt, [])):
            rows.append(simulated(measured, target, (i + 1) * 0.4 * scale + p50))
    return rows


@pytest.fixture
def rows() -> list[Measurement]:
    rows = student_rows("s_small", 1.0) + student_rows("s_tiny", 0.5)
    failed_at = next(i for i, r in enumerate(rows) if r.model == "s_tiny" and r.quant == "int8"
                     and r.target == ACCEL_TARGET)
    rows[failed_at] = Measurement(model="s_tiny", artifact="s_tiny_tflite_int8.tflite", format="tflite",
                                  quant="int8", kind="simulated", target=ACCEL_TARGET,
                                  runner=f"sim:{ACCEL_TARGET}", failed=FAILED_REASON)
    rows.append(Measurement(model="s_tiny", artifact="s_tiny_coreml_int8.mlpackage", format="coreml",
                            quant="int8", kind="measured", failed=BROKEN_FILE_REASON))
    return rows


def candidate(rows: list[Measurement], platform: str, model: str, fmt: str, quant: str,
              failures: list[RuleFailure]) -> Candidate:
    mine = [r for r in rows if r.model == model and r.format == fmt and r.quant == quant]
    return Candidate(platform=platform, model=model, artifact=mine[0].artifact, format=fmt, quant=quant,
                     size_bytes=mine[0].size_bytes or 0, path=f"export/{model}/{mine[0].artifact}", rows=mine,
                     failures=failures)


@pytest.fixture
def verdict(rows) -> Verdict:
    """ios ships s_small's Core ML file; on android every TFLite file misses a rule."""
    ios = candidate(rows, "ios", "s_small", "coreml", "fp16", [])
    low = [RuleFailure("min_retention", "tflite", 0.96, 0.97)]
    slow = [RuleFailure("max_latency_ms", ACCEL_TARGET, 1.25, 1.0)]
    android = [candidate(rows, "android", "s_small", "tflite", "int8", low),
               candidate(rows, "android", "s_small", "tflite", "fp32", slow)]
    return Verdict(passed=False, chosen={"ios": ios, "android": None}, candidates=[ios, *android],
                   notes=["policy: default.yaml"])


class Tables(HTMLParser):
    """Every <table> as rows of (text, attributes) cells, and each <section id> in page order."""

    def __init__(self):
        super().__init__()
        self.tables, self.sections, self._cell = [], [], None

    def handle_starttag(self, tag, attrs):
        if tag == "section":
            self.sections.append(dict(attrs).get("id"))
        elif tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = ["", dict(attrs)]

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append((" ".join(self._cell[0].split()), self._cell[1]))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[0] += data + " "


def parse(page: str) -> Tables:
    tables = Tables()
    tables.feed(page)
    return tables


def section(page: str, name: str) -> str:
    start = page.index(f'<section id="{name}">')
    return page[start: page.index("</section>", start)]


def column(table: list[list[tuple[str, dict]]], name: str) -> list[str]:
    """The cells under the header that starts with `name`."""
    at = next(i for i, (text, _) in enumerate(table[0]) if text.startswith(name))
    return [row[at][0] for row in table[1:]]


def test_report_leads_with_the_verdict_and_ends_with_every_row(tmp_path, rows, verdict):
    md, page_path = write_report(rows, tmp_path, title="edgekd report: tiny", teacher_accuracy=0.91,
                                 verdict=verdict)
    page = page_path.read_text()
    assert parse(page).sections == ["verdict", "students", "plots", "all-rows"]
    first = section(page, "verdict")
    assert "FAIL" in first and SHIPPED in first and "coreml/fp16" in first
    assert "nothing passes" in first and "min_retention [tflite]: 0.96 vs limit 0.97" in first
    assert "max_latency_ms [google-tensor-g3]" in first and "policy: default.yaml" in first
    tail = page[page.index('<section id="all-rows">'):]
    assert "<details>" in tail and tail.rstrip().endswith("</section>\n</body></html>".strip())
    text = md.read_text()
    order = [text.index(h) for h in ("## Release gate: FAIL", "### s_small", "### s_tiny", "## Trade-offs",
                                     "## All rows")]
    assert order == sorted(order) and SHIPPED in text[: order[1]]


def test_files_export_did_not_keep_are_listed_beside_the_kept_ones(tmp_path, rows, verdict):
    """Post-training pal4 that missed parity must show in the report, not only in the console."""
    miss = {"model": "s_small", "format": "coreml", "quant": "pal4", "top1_agreement": 0.9412,
            "required": 0.98, "reason": "top-1 agreement 0.9412 < required 0.98; coreml-exec vs PyTorch"}
    md, page_path = write_report(rows, tmp_path, title="t", teacher_accuracy=0.91, verdict=verdict,
                                 dropped=[miss])
    page = page_path.read_text()
    assert parse(page).sections == ["verdict", "students", "dropped", "plots", "all-rows"]
    kept = section(page, "dropped")
    assert "s_small" in kept and "coreml/pal4" in kept and "0.9412" in kept and "0.98" in kept
    line = "| s_small | coreml/pal4 | 0.9412 | 0.98 | top-1 agreement 0.9412 &lt; required 0.98"
    assert line in md.read_text()


def test_matrix_per_student_with_failures_footnoted(tmp_path, rows, verdict):
    page = write_report(rows, tmp_path, title="t", teacher_accuracy=0.91, verdict=verdict)[1].read_text()
    gate, small, tiny, full = parse(page).tables
    assert [c[0] for c in small[0]][:5] == ["file", "size", "retention", "teacher agreement",
                                            "this host p50 ms, measured"]
    assert [row[0][0] for row in small[1:]] == ["torch/fp32", "tflite/fp32", "tflite/int8", "onnx/fp32",
                                               "coreml/fp16 ships: ios"]
    assert column(small, ACCEL_TARGET)[2] == "0.83 90% accel"  # tflite/int8: 0.03 ms + 2 * 0.4
    failed = [cell for row in tiny[1:] for cell in row if cell[0].startswith("failed")]
    assert {c[1]["title"] for c in failed} == {FAILED_REASON, BROKEN_FILE_REASON}
    assert FAILED_REASON not in page and "&lt;HARD_SWISH&gt; &amp; 2 more" in page  # escaped, footnoted
    assert len(full) == 1 + len(rows) and full[-1][-1][0] == f"failed: {BROKEN_FILE_REASON}"


def test_cpu_only_target_shows_no_accelerator_share(tmp_path, rows, verdict):
    page = write_report(rows, tmp_path, title="t", teacher_accuracy=0.91, verdict=verdict)[1].read_text()
    _, small, _, full = parse(page).tables
    header = next(text for text, _ in small[0] if text.startswith(CPU_TARGET))
    assert header == f"{CPU_TARGET} p50 ms, CPU only, uncalibrated"
    assert all("%" not in cell for cell in column(small, CPU_TARGET))
    cpu_rows = [r for r in full[1:] if r[4][0] == CPU_TARGET]
    assert cpu_rows and {r[-1][0] for r in cpu_rows} == {"CPU only"}
    assert not re.search(r"(?<![\d.])0%", page)
    accel_rows = [r for r in full[1:] if r[4][0] == ACCEL_TARGET and not r[5][0].startswith("failed")]
    assert {r[-1][0] for r in accel_rows} == {"90% ops / 75% time"}


def test_simulated_columns_say_whether_their_profile_was_held_against_real_phones(tmp_path, rows, verdict):
    page = write_report(rows, tmp_path, title="t", teacher_accuracy=0.91, verdict=verdict)[1].read_text()
    _, small, _, _ = parse(page).tables
    headers = [text for text, _ in small[0]]
    assert f"{ANE_TARGET} p50 ms" in headers and f"{ACCEL_TARGET} p50 ms, uncalibrated" in headers
    ane = next(i for i, h in enumerate(headers) if h.startswith(ANE_TARGET))
    cell = next(row[ane] for row in small[1:] if row[ane][0])
    assert "80% band 0.48-0.78 ms" in cell[1]["title"], cell  # coreml/fp16: 0.6 ms, band x0.8-x1.3


def test_a_calibrated_profiles_row_without_a_band_for_its_kernels_says_why_and_leaves_the_column_alone(
        tmp_path, rows, verdict):
    """An int8 file on a profile calibrated on other kernels has no band; its column stays calibrated."""
    i = next(i for i, r in enumerate(rows) if r.target == ANE_TARGET and r.model == "s_small")
    why = "int8 kernels, which its calibration never ran"
    rows[i] = dataclasses.replace(rows[i], latency_band_ms=None, no_band=why)
    page = write_report(rows, tmp_path, title="t", teacher_accuracy=0.91, verdict=verdict)[1].read_text()
    _, small, _, _ = parse(page).tables
    headers = [text for text, _ in small[0]]
    assert f"{ANE_TARGET} p50 ms" in headers and f"{ACCEL_TARGET} p50 ms, uncalibrated" in headers
    ane = headers.index(f"{ANE_TARGET} p50 ms")
    assert f"no error band ({why})" in next(row[ane] for row in small[1:] if row[ane][0])[1]["title"]


def test_plots_are_written_and_inlined(tmp_path, rows, verdict):
    md, page_path = write_report(rows, tmp_path, title="t", teacher_accuracy=None, verdict=verdict)
    for name in ("retention_vs_latency.png", "retention_vs_size.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"({name})" in md.read_text()
    page = page_path.read_text()
    assert page.count('src="data:image/png;base64,') == 2 and "Teacher accuracy unknown" in page
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes left nothing behind


def test_without_a_verdict_the_page_says_the_gate_has_not_run(tmp_path, rows):
    page = write_report(rows, tmp_path, title="t", teacher_accuracy=0.91)[1].read_text()
    first = section(page, "verdict")
    assert "NOT RUN" in first and "has not run" in first and "ships:" not in page


def test_text_table_fits_110_columns(rows):
    table = text_table(rows)
    lines = table.splitlines()
    assert max(len(line) for line in lines) <= 110
    assert lines[0].startswith("s_small") and any(line.startswith("s_tiny") for line in lines)
    assert "(CPU only)" in table and "failed[1]" in table and "failed[2]" in table
    assert any(line.startswith("  [1] RuntimeError: delegate rejected op <HARD_SWISH>") for line in lines)
    assert "tflite/int8" in table and "0.83" in table


def test_text_table_wraps_onto_blocks_when_targets_do_not_fit(rows):
    sims = [r for r in rows if r.target]
    many = [dataclasses.replace(r, target=f"{r.target}-variant-{k}") for r in sims for k in range(4)]
    lines = text_table(rows + many).splitlines()
    assert max(len(line) for line in lines) <= 110
    assert sum(line.startswith("----") for line in lines) > 2  # s_small alone needs several blocks


def test_pareto_front_golden():
    points = [(1.0, 0.90), (2.0, 0.95), (2.0, 0.94), (3.0, 0.95), (0.5, 0.80), (4.0, 0.99), (0.5, 0.80)]
    assert pareto_front(points) == {0, 1, 4, 5, 6}


def test_labels_do_not_overlap_where_fixed_offsets_would():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    points = [(1 + i * 0.08, 0.95 + i * 0.0005, f"s_small tflite/int8 #{i}") for i in range(7)]
    fig = Figure(figsize=(4, 3), dpi=100)
    canvas = FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.scatter([p[0] for p in points], [p[1] for p in points])
    ax.set(xlim=(0.4, 2.0), ylim=(0.9, 1.0))
    fig.tight_layout()
    renderer = canvas.get_renderer()
    naive = [ax.annotate(t, xy, xytext=(3, 3), textcoords="offset points", fontsize=7) for *xy, t in points]
    naive_boxes = [a.get_window_extent(renderer) for a in naive]
    assert any(a.overlaps(b) for i, a in enumerate(naive_boxes) for b in naive_boxes[i + 1:])
    for a in naive:
        a.remove()
    place_labels(ax, points, renderer)
    boxes = [text_extent(t, renderer) for t in ax.texts]
    assert len(boxes) == len(points)
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    inside = ax.get_window_extent(renderer)
    assert all(inside.x0 <= b.x0 and b.x1 <= inside.x1 for b in boxes)
    assert all(inside.y0 <= b.y0 and b.y1 <= inside.y1 for b in boxes)


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0"]
    return subprocess.run([str(CHROMIUM), *flags, *args], capture_output=True, text=True, timeout=120)


def console_errors(stderr: str) -> list[str]:
    """Page console messages and load refusals from Chromium's log (its D-Bus noise is not ours)."""
    return [line for line in stderr.splitlines()
            if "CONSOLE" in line or "Uncaught" in line or "Not allowed to load" in line]


@pytest.mark.heavy
def test_report_renders_in_headless_chromium(tmp_path, rows, verdict):
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is not installed (Debian: apt-get install -y chromium)")
    page = write_report(rows, tmp_path / "report", title="edgekd report: tiny", teacher_accuracy=0.91,
                        verdict=verdict)[1]
    shot = tmp_path / "report.png"
    size = "--window-size=1280,2000"
    shown = chromium(f"--screenshot={shot}", size, page.as_uri(), profile=tmp_path / "p1")
    assert shot.exists(), shown.stderr[-2000:]
    dom = chromium("--dump-dom", page.as_uri(), profile=tmp_path / "p2")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert not console_errors(shown.stderr + dom.stderr)
    broken = tmp_path / "broken.html"  # the console scan itself must see an error when there is one
    broken.write_text("<!doctype html><p>x</p><script>undefinedFunction();</script>")
    assert console_errors(chromium("--dump-dom", broken.as_uri(), profile=tmp_path / "p3").stderr)
    parsed = parse(dom.stdout)
    assert parsed.sections == ["verdict", "students", "plots", "all-rows"]
    assert len(parsed.tables) == 4 and SHIPPED in section(dom.stdout, "verdict")
    assert "<hard_swish" not in dom.stdout.lower() and "&lt;HARD_SWISH&gt;" in dom.stdout  # text, not a tag
    assert dom.stdout.count("data:image/png;base64,") == 2

    from matplotlib.image import imread

    pixels = imread(shot)  # (H, W, 3|4), floats in [0, 1]
    assert pixels.shape[:2] == (2000, 1280)
    ink = (pixels[..., :3].min(axis=2) < 0.6).mean()  # share of pixels that are not near-white
    assert 0.01 < ink < 0.5, f"screenshot looks blank or garbled ({ink:.3f} of pixels inked)"
    shutil.copy(shot, page.parent / "screenshot.png")  # kept beside the report for a human look
