"""Mobile model bundles: a directory and a deterministic zip (same inputs, same bytes) holding the
model file, labels.txt, manifest.json, MODEL_CARD.md and validation inputs with expected outputs.

A text model's bundle also holds its tokenizer (tokenizer/tokenizer.json, tokenizer/settings.json: the
sequence length, padding, special ids and, for a pruned vocabulary, the ids with their own embedding)
and validation/sentences.jsonl: each validation sentence with the ids and mask it must tokenize to, so
an app developer can check their own tokenizer against the bundle (`edgekd verify` re-tokenizes them).

The manifest keeps only numbers that the same inputs always reproduce (accuracy, retention, agreement,
simulated latency): wall-clock timings stay in the run's bench.json so that two runs give identical zips.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import zipfile
from importlib import metadata
from pathlib import Path

import numpy as np

from edgekd.errors import InputError
from edgekd.fileio import atomic_dir, atomic_path, sha256_file, sha256_tree
from edgekd.gate.verdict import Candidate
from edgekd.gate.verify import FORMAT, read_bundle_manifest, verify_bundle  # noqa: F401 - the old import path
from edgekd.runtimes import load_runner

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
    m = c.measured()
    return {"accuracy": m.accuracy if m else None, "retention": m.retention if m else None,
            "teacher_agreement": m.teacher_agreement if m else None, "runner": m.runner if m else None,
            "simulated": {r.target: {"latency_ms": round(r.latency_ms_p50, 6),
                                     "accelerator_residency": r.accelerator_residency}
                          for r in c.rows if r.kind == "simulated" and r.ok}}


def _share(residency: dict | None) -> str:
    return "CPU only" if not residency else f"{residency['ops']:.0%}"


def _input_line(manifest: dict) -> str:
    tok = manifest.get("tokenizer")
    if tok:
        return (f"input_ids and attention_mask, int32 1x{tok['max_length']} each, from the bundled tokenizer "
                "(tokenizer/; validation/sentences.jsonl has sentences with the ids they must give).")
    norm = manifest["normalization"]
    return f"float32, normalised as (x - {norm['mean']:.6g}) / {norm['std']:.6g}."


def model_card(manifest: dict) -> str:
    m, met, prov = manifest["model"], manifest["metrics"], manifest["provenance"]
    fingerprint = prov.get("data_fingerprint", "")[:16]
    sims = "\n".join(f"| {t} | {v['latency_ms']:.4f} | {_share(v['accelerator_residency'])} |"
                      for t, v in met["simulated"].items()) or "| (none) | | |"
    return f"""# Model card: {m['name']} ({manifest['platform']})

**File:** `{m['file']}` ({m['format']}, {m['quant']}), {m['size_bytes']} bytes, {m['params']} parameters.
**Task:** classify inputs of shape {manifest['input_shape']} into {len(manifest['labels'])} classes
({', '.join(manifest['labels'][:10])}{'...' if len(manifest['labels']) > 10 else ''}).
**Input:** {_input_line(manifest)}
**Output:** class probabilities (softmax).

## How it was made
Distilled with edgekd from a teacher (sha256 `{(prov.get('teacher_sha256') or 'n/a')[:16]}`, test accuracy
{prov.get('teacher_accuracy')}) on dataset `{(prov.get('data') or {}).get('name')}` (fingerprint
`{fingerprint}`), recipe `{prov.get('recipe_name')}`, edgekd commit `{prov['git_commit']}`.

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
                 mean: float, std: float, input_shape: list[int], params: int,
                 provenance: dict, text: dict | None = None) -> tuple[Path, Path]:
    """Write `out_dir/<platform>/` and `out_dir/<platform>.zip`; returns both paths. `text` (text models):
    {"tokenizer_json": Path, "settings": dict, "sentences": [the validation inputs' sentences]}."""
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
        if text is not None:
            _write_tokenizer(tmp, text, validation_x)
        manifest = {
            "format": FORMAT, "version": 1, "platform": platform,
            "model": {"name": c.model, "file": src.name, "format": c.format, "quant": c.quant,
                      "size_bytes": c.size_bytes, "sha256": sha256_tree(model_dest), "params": params},
            "labels": labels, "normalization": {"mean": mean, "std": std}, "input_shape": input_shape,
            "metrics": _metrics(c), "provenance": {**provenance, "packages": package_versions(),
                                                   "git_commit": git_commit()},
        }
        if text is not None:
            manifest["tokenizer"] = text["settings"]
        (tmp / "MODEL_CARD.md").write_text(model_card(manifest))
        manifest["files"] = {str(p.relative_to(tmp)): {"sha256": sha256_file(p),
                                                        "size_bytes": p.stat().st_size}
                             for p in _files(tmp)}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    with atomic_path(zip_path) as tmp_zip:
        tmp_zip.write_bytes(deterministic_zip(dest))
    return dest, zip_path


def _write_tokenizer(root: Path, text: dict, validation_x: np.ndarray) -> None:
    """tokenizer/ and validation/sentences.jsonl: the sentences with the token rows they must give."""
    from edgekd.data.tokens import load_tokenizer

    (root / "tokenizer").mkdir()
    # set to pad and truncate to the model's length: loaded the standard way (Tokenizer.from_file), it gives
    # the rows the model takes, where the folder's own file pads to its pretraining length (128, 512)
    tok = load_tokenizer(Path(text["tokenizer_json"]).parent, text["settings"]["max_length"])
    (root / "tokenizer" / "tokenizer.json").write_text(tok.to_str(pretty=True) + "\n")
    settings = json.dumps(text["settings"], indent=2, sort_keys=True) + "\n"
    (root / "tokenizer" / "settings.json").write_text(settings)
    sentences = text["sentences"]
    if len(sentences) != len(validation_x):
        raise ValueError(f"{len(sentences)} validation sentences for {len(validation_x)} inputs")
    lines = [json.dumps({"text": s, "input_ids": row[0].tolist(), "attention_mask": row[1].tolist()})
             for s, row in zip(sentences, np.asarray(validation_x))]
    (root / "validation" / "sentences.jsonl").write_text("\n".join(lines) + "\n")


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
