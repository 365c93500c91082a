"""Atomic writes: a file is either absent or complete, never half-written."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling of `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o644)  # mkstemp makes 0600; a model file is meant to be shared
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling directory; it replaces `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o755)
        if path.exists():
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def read_json(path: Path, what: str, hint: str = ""):
    """Parse a JSON file edgekd wrote; a missing or unreadable one is an InputError naming the file."""
    from edgekd.errors import InputError

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such {what}" + (f"; {hint}" if hint else ""))
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: corrupt {what} ({e})" + (f"; {hint}" if hint else "")) from None


def json_sha256(obj) -> str:
    """A stable key for JSON-able inputs (stage and training-run identities)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def write_json(path: Path, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def dir_size(path: Path) -> int:
    path = Path(path)
    return (path.stat().st_size if path.is_file()
            else sum(p.stat().st_size for p in path.rglob("*") if p.is_file()))


def sha256_tree(path: Path) -> str:
    """sha256 of a file, or of a directory's files (relative names and contents, sorted): an
    .mlpackage is a directory."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    h = hashlib.sha256()
    for p in sorted(q for q in path.rglob("*") if q.is_file()):
        h.update(str(p.relative_to(path)).encode() + b"\0" + sha256_file(p).encode())
    return h.hexdigest()


def relative_to(path: Path, base_dir: Path) -> str:
    """`path` as written inside a run folder: relative to `base_dir` (the folder of the file that
    records it), so the folder can be moved or read from any working directory."""
    return os.path.relpath(Path(path).resolve(), Path(base_dir).resolve())


def resolve_in(base_dir: Path, recorded: str | Path) -> Path:
    """A path recorded by `relative_to` (or an absolute one, from older files), made usable."""
    p = Path(recorded)
    return p if p.is_absolute() else Path(base_dir) / p
