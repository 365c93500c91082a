"""Issue 9's numbers: the bad-input matrix as a user meets it, and the fast test tier's wall time.

    python benchmarks/hardening.py --out results/hardening.json

Runs every case of tests/bad_inputs.py through the real `edgekd` command (a subprocess per case, as a
user runs it), and counts: exit code 2, one `edgekd: error:` message naming the file and the field, no
traceback, and nothing left behind in the case's folder or the cache. Then times `make test-fast`'s
command (`pytest -m "not heavy"`) once.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(ROOT / "tests"))
from _common import environment, print_goals, write  # noqa: E402
from bad_inputs import CASES, tree  # noqa: E402


def run_case(case, env: dict) -> dict:
    with tempfile.TemporaryDirectory(prefix="edgekd-bad-") as tmp:
        d = Path(tmp)
        argv, file, field = case.make(d)
        before = tree(d)
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "edgekd.cli", *argv], capture_output=True, text=True,
                           env=env)
        wall = time.perf_counter() - t0
        left = sorted(set(tree(d).items()) - set(before.items()))
        err = r.stderr.strip()
        return {"case": case.id, "exit_code": r.returncode, "seconds": round(wall, 2),
                "one_message": err.startswith("edgekd: error:") and "Traceback" not in err,
                "names_file": file in err, "names_field": field in err,
                "left_behind": [name for name, _ in left], "message": err[:300]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--skip-fast-tier", action="store_true", help="only the bad-input matrix")
    args = ap.parse_args()
    cache = Path(tempfile.mkdtemp(prefix="edgekd-bad-cache-"))
    env = {**os.environ, "EDGEKD_CACHE_DIR": str(cache), "PYTHONPATH": str(ROOT / "tests")}
    rows = [run_case(c, env) for c in CASES]
    cache_left = [str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file() and ".tmp" in p.name]
    ok = [r for r in rows
          if r["exit_code"] == 2 and r["one_message"] and r["names_file"] and r["names_field"]]
    leaving = [r for r in rows if r["left_behind"]]
    fast_s = None
    if not args.skip_fast_tier:
        t0 = time.perf_counter()
        t = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "not heavy", "-p",
                            "no:cacheprovider"], cwd=ROOT, capture_output=True, text=True)
        fast_s = round(time.perf_counter() - t0, 1)
        rows.append({"fast_tier_seconds": fast_s, "fast_tier_exit_code": t.returncode,
                     "fast_tier_summary": t.stdout.strip().splitlines()[-1] if t.stdout.strip() else ""})
    goals = {
        "bad_input_cases": {"value": len(CASES), "goal": ">= 20 (one per reproduction in the issue)",
                            "met": len(CASES) >= 20},
        "exit_2_naming_file_and_field": {"value": len(ok), "goal": len(CASES), "met": len(ok) == len(CASES)},
        "cases_leaving_anything_behind": {"value": len(leaving) + (1 if cache_left else 0), "goal": 0,
                                          "met": not leaving and not cache_left},
    }
    if fast_s is not None:
        goals["fast_tier_seconds"] = {"value": fast_s, "goal": "< 60", "met": fast_s < 60}
    write(args.out, {"benchmark": "hardening", "environment": environment(), "rows": rows, "goals": goals})
    print_goals(goals)


if __name__ == "__main__":
    main()
