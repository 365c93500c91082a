#!/usr/bin/env bash
# The GPU check (issue: distillation beyond one process). One prepared run for a machine with a CUDA GPU:
# trains the default recipe's teacher and its ~10x student on CUDA (bf16 autocast) and on the CPU, and
# writes $OUT/gpu_check.json: samples/s on each, and the accuracy change (goal: within 0.3 point).
#
#   OUT=/some/folder bash benchmarks/gpu_check.sh      # ~3-4 minutes; nothing is downloaded
#
# It uses the Python on PATH with torch (a CUDA build) already installed, and installs edgekd itself
# without dependencies (the machine may have no network); a missing dependency is named, exit 2.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
nvidia-smi -L || { echo "gpu_check: no NVIDIA GPU here (nvidia-smi failed)" >&2; exit 2; }
$PY - <<'PYEOF' || exit 2
import importlib, sys
import torch
assert torch.cuda.is_available(), f"torch {torch.__version__} sees no CUDA GPU"
missing = [m for m in ("numpy", "yaml", "pydantic", "typer", "tqdm", "safetensors", "mnist1d")
           if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"gpu_check: install {', '.join(missing)} first (pip install them where a network is)")
print("torch", torch.__version__, torch.cuda.get_device_name(0), "bf16:", torch.cuda.is_bf16_supported())
PYEOF
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# the default recipe with one student (the ~10x), caches kept apart per device
for dev in cuda cpu; do
  $PY - "$OUT/recipe-$dev.yaml" "$OUT/cache-$dev" <<'PYEOF'
import sys, yaml
r = yaml.safe_load(open("edgekd/recipes/mnist1d.yaml"))
r["students"] = r["students"][:1]
r["cache_dir"] = sys.argv[2]
yaml.safe_dump(r, open(sys.argv[1], "w"))
PYEOF
  start=$SECONDS
  $PY -m edgekd distill "$OUT/recipe-$dev.yaml" --out "$OUT/run-$dev" --device "$dev" > "$OUT/distill-$dev.json"
  echo "$dev: $((SECONDS - start)) s"
done
$PY - "$OUT" <<'PYEOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
m = {d: json.loads((out / f"run-{d}" / "metrics.json").read_text()) for d in ("cuda", "cpu")}
rows = [{"device": d, "teacher_accuracy": x["teacher_accuracy"], "student": x["students"][0]["name"],
         "student_accuracy": x["students"][0]["accuracy"],
         "student_samples_per_s": round(x["students"][0]["train_samples_per_s"]), "steps_s": x["wall_s"]}
        for d, x in m.items()]
diff = max(abs(m["cuda"]["teacher_accuracy"] - m["cpu"]["teacher_accuracy"]),
           abs(m["cuda"]["students"][0]["accuracy"] - m["cpu"]["students"][0]["accuracy"]))
speed = rows[0]["student_samples_per_s"] / max(rows[1]["student_samples_per_s"], 1)
goals = {"accuracy_change_pt": {"value": round(100 * diff, 2), "goal": "<= 0.3", "met": diff <= 0.003},
         "student_speedup_cuda_vs_cpu": {"value": round(speed, 2), "goal": "> 1", "met": speed > 1}}
(out / "gpu_check.json").write_text(json.dumps({"rows": rows, "goals": goals}, indent=2) + "\n")
print(json.dumps({"rows": rows, "goals": goals}, indent=2))
PYEOF
