"""Reading artifacts.json, the contract between export (which writes it) and bench (which reads it)."""

from __future__ import annotations

from pathlib import Path

from edgekd.errors import InputError
from edgekd.fileio import read_json


def load_artifacts(path: Path) -> dict:
    """artifacts.json (or the folder holding it), checked to be edgekd's."""
    path = Path(path)
    path = path / "artifacts.json" if path.is_dir() else path
    manifest = read_json(path, "artifacts file", "run `edgekd export` first")
    if not isinstance(manifest, dict) or not {"checkpoint", "model", "artifacts"} <= set(manifest):
        raise InputError(f"{path}: not an edgekd artifacts file (needs checkpoint, model, artifacts)")
    return manifest
