"""Verifying a bundle as a closed world: every file it holds is one its manifest lists, every number the
manifest states about a file is rechecked on that file, and the model file re-runs the bundled inputs.

A bundle is untrusted input (it may have travelled through mail, CI caches, app stores). Opening one
never follows a symlink, never writes outside one temporary folder (removed again, also on error) and
refuses a zip whose entries are unsafe (absolute or `..` names, symlinks, sizes over the caps below)
before extracting anything. A bundle that is unsafe to open, or whose manifest lacks a field, is bad
input (InputError, exit 2); one that opens but disagrees with its manifest fails the check (CheckFailed,
exit 1, every problem listed).
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
import zipfile
import zlib
from pathlib import Path, PureWindowsPath
from typing import Annotated

import numpy as np
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from edgekd.config import format_validation
from edgekd.errors import CheckFailed, EdgekdError, InputError
from edgekd.fileio import dir_size, sha256_file, sha256_tree
from edgekd.parity import measure_parity, parity_failure
from edgekd.runtimes import FORMAT_RUNNER, load_runner
from edgekd.types import Parity

FORMAT = "edgekd.bundle"  # the manifest's "format"; bundle.py writes the same string
REQUIRED_FILES = ("labels.txt", "MODEL_CARD.md", "validation/inputs.npy", "validation/expected.npy")
# Zip caps, checked on the declared sizes before anything is extracted. zipfile then stops reading an
# entry at its declared size (a longer stream fails its CRC), so the caps bound what reaches the disk.
MAX_ENTRIES = 10_000
MAX_ENTRY_BYTES = 1 << 30  # uncompressed, one entry
MAX_TOTAL_BYTES = 2 << 30  # uncompressed, all entries
# Deflate tops out near 1032:1; model weights and float arrays compress far less than 200:1.
MAX_RATIO = 200
RATIO_FLOOR_BYTES = 1 << 20  # smaller entries (a label list, a card) may compress as well as they like
# The re-run is the same file on the same runtime family as when it was bundled: outputs should match.
MIN_TOP1 = 1.0
MAX_ABS_DIFF = 1e-3
REBUILD = "rebuild the bundle with `edgekd run` or fetch it again from its source"


def _name_problem(name: str) -> str | None:
    """Why `name` cannot be a file's name inside a bundle, or None. A name is relative, in '/' form,
    without '.', '..' or empty parts, so joined to the bundle folder it can only land inside it."""
    if not name:
        return "empty name"
    if name.startswith("/") or PureWindowsPath(name).drive:
        return f"{name!r} is an absolute path"
    if "\\" in name or "\0" in name:
        return f"{name!r} holds a backslash or NUL"
    parts = name.split("/")
    if ".." in parts:
        return f"{name!r} climbs out with '..'"
    if any(p in ("", ".") for p in parts):
        return f"{name!r} has an empty or '.' part"
    return None


def _safe_name(name: str) -> str:
    why = _name_problem(name)
    if why:
        raise ValueError(f"{why}; a bundle names its files relative to its folder")
    return name


SafeName = Annotated[str, AfterValidator(_safe_name)]


class _Fields(BaseModel):
    """The manifest fields verify and load_baseline rely on; the others pass through unchecked."""

    model_config = ConfigDict(extra="allow", strict=True)


class _File(_Fields):
    sha256: str
    size_bytes: int = Field(ge=0)


class _Model(_Fields):
    file: SafeName
    format: str
    sha256: str
    size_bytes: int = Field(ge=0)

    @field_validator("format")
    @classmethod
    def _known(cls, fmt: str) -> str:
        if fmt not in FORMAT_RUNNER:
            raise ValueError(f"{fmt!r} is not one of {', '.join(sorted(FORMAT_RUNNER))}")
        return fmt


class _Latency(_Fields):
    latency_ms: float


class _Metrics(_Fields):
    retention: float | None
    simulated: dict[str, _Latency]


class _Manifest(_Fields):
    platform: str
    model: _Model
    labels: list[str] = Field(min_length=1)
    input_shape: list[Annotated[int, Field(ge=1)]] = Field(min_length=1)
    metrics: _Metrics
    files: dict[SafeName, _File]


def read_bundle_manifest(path: Path) -> tuple[dict, Path, tempfile.TemporaryDirectory | None]:
    """(manifest, bundle directory, temp dir to clean up) for a bundle directory or zip, after the
    checks that make it safe to read; the manifest has every field verify and load_baseline use."""
    manifest, root, tmp, _ = _open(Path(path))
    return manifest, root, tmp


def verify_bundle(path: Path) -> dict:
    """Recheck a bundle: its files are exactly those listed, with the listed hashes and sizes; the model
    file, labels.txt and validation arrays agree with the manifest; and the model file re-run on the
    validation inputs gives the expected outputs. Raises InputError for a bundle unsafe to open or with a
    malformed manifest, CheckFailed listing every problem; returns a summary when all is well."""
    manifest, root, tmp, files = _open(Path(path))
    try:
        problems = _listing_problems(manifest, files) + _hash_problems(root, manifest, files)
        problems += _agreement_problems(root, manifest)
        parity = None
        if not problems:
            parity, why = _rerun(root, manifest)
            problems += [why] if why else []
        if problems:
            raise CheckFailed(f"{path}: bundle verification failed:\n" + "".join(f"  {p}\n" for p in problems)
                              + REBUILD)
        return {"bundle": str(path), "files": len(manifest["files"]), "model": manifest["model"]["file"],
                "parity": parity.to_dict(), "ok": True}
    finally:
        if tmp is not None:
            tmp.cleanup()


# Opening: a directory as it is, a zip extracted into a temporary directory.

def _open(path: Path) -> tuple[dict, Path, tempfile.TemporaryDirectory | None, list[str]]:
    """(manifest, root, temp dir or None, relative names of every file under root)."""
    tmp = None
    try:
        if path.is_dir():
            root, shown = path, str(path)
        elif path.is_file():
            tmp = tempfile.TemporaryDirectory(prefix="edgekd-bundle-")
            root = _extract(path, Path(tmp.name))
            shown = f"{path}:{root.name}"  # names inside the zip, not inside a temp dir that is gone
        elif not path.exists():
            raise InputError(f"{path}: no such bundle; pass a bundle directory or its .zip")
        else:
            raise InputError(f"{path}: not a bundle (neither a directory nor a file); pass a bundle "
                             "directory or its .zip")
        files = _plain_files(root, shown)
        return _read_manifest(root, shown), root, tmp, files
    except BaseException:
        if tmp is not None:
            tmp.cleanup()
        raise


def _plain_files(root: Path, shown: str) -> list[str]:
    """Relative names of the regular files under `root`. Symlinks (wherever they point) and special
    files are refused, never followed: a bundle holds only plain files and folders."""
    def unreadable(e: OSError):
        raise InputError(f"{shown}: cannot read {e.filename} ({e.strerror}); {REBUILD}")

    files, refused = [], []
    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable, followlinks=False):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            rel, mode = p.relative_to(root).as_posix(), os.lstat(p).st_mode
            if stat.S_ISLNK(mode):
                refused.append(f"{rel} -> {os.readlink(p)} (symlink)")
            elif stat.S_ISREG(mode):
                files.append(rel)
            elif not stat.S_ISDIR(mode):
                refused.append(f"{rel} (not a regular file)")
    if refused:
        raise InputError(f"{shown}: refusing to read the bundle: it holds only plain files and folders, not\n"
                         + "".join(f"  {r}\n" for r in sorted(refused))
                         + f"replace each with the file it stands for, or {REBUILD}")
    return sorted(files)


def _read_manifest(root: Path, shown: str) -> dict:
    where = f"{shown}/manifest.json"
    p = root / "manifest.json"
    if not p.is_file():
        raise InputError(f"{where}: missing; is this an edgekd bundle? pass the bundle directory or its .zip")
    try:
        manifest = json.loads(p.read_bytes())
    except ValueError as e:  # JSON or UTF-8 decoding
        raise InputError(f"{where}: corrupt bundle manifest ({e}); {REBUILD}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise InputError(f"{where}: not an edgekd bundle manifest (field 'format' is not {FORMAT!r}); "
                         "pass a bundle written by `edgekd run`")
    try:
        _Manifest.model_validate(manifest)
    except ValidationError as e:
        raise InputError(format_validation(where, e, "bundle manifest") + f"\n{REBUILD}") from None
    return manifest


def _extract(zip_path: Path, dest: Path) -> Path:
    """Extract a bundle zip entry by entry into `dest` after checking every entry; returns the bundle
    folder. A damaged zip (bad CRC, cut short) is an InputError naming it, never a traceback."""
    if not zipfile.is_zipfile(zip_path):
        raise InputError(f"{zip_path}: not a bundle: neither a directory nor a readable zip file (a zip cut "
                         f"short loses its end record); pass a bundle directory or its .zip")
    try:
        with zipfile.ZipFile(zip_path) as z:
            infos = z.infolist()
            top = _check_entries(zip_path, infos)
            for info in infos:
                _extract_one(z, info, dest)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, OSError) as e:
        raise InputError(f"{zip_path}: damaged bundle zip ({e}); {REBUILD}") from None
    return dest / top


def _check_entries(zip_path: Path, infos: list[zipfile.ZipInfo]) -> str:
    """The zip's one top-level folder, after refusing (all at once) every unsafe entry."""
    problems, seen, tops, total = [], set(), set(), 0
    if len(infos) > MAX_ENTRIES:
        problems.append(f"{len(infos)} entries (a bundle holds at most {MAX_ENTRIES})")
    for info in infos:
        name = info.filename[:-1] if info.is_dir() else info.filename
        why = _name_problem(name) or _entry_problem(info)
        if why is None and name in seen:
            why = "appears twice"
        if why is None and "/" not in name and not info.is_dir():
            why = "lies outside the bundle folder"
        if why:
            problems.append(f"{info.filename!r}: {why}")
            continue
        seen.add(name)
        tops.add(name.split("/")[0])
        total += info.file_size
    if total > MAX_TOTAL_BYTES:
        problems.append(f"entries total {total} bytes uncompressed (cap {MAX_TOTAL_BYTES})")
    if not problems and len(tops) != 1:
        problems.append(f"top-level folders {sorted(tops)}: a bundle zip holds exactly one")
    if problems:
        raise InputError(f"{zip_path}: refusing to extract this bundle zip:\n"
                         + "".join(f"  {p}\n" for p in problems) + REBUILD)
    return tops.pop()


def _entry_problem(info: zipfile.ZipInfo) -> str | None:
    mode = info.external_attr >> 16  # unix mode bits, when the zip has them
    if stat.S_ISLNK(mode):
        return "is a symlink"
    if stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        return "is not a regular file"
    if info.flag_bits & 0x1:
        return "is encrypted"
    if info.file_size > MAX_ENTRY_BYTES:
        return f"declares {info.file_size} bytes uncompressed (cap {MAX_ENTRY_BYTES})"
    if info.file_size > RATIO_FLOOR_BYTES and info.file_size > MAX_RATIO * max(info.compress_size, 1):
        return (f"expands {info.compress_size} bytes to {info.file_size} "
                f"(over {MAX_RATIO}:1, a zip bomb's ratio)")
    return None


def _extract_one(z: zipfile.ZipFile, info: zipfile.ZipInfo, dest: Path) -> None:
    target = dest.joinpath(*info.filename.rstrip("/").split("/"))
    if info.is_dir():
        target.mkdir(parents=True, exist_ok=True)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    # "xb": never overwrite, never write through an existing link; the zip's mode bits are not applied
    with z.open(info) as src, open(target, "xb") as out:
        while block := src.read(1 << 20):
            out.write(block)


# Checking: what is there against what the manifest says.

def _covers(names, rel: str) -> bool:
    """`rel` is among `names`, as a file or as a folder (an .mlpackage is a folder)."""
    return any(n == rel or n.startswith(rel + "/") for n in names)


def _listing_problems(manifest: dict, files: list[str]) -> list[str]:
    listed, actual = set(manifest["files"]), set(files) - {"manifest.json"}
    problems = [f"{rel}: missing" for rel in sorted(listed - actual)]
    problems += [f"{rel}: not listed in manifest.json (added after bundling)"
                 for rel in sorted(actual - listed)]
    for rel in (manifest["model"]["file"], *REQUIRED_FILES):
        if not _covers(listed, rel) and not _covers(actual, rel):
            problems.append(f"{rel}: missing (every bundle has it)")
    return problems


def _hash_problems(root: Path, manifest: dict, files: list[str]) -> list[str]:
    problems = []
    for rel in sorted(set(manifest["files"]) & set(files)):
        p, want = root / rel, manifest["files"][rel]
        if p.stat().st_size != want["size_bytes"] or sha256_file(p) != want["sha256"]:
            problems.append(f"{rel}: sha256/size differ from manifest.json (altered)")
    return problems


def _agreement_problems(root: Path, manifest: dict) -> list[str]:
    """What the manifest says about each file it describes, rechecked on the file."""
    problems = []
    model = manifest["model"]
    p = root / model["file"]
    if p.exists():
        if sha256_tree(p) != model["sha256"]:
            problems.append(f"{model['file']}: sha256 differs from manifest.json model.sha256")
        if dir_size(p) != model["size_bytes"]:
            problems.append(f"{model['file']}: {dir_size(p)} bytes, manifest.json model.size_bytes "
                            f"says {model['size_bytes']}")
    if (root / "labels.txt").is_file():
        problems += _labels_problems(root / "labels.txt", manifest["labels"])
    return problems + _validation_problems(root, manifest)


def _labels_problems(p: Path, labels: list[str]) -> list[str]:
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        return ["labels.txt: not UTF-8 text"]
    if lines == labels:
        return []
    if len(lines) != len(labels):
        return [f"labels.txt: {len(lines)} labels, manifest.json labels has {len(labels)}"]
    i = next(i for i, (a, b) in enumerate(zip(lines, labels)) if a != b)
    return [f"labels.txt: line {i + 1} is {lines[i]!r}, manifest.json labels[{i}] is {labels[i]!r}"]


def _load_npy(p: Path) -> np.ndarray | str:
    """The array, or why it cannot be read (pickled objects are refused, never loaded)."""
    try:
        return np.load(p, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        return f"not a readable .npy array ({e})"


def _validation_problems(root: Path, manifest: dict) -> list[str]:
    """inputs.npy: (N, *input_shape) float32 (text: int64 token rows the bundled tokenizer gives for
    validation/sentences.jsonl); expected.npy: (N, len(labels)) finite floats."""
    problems = []
    text = bool(manifest.get("tokenizer"))
    shape, n_classes = tuple(manifest["input_shape"]), len(manifest["labels"])
    x_path, y_path = root / "validation" / "inputs.npy", root / "validation" / "expected.npy"
    x = _load_npy(x_path) if x_path.is_file() else None
    y = _load_npy(y_path) if y_path.is_file() else None
    if isinstance(x, str):
        problems.append(f"validation/inputs.npy: {x}")
    elif x is not None and (x.ndim != len(shape) + 1 or x.shape[1:] != shape or not len(x)
                            or x.dtype != (np.int64 if text else np.float32)):
        kind = "int64 token rows" if text else "float32"
        problems.append(f"validation/inputs.npy: {x.dtype} {x.shape}, manifest.json input_shape asks "
                        f"{kind} (N, {', '.join(map(str, shape))}) with N >= 1")
    elif text and x is not None:
        problems += _tokenizer_problems(root, x, manifest)
    if isinstance(y, str):
        problems.append(f"validation/expected.npy: {y}")
    elif y is not None:
        n = len(x) if isinstance(x, np.ndarray) else len(y)
        if y.shape != (n, n_classes) or not np.issubdtype(y.dtype, np.floating) or not np.isfinite(y).all():
            problems.append(f"validation/expected.npy: {y.dtype} {y.shape}, expected finite floats of shape "
                            f"({n}, {n_classes}) (one row per input, one column per manifest.json label)")
    return problems


def _tokenizer_problems(root: Path, x: np.ndarray, manifest: dict) -> list[str]:
    """The bundled tokenizer, loaded as an app loads it and run again on the bundled sentences, must give
    the bundled token rows; the settings an app reproduces must be the tokenizer's own."""
    from tokenizers import Tokenizer

    from edgekd.data.tokens import SPECIALS

    path = root / "validation" / "sentences.jsonl"
    if not path.is_file() or not (root / "tokenizer" / "tokenizer.json").is_file():
        return ["validation/sentences.jsonl or tokenizer/tokenizer.json: missing (a text bundle has both)"]
    try:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        sentences = [r["text"] for r in rows]
        listed = np.array([[r["input_ids"], r["attention_mask"]] for r in rows], np.int64)
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as e:
        return [f"validation/sentences.jsonl: not one JSON object with text, input_ids and attention_mask "
                f"a line ({type(e).__name__}: {e})"]
    if len(sentences) != len(x) or listed.shape != x.shape:
        return [f"validation/sentences.jsonl: {len(sentences)} sentences of {list(listed.shape[1:])} token "
                f"rows, inputs.npy holds {list(x.shape)}"]
    try:  # as it is: its own padding and truncation, which an app's tokenizer library applies
        tok = Tokenizer.from_file(str(root / "tokenizer" / "tokenizer.json"))
        encoded = tok.encode_batch(sentences)
        spec = json.loads((root / "tokenizer" / "tokenizer.json").read_text(encoding="utf-8"))
        settings = json.loads((root / "tokenizer" / "settings.json").read_text(encoding="utf-8"))
    except Exception as e:  # noqa: BLE001 - the tokenizers library raises plain Exception on bad files
        return [f"tokenizer/: not a readable tokenizer.json and settings.json ({type(e).__name__}: {e})"]
    problems, got = [], None
    lengths = sorted({len(e.ids) for e in encoded})
    if lengths != [x.shape[-1]]:
        problems.append(f"tokenizer/tokenizer.json: gives rows of {', '.join(map(str, lengths))} tokens, the "
                        f"model takes {x.shape[-1]} (its padding or truncation is not the model's length)")
    else:
        got = np.array([[e.ids, e.attention_mask] for e in encoded], np.int64)
    if settings != manifest.get("tokenizer"):
        problems.append("tokenizer/settings.json: differs from manifest.json's tokenizer settings")
    if settings.get("max_length") != x.shape[-1]:
        problems.append(f"tokenizer/settings.json: max_length {settings.get('max_length')}, the model takes "
                        f"{x.shape[-1]} tokens")
    ids = {k: tok.token_to_id(v) for k, v in SPECIALS.items()}
    if settings.get("special_ids") != ids:
        problems.append(f"tokenizer/settings.json: special_ids {settings.get('special_ids')}, the "
                        f"tokenizer's are {ids}")
    if settings.get("normalizer") != spec.get("normalizer"):
        problems.append("tokenizer/settings.json: its normalizer differs from tokenizer.json's")
    problems += [f"validation/sentences.jsonl line {i + 1}: its input_ids/attention_mask differ from "
                f"inputs.npy row {i}" for i in range(len(x)) if not np.array_equal(listed[i], x[i])][:3]
    if got is not None:
        problems += [f"validation/sentences.jsonl line {i + 1}: the bundled tokenizer gives other ids than "
                     f"inputs.npy row {i} ({sentences[i][:40]!r})" for i in range(len(x))
                     if not np.array_equal(got[i], x[i])][:3]
    return problems


def _rerun(root: Path, manifest: dict) -> tuple[Parity | None, str | None]:
    """Parity of the model file's outputs on the bundled inputs against the bundled outputs."""
    x = np.load(root / "validation" / "inputs.npy", allow_pickle=False)
    want = np.load(root / "validation" / "expected.npy", allow_pickle=False)
    fmt, rel = manifest["model"]["format"], manifest["model"]["file"]
    try:
        got = np.asarray(load_runner(fmt, root / rel).predict(x))
    except EdgekdError:
        raise
    except Exception as e:  # a file its runtime cannot run fails the check; it is not a traceback
        return None, f"{rel}: the {fmt} runtime cannot run it ({type(e).__name__}: {e})"
    if got.shape != want.shape:
        return None, f"validation outputs: the model gives {got.shape}, expected.npy holds {want.shape}"
    if not np.isfinite(got).all():
        return None, "validation outputs: the model gives NaN or infinite values"
    parity = measure_parity(want, got)
    why = parity_failure(parity, MIN_TOP1, MAX_ABS_DIFF)
    return parity, f"validation outputs differ: {why}" if why else None
