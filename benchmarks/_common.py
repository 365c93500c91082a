"""Shared helpers for the benchmark scripts: environment facts recorded with every result."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path


def environment() -> dict:
    import torch

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "python": platform.python_version()}


def write(path: str | Path, obj: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2) + "\n")
    print(f"wrote {path}")


def print_goals(goals: dict) -> None:
    """One line per bar of the issue: value, goal, met or MISSED."""
    for name, g in goals.items():
        note = f" ({g['note']})" if "note" in g else ""
        print(f"{name}: {g['value']} (goal {g['goal']}) {'met' if g['met'] else 'MISSED'}{note}")


def teacher_and_student_args(doc: str, prefix: str):
    """(args, recipe, {"teacher": dir, "student-10x": dir}) for the scripts that measure the built-in
    recipe's teacher and ~10x student: parses --out and --run, distilling first when --run is absent."""
    import argparse

    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--run", help="an existing `edgekd distill` output directory")
    args = ap.parse_args()
    recipe, run = distilled_run(args.run, prefix)
    return args, recipe, {"teacher": run / "teacher", "student-10x": run / "students" / "cnn1d-10x"}


def distilled_run(run_dir: str | None, prefix: str):
    """(recipe, run folder): the built-in recipe distilled into `run_dir`, or into a new temporary folder;
    a folder that already holds a finished `edgekd distill` is reused."""
    import tempfile

    import torch

    from edgekd.config import load_recipe
    from edgekd.pipeline import distill_stage

    recipe, _ = load_recipe()
    torch.set_num_threads(recipe.threads)
    run = Path(run_dir) if run_dir else Path(tempfile.mkdtemp(prefix=prefix))
    if not (run / "metrics.json").is_file():
        distill_stage(recipe, run)
    return recipe, run
