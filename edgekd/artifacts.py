"""Reading artifacts.json, the contract between export (which writes it) and bench (which reads it)."""

from __future__ import annotations

from pathlib import Path

from edgekd.errors import InputError
from edgekd.fileio import dir_size, read_json, resolve_in, sha256_tree


def load_artifacts(path: Path) -> dict:
    """artifacts.json (or the folder holding it), checked to be edgekd's."""
    path = Path(path)
    path = path / "artifacts.json" if path.is_dir() else path
    manifest = read_json(path, "artifacts file", "run `edgekd export` first")
    if not isinstance(manifest, dict) or not {"checkpoint", "model", "artifacts"} <= set(manifest):
        raise InputError(f"{path}: not an edgekd artifacts file (needs checkpoint, model, artifacts)")
    return manifest


def verify_artifact(base: Path, a: dict) -> str | None:
    """Why an artifact listed in artifacts.json cannot be trusted (missing, or altered since its export),
    or None."""
    path = base / a["path"]
    if not path.exists():
        return f"{path}: file is missing (listed in artifacts.json)"
    if dir_size(path) != a["size_bytes"]:
        return (f"{path}: size {dir_size(path)} differs from artifacts.json ({a['size_bytes']}): "
                "altered after export")
    if sha256_tree(path) != a["sha256"]:
        return f"{path}: sha256 differs from artifacts.json: altered after export"
    return None


def stale_export(path: Path, manifest: dict) -> str | None:
    """Why the files were exported from other weights than their checkpoint holds now (a re-run stopped
    between distill and export), or None; unknown for artifacts.json written before the hash was kept.
    Reads the checkpoint's model.json only (no torch)."""
    recorded = manifest.get("checkpoint_sha256")
    meta = resolve_in(Path(path).parent, manifest["checkpoint"]) / "model.json"
    if not recorded or not meta.is_file():
        return None
    if read_json(meta, "checkpoint metadata").get("weights_sha256") == recorded:
        return None
    return (f"{path}: its files were exported from other weights than {meta.parent} holds now (trained "
            "again since)")


def dropped_files(path: Path, model: str) -> list[dict]:
    """The files an export did not keep (artifacts.json's `failures`), each with its `model`; none when
    there is no artifacts.json."""
    if not Path(path).is_file():
        return []
    return [{**f, "model": model} for f in load_artifacts(path).get("failures", [])]
