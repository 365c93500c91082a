"""Checkpoints: weights as safetensors (no pickle) and a small JSON beside them (architecture, labels,
normalisation). Loading validates both and names the file and the fix when something is off."""

from __future__ import annotations

import json
import os
from dataclasses import fields, replace
from pathlib import Path

from edgekd.errors import InputError
from edgekd.fileio import atomic_dir, read_json, sha256_file
from edgekd.models import Classifier, count_params, eval_mode, resolve
from edgekd.types import Checkpoint, ModelSpec

FORMAT = "edgekd.checkpoint"
VERSION = 1
WEIGHTS, META = "model.safetensors", "model.json"


def save_checkpoint(model: Classifier, path: Path, *, name: str, role: str, arch: str, width: float,
                    depth: int | None, input_shape, labels, mean: float, std: float,
                    data_fingerprint: str, accuracy: float | None,
                    provenance: dict | None = None, spec: ModelSpec | None = None,
                    extras: dict[str, dict] | None = None) -> Checkpoint:
    """Write `path/model.safetensors` and `path/model.json` (atomically). `spec` records how to rebuild a
    network that is not a zoo entry (its weights are the ones saved here); `extras`: further tensors to
    keep beside them (file name -> {name: tensor}), hashed in model.json and read with `extra_file`."""
    from safetensors.torch import save_file

    if callable(getattr(model, "rebuild_spec", None)):  # a network that records its own constructor
        spec = model.rebuild_spec()
    path = Path(path)
    with atomic_dir(path) as tmp:
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS))
        for fname, tensors in (extras or {}).items():
            save_file(tensors, str(tmp / fname))
        for fname in (WEIGHTS, *(extras or {})):  # safetensors writes 0600: readable as model.json is
            _readable_as_created(tmp / fname)
        ckpt = Checkpoint(
            path=path, name=name, role=role, arch=arch, width=float(width), depth=depth,
            input_shape=tuple(int(s) for s in input_shape), labels=tuple(labels), mean=float(mean),
            std=float(std), params=count_params(model), weights_sha256=sha256_file(tmp / WEIGHTS),
            data_fingerprint=data_fingerprint, accuracy=accuracy, provenance=dict(provenance or {}),
            spec=replace(spec, weights=None, rename={}) if spec is not None else None,
            extras={fname: sha256_file(tmp / fname) for fname in (extras or {})},
        )
        meta = {"format": FORMAT, "version": VERSION,
                **{k: v for k, v in ckpt.__dict__.items() if k not in ("path", "spec", "extras")}}
        if ckpt.extras:
            meta["extras"] = ckpt.extras
        meta["input_shape"], meta["labels"] = list(ckpt.input_shape), list(ckpt.labels)
        meta["model"] = ckpt.model_spec.to_dict()
        (tmp / META).write_text(json.dumps(meta, indent=2) + "\n")
    return ckpt


def read_checkpoint(path: Path) -> Checkpoint:
    """Read and validate `model.json` (not the weights)."""
    path = Path(path)
    if path.is_file() and path.name in (META, WEIGHTS):
        path = path.parent
    meta_path = path / META
    if not path.exists():
        raise InputError(f"{path}: no such checkpoint directory")
    if not meta_path.is_file() or not (path / WEIGHTS).is_file():
        raise InputError(f"{path}: not an edgekd checkpoint (expected {META} and {WEIGHTS}); "
                         "train one with `edgekd teacher` or `edgekd distill`")
    meta = read_json(meta_path, "checkpoint metadata", "re-run the training that wrote it")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise InputError(f"{meta_path}: not an edgekd checkpoint (field 'format' is not {FORMAT!r})")
    if meta.get("version") != VERSION:
        raise InputError(f"{meta_path}: checkpoint version {meta.get('version')!r}; "
                         f"this edgekd reads version {VERSION}")
    try:
        return Checkpoint(
            path=path, name=str(meta["name"]), role=str(meta["role"]), arch=str(meta["arch"]),
            width=float(meta["width"]), depth=None if meta["depth"] is None else int(meta["depth"]),
            input_shape=tuple(int(s) for s in meta["input_shape"]),
            labels=tuple(str(s) for s in meta["labels"]),
            mean=float(meta["mean"]), std=float(meta["std"]), params=int(meta["params"]),
            weights_sha256=str(meta["weights_sha256"]), data_fingerprint=str(meta["data_fingerprint"]),
            accuracy=None if meta.get("accuracy") is None else float(meta["accuracy"]),
            provenance=dict(meta.get("provenance") or {}),
            spec=_spec(meta.get("model"), meta_path),
            extras={str(k): str(v) for k, v in (meta.get("extras") or {}).items()},
        )
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise InputError(f"{meta_path}: checkpoint metadata field {e} is missing or malformed") from None


def _readable_as_created(path: Path) -> None:
    """The mode a file created here gets (0666 less the umask), where a library wrote it 0600: other users
    of a shared run folder read the weights as they read model.json."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def load_checkpoint(path: Path) -> tuple[Checkpoint, Classifier]:
    """Rebuild the model from its metadata and load its weights (eval mode)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    ckpt = read_checkpoint(path)
    model = resolve(ckpt.model_spec, ckpt.input_shape, len(ckpt.labels), where=f"checkpoint {ckpt.path}")
    weights = ckpt.path / WEIGHTS
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise InputError(f"{weights}: corrupt weights file ({e}); "
                         "re-run the training that wrote it") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).splitlines()[1].strip() if "\n" in str(e) else str(e)
        raise InputError(f"{weights}: weights do not fit the network {ckpt.model_spec.label!r} "
                         f"recorded in {META}: {first}") from None
    return ckpt, eval_mode(model)  # a torch.export program's module refuses .eval()


def extra_file(ckpt: Checkpoint, name: str) -> Path:
    """`name` in the checkpoint folder, checked against the hash model.json recorded for it."""
    path = ckpt.path / name
    if name not in ckpt.extras:
        raise InputError(f"{ckpt.path / META}: no {name} recorded; re-run the training that wrote it")
    if not path.is_file() or sha256_file(path) != ckpt.extras[name]:
        raise InputError(f"{path}: missing or changed since it was written (sha256 differs from {META}); "
                         "re-run the training that wrote it")
    return path


def training_data(ckpt: Checkpoint):
    """The dataset a checkpoint was trained on, reloaded from its provenance and checked unchanged."""
    from edgekd.data import load_recorded, loaded

    src = ckpt.provenance.get("data")
    if not src:
        raise InputError(f"{ckpt.path / META}: no record of the training data; re-train it with edgekd")
    data = loaded(ckpt.data_fingerprint) or load_recorded(src)  # a job process may hold it already
    if data.fingerprint != ckpt.data_fingerprint:
        raise InputError(f"{ckpt.path}: its training data {src} changed since training "
                         "(fingerprint differs); re-run distill on the current data")
    return data


def _spec(raw, meta_path: Path) -> ModelSpec | None:
    """The `model` field of model.json (absent in older checkpoints: the zoo entry of `arch`)."""
    if raw is None:
        return None
    known = {f.name for f in fields(ModelSpec)}
    if not isinstance(raw, dict) or raw.get("kind") not in ("zoo", "factory", "program") or set(raw) - known:
        raise InputError(f"{meta_path}: field 'model' is malformed ({raw!r}); "
                         "re-run the training that wrote it")
    return ModelSpec(**raw)
