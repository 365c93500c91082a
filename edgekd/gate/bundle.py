"""Mobile model bundles: a directory and a deterministic zip (same inputs, same bytes) holding the
model file, labels.txt, manifest.json, MODEL_CARD.md and validation inputs with expected outputs.

The manifest keeps only numbers that the same inputs always reproduce (accuracy, retention, agreement,
simulated latency): wall-clock timings stay in the run's bench.json so that two runs give identical zips.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

import numpy as np

from edgekd.errors import CheckFailed, InputError
from edgekd.fileio import atomic_dir, atomic_path, read_json, sha256_file, sha256_tree
from edgekd.gate.verdict import Candidate
from edgekd.runtimes import load_runner

FORMAT = "edgekd.bundle"
PACKAGES = ("edgekd", "torch", "numpy", "coremltools", "litert-torch", "ai-edge-litert", "ai-edge-quantizer",
            "onnx", "onnxruntime")
ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_commit() -> str:
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return (sha + ("+dirty" if dirty else "")) if sha else "unknown"


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def _metrics(c: Candidate) -> dict:
    m = c.measured() or {}
    return {"accuracy": m.get("accuracy"), "retention": m.get("retention"),
            "teacher_agreement": m.get("teacher_agreement"), "runner": m.get("runner"),
            "simulated": {r["target"]: {"latency_ms": round(r["latency_ms_p50"], 6),
                                        "accelerator_residency": r.get("accelerator_residency")}
                          for r in c.rows if r["kind"] == "simulated" and "failed" not in r}}


def model_card(manifest: dict) -> str:
    m, met, prov = manifest["model"], manifest["metrics"], manifest["provenance"]
    sims = "\n".join(f"| {t} | {v['latency_ms']:.4f} | {(v['accelerator_residency'] or {}).get('ops', 0):.0%} |"
                     for t, v in met["simulated"].items()) or "| (none) | | |"
    return f"""# Model card: {m['name']} ({manifest['platform']})

**File:** `{m['file']}` ({m['format']}, {m['quant']}), {m['size_bytes']} bytes, {m['params']} parameters.
**Task:** classify inputs of shape {manifest['input_shape']} into {len(manifest['labels'])} classes
({', '.join(manifest['labels'][:10])}{'...' if len(manifest['labels']) > 10 else ''}).
**Input:** float32, normalised as (x - {manifest['normalization']['mean']:.6g}) / {manifest['normalization']['std']:.6g}.
**Output:** class probabilities (softmax).

## How it was made
Distilled with edgekd from a teacher (sha256 `{(prov.get('teacher_sha256') or 'n/a')[:16]}`, test accuracy
{prov.get('teacher_accuracy')}) on dataset `{(prov.get('data') or {}).get('name')}` (fingerprint
`{prov.get('data_fingerprint', '')[:16]}`), recipe `{prov.get('recipe_name')}`, edgekd commit `{prov['git_commit']}`.

## Quality (test split, through this file)
- accuracy {met['accuracy']}, retention {met['retention']} (file accuracy / teacher accuracy)
- top-1 agreement with the teacher {met['teacher_agreement']}

## Latency (simulated; measured host latency is in the run's bench.json)
| target | latency ms | ops on accelerator |
|---|---|---|
{sims}

## Limits
Trained and evaluated on one dataset only; accuracy on other data is unknown. Simulated latencies come
from edgekd's roofline profiles (targets/), not from a device.
"""


def write_bundle(c: Candidate, platform: str, out_dir: Path, *, validation_x: np.ndarray, labels: list[str],
                 mean: float, std: float, input_shape: list[int], params: int, provenance: dict) -> tuple[Path, Path]:
    """Write `out_dir/<platform>/` and `out_dir/<platform>.zip`; returns both paths."""
    src = Path(c.path)
    dest, zip_path = Path(out_dir) / platform, Path(out_dir) / f"{platform}.zip"
    with atomic_dir(dest) as tmp:
        model_dest = tmp / src.name
        shutil.copytree(src, model_dest) if src.is_dir() else shutil.copyfile(src, model_dest)
        (tmp / "labels.txt").write_text("\n".join(labels) + "\n")
        expected = load_runner(c.format, model_dest).predict(validation_x)
        (tmp / "validation").mkdir()
        np.save(tmp / "validation" / "inputs.npy", validation_x)
        np.save(tmp / "validation" / "expected.npy", expected)
        manifest = {
            "format": FORMAT, "version": 1, "platform": platform,
            "model": {"name": c.model, "file": src.name, "format": c.format, "quant": c.quant,
                      "size_bytes": c.size_bytes, "sha256": sha256_tree(model_dest), "params": params},
            "labels": labels, "normalization": {"mean": mean, "std": std}, "input_shape": input_shape,
            "metrics": _metrics(c), "provenance": {**provenance, "packages": package_versions(),
                                                   "git_commit": git_commit()},
        }
        (tmp / "MODEL_CARD.md").write_text(model_card(manifest))
        manifest["files"] = {str(p.relative_to(tmp)): {"sha256": sha256_file(p), "size_bytes": p.stat().st_size}
                             for p in _files(tmp)}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    with atomic_path(zip_path) as tmp_zip:
        tmp_zip.write_bytes(deterministic_zip(dest))
    return dest, zip_path


def deterministic_zip(root: Path) -> bytes:
    """Zip `root`'s files in sorted order with fixed dates and permissions: same files, same bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for p in _files(root):
            info = zipfile.ZipInfo(f"{root.name}/{p.relative_to(root).as_posix()}", date_time=ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            info.create_system = 3  # unix, whatever the host
            z.writestr(info, p.read_bytes(), compresslevel=9)
    return buf.getvalue()


def read_bundle_manifest(path: Path) -> tuple[dict, Path, tempfile.TemporaryDirectory | None]:
    """(manifest, bundle directory, temp dir to clean up) for a bundle directory or zip."""
    path = Path(path)
    tmp = None
    if path.is_file() and zipfile.is_zipfile(path):
        tmp = tempfile.TemporaryDirectory()
        with zipfile.ZipFile(path) as z:
            z.extractall(tmp.name)
        roots = [p for p in Path(tmp.name).iterdir() if p.is_dir()]
        if len(roots) != 1:
            raise InputError(f"{path}: a bundle zip holds one top-level folder")
        path = roots[0]
    mpath = path / "manifest.json"
    manifest = read_json(mpath, "bundle manifest", "is this an edgekd bundle?")
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise InputError(f"{mpath}: not an edgekd bundle manifest (field 'format' is not {FORMAT!r})")
    return manifest, path, tmp


def verify_bundle(path: Path) -> dict:
    """Recheck every file's hash and size, then re-run the bundled inputs. Raises CheckFailed listing
    every problem; returns a summary when all is well."""
    manifest, root, tmp = read_bundle_manifest(path)
    try:
        problems = []
        listed = manifest.get("files", {})
        actual = {str(p.relative_to(root)) for p in _files(root)} - {"manifest.json"}
        for rel in sorted(set(listed) - actual):
            problems.append(f"{rel}: missing")
        for rel in sorted(actual - set(listed)):
            problems.append(f"{rel}: not listed in manifest.json (added after bundling)")
        for rel in sorted(set(listed) & actual):
            p = root / rel
            if p.stat().st_size != listed[rel]["size_bytes"] or sha256_file(p) != listed[rel]["sha256"]:
                problems.append(f"{rel}: sha256/size differ from manifest.json (altered)")
        outputs_ok = None
        if not problems:
            x = np.load(root / "validation" / "inputs.npy")
            want = np.load(root / "validation" / "expected.npy")
            got = load_runner(manifest["model"]["format"], root / manifest["model"]["file"]).predict(x)
            diff = float(np.abs(got - want).max())
            agree = float((got.argmax(1) == want.argmax(1)).mean())
            outputs_ok = agree == 1.0 and diff <= 1e-3
            if not outputs_ok:
                problems.append(f"validation outputs differ: top-1 agreement {agree:.4f}, max abs diff {diff:.3g}")
        if problems:
            raise CheckFailed(f"{path}: bundle verification failed:\n" + "\n".join(f"  {p}" for p in problems))
        return {"bundle": str(path), "files": len(listed), "model": manifest["model"]["file"], "ok": True}
    finally:
        if tmp is not None:
            tmp.cleanup()


def load_baseline(path: Path, labels: list[str], input_shape: list[int]) -> dict:
    """A baseline bundle's manifest, refused if it is of another model (labels or input shape differ)."""
    manifest, _, tmp = read_bundle_manifest(path)
    if tmp is not None:
        tmp.cleanup()
    if manifest["labels"] != labels or manifest["input_shape"] != input_shape:
        raise InputError(f"{path}: baseline bundle is of another model (labels {manifest['labels'][:5]}..., "
                         f"input {manifest['input_shape']}; this run: {labels[:5]}..., {input_shape}); "
                         "pass a bundle of the same task")
    return manifest
