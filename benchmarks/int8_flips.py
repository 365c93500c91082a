"""Where an int8 file's top-1 answers differ from its fp32 file's: each flip against the fp32 file's own
gap between its two most likely classes. Issue 10 asks every int8 file of EfficientNet-Lite0 to agree
with fp32 on >= 0.99 of 256 inputs; the inputs that ship offline are crops of 8 photographs, many of
them near-ties, and this measures how near.

    python benchmarks/int8_flips.py --work WORK --out results/int8_flips.json

WORK: own_models.py's --work folder (export/ with artifacts.json, photos.npz with the 256 held-out crops
as x_test). Each file runs a crop at a time, as on a phone. The outputs are probabilities.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import environment, print_goals, write  # noqa: E402

BAR = 0.99  # issue 10: top-1 agreement of every int8 file with fp32


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    from edgekd.runtimes import load_runner

    work = Path(args.work)
    manifest = json.loads((work / "export" / "artifacts.json").read_text())
    x = np.load(work / "photos.npz")["x_test"].astype(np.float32)
    x = (x - manifest["mean"]) / manifest["std"]

    def run(a: dict) -> np.ndarray:
        r = load_runner(a["format"], work / "export" / a["path"], threads=1)
        return np.concatenate([r.predict(x[i:i + 1]) for i in range(len(x))])

    files = [a for a in manifest["artifacts"] if a["format"] in ("tflite", "onnx")]
    ref = run(next(a for a in files if a["format"] == "tflite" and a["quant"] == "fp32"))
    top2 = np.sort(ref, axis=1)[:, -2:]
    gap = top2[:, 1] - top2[:, 0]
    rows = []
    for a in files:
        if a["quant"] == "fp32":
            continue
        out = run(a)
        flip = out.argmax(1) != ref.argmax(1)
        rows.append({"file": a["path"], "format": a["format"], "quant": a["quant"], "inputs": len(x),
                     "agreement": round(float(1 - flip.mean()), 4), "flips": int(flip.sum()),
                     "largest_gap_flipped": round(float(gap[flip].max()), 4) if flip.any() else None,
                     "median_abs_error": round(float(np.median(np.abs(out - ref).max(1))), 4)})
    int8 = [r for r in rows if r["quant"] != "fp16"]
    goals = {
        "int8_top1_agreement_min": {"value": min(r["agreement"] for r in int8), "goal": f">= {BAR}",
                                    "met": min(r["agreement"] for r in int8) >= BAR},
    }
    quantiles = {q: round(float(np.quantile(gap, q)), 4) for q in (0.05, 0.1, 0.25, 0.5)}
    write(args.out, {"benchmark": "int8_flips", "environment": environment(), "rows": rows,
                     "fp32_top2_gap_quantiles": quantiles, "goals": goals})
    print_goals(goals)


if __name__ == "__main__":
    main()
