"""Where the bytes of each TFLite file go, against its fp32 file: weights and biases by type, quantisation
parameters, and the rest (graph, signatures, metadata). Issue 10 asks every int8 file of a real network
to weigh at most 0.28x its fp32 file; this says what the file format itself costs.

    python benchmarks/tflite_size.py --export DIR --out results/tflite_size.json

DIR: an export folder with its artifacts.json (own_models.py's --work/export holds EfficientNet-Lite0's).
Each quantised tensor stores one scale (float32) and one zero point (int64) per channel in the flatbuffer,
12 bytes a channel; a full-int8 file carries them for the weights and for the int32 biases (whose scale
the kernels check against input scale x weight scale). The floor of a file is its tensor data plus those
parameters with no graph at all. Anything else (the graph, signatures, metadata, a quantisation's min/max
arrays when a converter writes them) is "other".
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import environment, print_goals, write  # noqa: E402

BAR = 0.28  # issue 10: an int8 file at most this share of the fp32 file
SCALE_BYTES, ZERO_POINT_BYTES = 4, 8  # the schema's [float] scale and [long] zero_point


def breakdown(path: Path) -> dict:
    """A TFLite file's bytes: tensor data by type, quantisation parameters, and the rest."""
    from ai_edge_litert import schema_py_generated as schema

    buf = path.read_bytes()
    model = schema.Model.GetRootAsModel(buf, 0)
    types = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    kind: dict[int, str] = {}  # buffer -> the type of the first tensor reading it (tensors may share one)
    entries = 0
    for g in range(model.SubgraphsLength()):
        graph = model.Subgraphs(g)
        for i in range(graph.TensorsLength()):
            t = graph.Tensors(i)
            kind.setdefault(t.Buffer(), types[t.Type()])
            q = t.Quantization()
            if q is not None:
                entries += q.ScaleLength()
    data: dict[str, int] = collections.Counter()
    for b, k in kind.items():
        buffer = model.Buffers(b)
        data[k] += buffer.DataLength() or buffer.Size()  # Size(): data kept outside a file over 2 GB
    data = {k: v for k, v in data.items() if v}
    quant_bytes = entries * (SCALE_BYTES + ZERO_POINT_BYTES)
    tensors = sum(data.values())
    return {"file_bytes": len(buf), "tensor_bytes_by_type": dict(data), "tensor_bytes": tensors,
            "quant_param_entries": entries, "quant_param_bytes": quant_bytes,
            "other_bytes": len(buf) - tensors - quant_bytes}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--export", required=True, help="an export folder holding artifacts.json")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    folder = Path(args.export)
    manifest = json.loads((folder / "artifacts.json").read_text())
    files = {a["quant"]: folder / a["path"] for a in manifest["artifacts"] if a["format"] == "tflite"}
    if "fp32" not in files:
        print(f"{folder / 'artifacts.json'}: no fp32 TFLite file to compare with; export fp32 too",
              file=sys.stderr)
        sys.exit(2)
    rows = [{"model": manifest.get("model"), "quant": q, "file": p.name, **breakdown(p)}
            for q, p in files.items()]
    fp32 = next(r for r in rows if r["quant"] == "fp32")["file_bytes"]
    goals = {}
    for r in rows:
        r["ratio_to_fp32"] = round(r["file_bytes"] / fp32, 5)
        r["floor_ratio_to_fp32"] = round((r["tensor_bytes"] + r["quant_param_bytes"]) / fp32, 5)
        if r["quant"] in ("int8", "dynamic-int8", "full-int8"):
            goals[f"size_ratio_{r['quant']}"] = {"value": r["ratio_to_fp32"], "goal": f"<= {BAR}",
                                                 "met": r["ratio_to_fp32"] <= BAR,
                                                 "floor": r["floor_ratio_to_fp32"]}
        print(json.dumps(r))
    write(args.out, {"benchmark": "tflite_size", "environment": environment(), "export": str(folder),
                     "rows": rows, "goals": goals})
    print_goals(goals)


if __name__ == "__main__":
    main()
