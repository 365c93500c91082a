"""Budgets (`TARGET=MS`): parsed against the target profiles, and read off a trial's bench rows.

A budget names a simulated target profile (its latency comes from the simulator) or a runner timed on
this machine: `host` (the TFLite interpreter), `tflite` or `onnxruntime`.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgekd.errors import InputError
from edgekd.types import Budget, Measurement

# A candidate whose simulated latency (its fastest precision, from the PyTorch graph) exceeds a budget by
# more than this factor is taken as unable to meet it (never trained for that rung): the traced graph was
# seen within 7.2% of the converted file's simulated latency (benchmarks/simulator_truth.py), so this
# leaves room for the converter. A runner timed here is not priced: the host profiles are fitted on fp32
# files only, and put the built-in recipe's 10x student at 8-10 us on TFLite where its full-int8 file ran
# in 4.6 us; priced so, it was ruled out of the very budget it set.
PRESCREEN_SLACK = 1.2
# runners timed here a budget may name -> (the runner's name in bench rows, the format it runs)
MEASURED = {
    "host": ("tflite", "tflite"),
    "tflite": ("tflite", "tflite"),
    "onnxruntime": ("onnxruntime", "onnx"),
}


def cannot_meet(budget: Budget, predicted: dict, fixed: dict) -> bool:
    """Whether a candidate priced before training cannot meet `budget`: `predicted` holds its simulated
    latency (ms) per budget key, `fixed` the part of it the profile charges per inference whatever runs
    (its invoke overhead). The slack covers what a converter changes in the ops, not the fixed part, which
    no conversion moves. On the A17 Pro profile (181 us per inference then) a 1.2x slack on the whole of a
    0.199 ms budget let through networks whose ops took up to 3.2x the 18 us it leaves them: 7 of 14 A17
    trials of benchmarks/search_ladder.py's search trained in full and had no file under the budget."""
    if budget.key not in predicted:
        return False
    floor = fixed.get(budget.key, 0.0)
    return predicted[budget.key] - floor > PRESCREEN_SLACK * (budget.latency_ms - floor)


def parse_budgets(texts: list[str], targets: dict) -> list[Budget]:
    """`TARGET=MS` strings -> budgets; `targets` maps profile names to profiles (edgekd.bench.targets)."""
    if not texts:
        raise InputError(
            "no budget given: add --budget TARGET=MS (a target profile, or host), "
            f"e.g. --budget {next(iter(targets), 'host')}=0.5"
        )
    budgets = []
    for text in texts:
        name, sep, value = text.partition("=")
        name = name.strip()
        if not sep or not name:
            raise InputError(f"--budget {text!r}: write TARGET=MS, e.g. host=0.05")
        try:
            ms = float(value)
        except ValueError:
            raise InputError(f"--budget {text!r}: {value!r} is not a number of milliseconds") from None
        if not 0 < ms < float("inf"):
            raise InputError(f"--budget {text!r}: a latency budget must be a finite number of ms above 0")
        if name in MEASURED:
            where, fmt = MEASURED[name]
            budgets.append(Budget(name, where, ms, fmt, measured=True))
        elif name in targets:
            formats = targets[name].formats
            budgets.append(Budget(name, name, ms, formats[0], measured=False))
        else:
            raise InputError(
                f"--budget {text!r}: unknown target {name!r}; targets: {', '.join(targets)}; "
                f"runners timed here: {', '.join(MEASURED)}"
            )
    keys = [b.key for b in budgets]
    dupes = sorted({k for k in keys if keys.count(k) > 1})
    if dupes:
        raise InputError(f"--budget {dupes[0]} is given twice; give each budget once")
    return budgets


@dataclass(frozen=True)
class FileResult:
    """One exported file of a trial, as the ladder reads it: its retention through the file and its
    latency on every runner or target it was measured or simulated on."""

    artifact: str
    format: str
    quant: str
    size_bytes: int
    sha256: str
    retention: float | None
    latency_ms: dict  # where -> p50 ms

    def meets(self, budget: Budget, max_size_bytes: int | None) -> bool:
        ms = self.latency_ms.get(budget.where)
        return (
            ms is not None
            and ms <= budget.latency_ms
            and self.retention is not None
            and (max_size_bytes is None or self.size_bytes <= max_size_bytes)
        )

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def file_results(rows: list[Measurement], hashes: dict[str, str]) -> list[FileResult]:
    """Bench rows (every file, measured and simulated) -> one result per exported file that was measured."""
    first: dict[str, Measurement] = {}
    retention: dict[str, float | None] = {}
    latency: dict[str, dict] = {}
    for r in rows:
        if not r.ok or r.format == "torch":
            continue
        first.setdefault(r.artifact, r)
        if r.kind == "measured" and not r.runner.startswith("android:"):
            retention[r.artifact] = r.retention
        if r.latency_ms_p50 is not None:
            latency.setdefault(r.artifact, {})[r.where] = r.latency_ms_p50
    return [FileResult(a, r.format, r.quant, r.size_bytes, hashes.get(a, ""), retention.get(a),
                       latency.get(a, {})) for a, r in first.items()]


def rank(f: FileResult) -> tuple:
    """How files that meet a budget are ordered: higher retention, then the smaller file."""
    return (f.retention, -f.size_bytes)


def best_file(files: list[FileResult], budget: Budget, max_size_bytes: int | None) -> FileResult | None:
    """The file with the highest retention that meets the budget (ties: the smaller file)."""
    return max((f for f in files if f.meets(budget, max_size_bytes)), key=rank, default=None)


def overshoot(files: list[FileResult], budget: Budget, max_size_bytes: int | None) -> float:
    """How far the closest file misses the budget, as a share (0: a file meets it): the constraint the
    sampler is told, so it learns where the feasible region is."""
    misses = []
    for f in files:
        ms = f.latency_ms.get(budget.where)
        if ms is None or f.retention is None:
            continue
        miss = max(0.0, ms / budget.latency_ms - 1)
        if max_size_bytes is not None:
            miss = max(miss, f.size_bytes / max_size_bytes - 1)
        misses.append(miss)
    return min(misses) if misses else 1.0
