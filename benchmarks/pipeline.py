"""The one-command pipeline, measured as a user runs it.

    python benchmarks/pipeline.py --out results/pipeline.json

Runs `edgekd run` (built-in MNIST-1D recipe) twice from empty output and cache folders, as on a fresh
clone after installation; records wall time, checks the report, the ios and android bundles and the
gate; compares the two runs' bundle zips byte for byte; gates the first run with a policy it cannot
meet (expects exit 1 naming the rules); re-runs the first folder to time a resumed run.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import environment, write  # noqa: E402


def edgekd(*args: str, env: dict) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "edgekd.cli", *args], capture_output=True, text=True, env=env)
    return r, time.perf_counter() - t0


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="edgekd-pipeline-"))
    runs = {}
    for name in ("a", "b"):
        # nothing cached: a fresh machine
        env = {**os.environ, "EDGEKD_CACHE_DIR": str(work / f"cache-{name}")}
        r, seconds = edgekd("run", "--out", str(work / name), env=env)
        out = work / name
        runs[name] = {"exit_code": r.returncode, "wall_s": round(seconds, 1),
                      "report": (out / "report" / "report.html").is_file(),
                      "bundles": {p: (out / "bundles" / f"{p}.zip").is_file() for p in ("ios", "android")},
                      "stdout_tail": r.stdout[-600:], "stderr_tail": r.stderr[-300:] if r.returncode else ""}
        print(name, runs[name]["exit_code"], runs[name]["wall_s"], flush=True)
    same = {p: sha(work / "a" / "bundles" / f"{p}.zip") == sha(work / "b" / "bundles" / f"{p}.zip")
            for p in ("ios", "android") if runs["a"]["bundles"][p] and runs["b"]["bundles"][p]}
    strict = work / "strict.yaml"
    strict.write_text("max_size_bytes: 1000\nmin_retention: 1.01\n")
    g, _ = edgekd("gate", str(work / "a"), "--policy", str(strict), "--out", str(work / "strict-gate"),
                  env=dict(os.environ))
    resumed, resumed_s = edgekd("run", "--out", str(work / "a"),
                                env={**os.environ, "EDGEKD_CACHE_DIR": str(work / "cache-a")})
    verify, _ = edgekd("verify", str(work / "a" / "bundles" / "ios.zip"), env=dict(os.environ))
    write(args.out, {
        "runs": runs, "identical_bundle_zips": same,
        "strict_policy": {"exit_code": g.returncode, "output": g.stdout[:1500]},
        "resumed_run": {"exit_code": resumed.returncode, "wall_s": round(resumed_s, 1)},
        "verify_ios_exit_code": verify.returncode,
        "goals": {"under_10_min": all(r["wall_s"] < 600 for r in runs.values()),
                  "report_and_bundles": all(r["report"] and all(r["bundles"].values())
                                            for r in runs.values()),
                  "default_policy_passes": all(r["exit_code"] == 0 for r in runs.values()),
                  "strict_policy_exit_1": g.returncode == 1,
                  "byte_identical_zips": bool(same) and all(same.values())},
        "environment": environment(),
    })


if __name__ == "__main__":
    main()
