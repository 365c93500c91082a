"""Every data source in edgekd/data/: real files written here (Pillow PNG/JPEG, IDX from the format's
spec, CSV, Parquet) load with the right shapes, labels and scale, and bad files exit 2 naming the file
and the field. The heavy tests run `edgekd run` end to end on a PNG folder and on a CSV table."""

from __future__ import annotations

import gzip
import json
import struct
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import yaml

from edgekd.data import DATASETS, load_dataset
from edgekd.errors import InputError
from helpers import run_cli, run_main

FASHION = Path("/usr/share/datasets/fashion-mnist")


@contextmanager
def _fails(match: str, *names):
    """An InputError (exit 2) whose message matches `match` and names every one of `names`."""
    with pytest.raises(InputError, match=match) as e:
        yield e
    assert e.value.exit_code == 2
    for n in names:
        assert str(n) in str(e.value), (n, str(e.value))


# --- IDX, written from the format's description (http://yann.lecun.com/exdb/mnist/) ---------------

IDX_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int16): 0x0B, np.dtype(np.float32): 0x0D}


def write_idx(path: Path, a: np.ndarray, gz: bool = False) -> Path:
    """magic (0, 0, type code, ndim), one big-endian uint32 per dimension, then big-endian data."""
    header = bytes([0, 0, IDX_CODES[a.dtype], a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape)
    body = header + a.astype(a.dtype.newbyteorder(">")).tobytes()
    path = path.with_name(path.name + ".gz") if gz else path
    path.write_bytes(gzip.compress(body) if gz else body)
    return path


def idx_folder(d: Path, gz: bool = False, n_train: int = 30, n_test: int = 9, classes: int = 3) -> Path:
    rng = np.random.default_rng(0)
    d.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("t10k", n_test)):
        write_idx(d / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (n, 5, 4), dtype=np.uint8), gz)
        write_idx(d / f"{split}-labels-idx1-ubyte", (np.arange(n) % classes).astype(np.uint8), gz)
    return d


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_idx_reads_images_and_labels(tmp_path, gz):
    d = idx_folder(tmp_path / "idx", gz)
    raw = DATASETS.get("idx")(path=d)
    pixels = np.frombuffer(gzip.decompress((d / "train-images-idx3-ubyte.gz").read_bytes()) if gz
                           else (d / "train-images-idx3-ubyte").read_bytes(), np.uint8, offset=16)
    assert raw.x_train.shape == (30, 1, 5, 4) and raw.x_test.shape == (9, 1, 5, 4)
    assert raw.x_train.dtype == np.float32
    np.testing.assert_allclose(raw.x_train.ravel(), pixels / 255.0, atol=1e-7)  # [0, 1], row-major
    assert raw.labels == ("0", "1", "2") and list(raw.y_test) == [0, 1, 2] * 3
    ds = load_dataset("idx", d)
    assert ds.input_shape == (1, 5, 4) and ds.source["path"] == str(d.resolve())


def test_idx_header_is_parsed_not_assumed(tmp_path):
    """Other type codes than bytes: int16 labels, float32 images; and names from labels.txt."""
    from edgekd.data.idx import read_idx

    d = tmp_path / "idx"
    d.mkdir()
    rng = np.random.default_rng(1)
    for split, n in (("train", 12), ("t10k", 4)):
        write_idx(d / f"{split}-images-idx3-ubyte", rng.random((n, 3, 3)).astype(np.float32))
        write_idx(d / f"{split}-labels-idx1-ubyte", (np.arange(n) % 2).astype(np.int16))
    (d / "labels.txt").write_text("cat\ndog\n\n")
    assert read_idx(d / "train-labels-idx1-ubyte", 1).dtype == np.dtype(">i2")
    raw = DATASETS.get("idx")(path=d)
    assert raw.labels == ("cat", "dog") and raw.x_train.shape == (12, 1, 3, 3)
    np.testing.assert_array_equal(raw.x_train[:, 0], read_idx(d / "train-images-idx3-ubyte", 3))


def test_idx_bad_files_name_the_file(tmp_path):
    d = idx_folder(tmp_path / "idx")
    (d / "t10k-labels-idx1-ubyte").unlink()
    with _fails("no such file", "t10k-labels-idx1-ubyte", "data.path"):
        load_dataset("idx", d)
    d = idx_folder(tmp_path / "magic")
    f = d / "train-images-idx3-ubyte"
    f.write_bytes(b"\x00\x00\x08\x02" + f.read_bytes()[4:])  # 2 dimensions where images have 3
    with _fails("magic number 0x00000802", f):
        load_dataset("idx", d)
    d = idx_folder(tmp_path / "short")
    f = d / "train-images-idx3-ubyte"
    f.write_bytes(f.read_bytes()[:-7])
    with _fails("truncated", f):
        load_dataset("idx", d)
    d = idx_folder(tmp_path / "count")
    write_idx(d / "train-labels-idx1-ubyte", np.zeros(29, np.uint8))
    with _fails("30 rows but 'labels' has 29", "train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        load_dataset("idx", d)
    d = idx_folder(tmp_path / "names")
    (d / "labels.txt").write_text("a\nb\n")
    with _fails("class ids up to 2", "train-labels-idx1-ubyte", "labels.txt"):
        load_dataset("idx", d)
    with _fails("no such folder", tmp_path / "nope", "data.path"):
        load_dataset("idx", tmp_path / "nope")
    with _fails("needs a folder", "data.path"):
        load_dataset("idx")


def test_fashion_mnist_from_a_folder_and_the_install_hint(tmp_path):
    d = idx_folder(tmp_path / "fm", gz=True, classes=10, n_train=40, n_test=10)
    ds = load_dataset("fashion-mnist", d)
    assert ds.labels[0] == "T-shirt/top" and ds.labels[9] == "Ankle boot" and ds.num_classes == 10
    with _fails("apt-get install dataset-fashion-mnist", tmp_path / "missing", "data.path"):
        load_dataset("fashion-mnist", tmp_path / "missing")


@pytest.mark.skipif(not FASHION.is_dir(), reason=f"{FASHION} missing: apt-get install dataset-fashion-mnist")
def test_the_installed_fashion_mnist_files():
    from edgekd.data.idx import read_idx

    images = read_idx(FASHION / "t10k-images-idx3-ubyte.gz", 3)
    labels = read_idx(FASHION / "t10k-labels-idx1-ubyte.gz", 1)
    assert images.shape == (10_000, 28, 28) and images.dtype == np.uint8 and labels.shape == (10_000,)
    assert list(labels[:5]) == [9, 2, 1, 1, 6]  # the test split's first records
    assert np.bincount(labels).tolist() == [1000] * 10
    assert read_idx(FASHION / "train-labels-idx1-ubyte.gz", 1)[:3].tolist() == [9, 0, 0]


@pytest.mark.heavy
@pytest.mark.skipif(not FASHION.is_dir(), reason=f"{FASHION} missing: apt-get install dataset-fashion-mnist")
def test_the_fashion_mnist_source_loads_all_of_it():
    d = load_dataset("fashion-mnist")
    assert (len(d.x_train), len(d.x_test), d.input_shape) == (60_000, 10_000, (1, 28, 28))
    assert d.mean == pytest.approx(0.2860, abs=1e-3) and d.std == pytest.approx(0.3530, abs=1e-3)
    assert d.source == {"name": "fashion-mnist", "path": None, "seed": 42, "options": {}}


# --- image folders, real PNG/JPEG files through Pillow --------------------------------------------

def _pattern(k: int, size: int = 8, rng=None) -> np.ndarray:
    """Class k: a bright band in the k-th third of the rows, a little noise: (size, size) uint8."""
    a = np.full((size, size), 20.0)
    a[k * size // 3:(k + 1) * size // 3] = 220
    if rng is not None:
        a += rng.normal(0, 10, a.shape)
    return np.clip(a, 0, 255).astype(np.uint8)


def image_folder(d: Path, classes=("cat", "dog", "eel"), n: int = 10, size: int = 8, mode: str = "L",
                 fmt: str = "png") -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for k, name in enumerate(classes):
        (d / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            im = Image.fromarray(_pattern(k, size, rng), "L").convert(mode)
            im.save(d / name / f"{i:03d}.{fmt}")
    return d


def test_imagefolder_grey_pngs_resized_and_split(tmp_path):
    d = image_folder(tmp_path / "img", n=10, size=12)
    (d / "cat" / "notes.txt").write_text("not an image")  # ignored by extension
    raw = DATASETS.get("imagefolder")(path=d, seed=1, image_size=[6, 4])
    assert raw.labels == ("cat", "dog", "eel")
    assert raw.x_train.shape == (24, 1, 6, 4) and raw.x_test.shape == (6, 1, 6, 4)
    assert np.bincount(raw.y_test).tolist() == [2, 2, 2]  # stratified: 20% of each class
    assert raw.x_train.dtype == np.float32 and 0 <= raw.x_train.min() and raw.x_train.max() <= 1
    ds = load_dataset("imagefolder", d, image_size=(6, 4))
    assert ds.source["options"] == {"image_size": [6, 4], "channels": None}
    assert load_dataset("imagefolder", d, image_size=[6, 4]).fingerprint == ds.fingerprint
    assert load_dataset("imagefolder", d, image_size=[4, 4]).fingerprint != ds.fingerprint
    assert load_dataset("imagefolder", d, seed=7, image_size=[6, 4]).fingerprint != ds.fingerprint


def test_imagefolder_pixels_are_the_files_pixels(tmp_path):
    from PIL import Image

    d = tmp_path / "img"
    for k, name in enumerate(("a", "b")):
        (d / "train" / name).mkdir(parents=True)
        (d / "test" / name).mkdir(parents=True)
        Image.fromarray(_pattern(k), "L").save(d / "train" / name / "0.png")
        Image.fromarray(_pattern(k), "L").save(d / "test" / name / "0.png")
    raw = DATASETS.get("imagefolder")(path=d, image_size=[8, 8])
    np.testing.assert_allclose(raw.x_train[1, 0], _pattern(1) / 255.0, atol=1e-7)
    assert list(raw.y_train) == [0, 1] and list(raw.y_test) == [0, 1]


def test_imagefolder_channels(tmp_path):
    rgb = image_folder(tmp_path / "rgb", mode="RGB", fmt="jpg")
    assert DATASETS.get("imagefolder")(path=rgb, image_size=[8, 8]).x_train.shape[1] == 3
    assert DATASETS.get("imagefolder")(path=rgb, image_size=[8, 8], channels=1).x_train.shape[1] == 1
    mixed = image_folder(tmp_path / "mixed", classes=("a", "b"))
    image_folder(mixed, classes=("c",), mode="RGB", fmt="jpeg")
    raw = DATASETS.get("imagefolder")(path=mixed, image_size=[8, 8])
    assert raw.x_train.shape[1] == 3 and raw.labels == ("a", "b", "c")
    grey = raw.x_train[raw.y_train == 0]
    np.testing.assert_array_equal(grey[:, 0], grey[:, 2])  # a grey file: the same value in R, G and B


def test_imagefolder_bad_inputs_name_the_folder_or_file(tmp_path):
    one = image_folder(tmp_path / "one", classes=("cat",))
    with _fails("one class folder", one, "at least 2"):
        load_dataset("imagefolder", one, image_size=[8, 8])
    bad = image_folder(tmp_path / "bad")
    png = bad / "dog" / "004.png"
    png.write_bytes(png.read_bytes()[:40])  # cut short
    with _fails("not a readable PNG/JPEG", png):
        load_dataset("imagefolder", bad, image_size=[8, 8])
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with _fails("not a readable PNG/JPEG", png):
        load_dataset("imagefolder", bad, image_size=[8, 8])
    empty = image_folder(tmp_path / "empty")
    (empty / "fox").mkdir()
    (empty / "fox" / "readme.txt").write_text("no images here")
    with _fails("no PNG or JPEG images", empty / "fox"):
        load_dataset("imagefolder", empty, image_size=[8, 8])
    with _fails("needs data.image_size", tmp_path / "bad"):
        load_dataset("imagefolder", tmp_path / "bad")
    half = image_folder(tmp_path / "half" / "train")
    with _fails("has train/ but no test/", tmp_path / "half"):
        load_dataset("imagefolder", half.parent, image_size=[8, 8])


def test_imagefolder_single_class_exits_2_through_the_cli(tmp_path, capsys):
    one = image_folder(tmp_path / "one", classes=("cat",))
    recipe = _write(tmp_path / "recipe.yaml", _image_recipe(one))
    code, err = run_main(["distill", recipe, "--out", tmp_path / "out"], capsys)
    assert code == 2 and err.startswith("edgekd: error:") and str(one) in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()


# --- tables ---------------------------------------------------------------------------------------

def _table(n: int = 60, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    y = [("cat", "dog", "eel")[i % 3] for i in range(n)]
    x = rng.normal(0, 0.3, (n, 4))
    x[np.arange(n), [i % 3 for i in range(n)]] += 3.0
    return x, y


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    path.write_text("\n".join(",".join(map(str, r)) for r in [header, *rows]) + "\n")
    return path


def test_csv_string_labels_become_sorted_names(tmp_path):
    x, y = _table()
    p = write_csv(tmp_path / "t.csv", ["f0", "f1", "label", "f2", "f3"],
                  [[*r[:2], c, *r[2:]] for r, c in zip(x.tolist(), y)])
    raw = DATASETS.get("csv")(path=p)
    assert raw.labels == ("cat", "dog", "eel")
    assert raw.x_train.shape == (48, 1, 4) and raw.x_test.shape == (12, 1, 4)
    assert raw.x_train.dtype == np.float32
    rows = np.concatenate([raw.x_train, raw.x_test])[:, 0]  # (N, F)
    ids = np.concatenate([raw.y_train, raw.y_test])
    written = {tuple(r): c for r, c in zip(x.astype(np.float32).tolist(), y)}
    assert {tuple(r): raw.labels[i] for r, i in zip(rows.tolist(), ids)} == written  # rows keep their class
    ds = load_dataset("csv", p, image_size=[8, 8])  # an option csv does not take is ignored
    assert ds.source["options"] == {"label_column": "label"} and ds.input_shape == (1, 4)


def test_csv_integer_labels_and_another_label_column(tmp_path):
    x, y = _table(30)
    ids = [{"cat": 2, "dog": 0, "eel": 1}[c] for c in y]
    p = write_csv(tmp_path / "t.csv", ["a", "b", "c", "d", "class"],
                  [[*r, i] for r, i in zip(x.tolist(), ids)])
    raw = DATASETS.get("csv")(path=p, label_column="class")
    assert raw.labels == ("0", "1", "2") and raw.x_train.shape[1:] == (1, 4)
    with _fails("no column 'label'", p, "data.label_column"):
        load_dataset("csv", p)
    assert load_dataset("csv", p, label_column="class").source["options"] == {"label_column": "class"}


def test_csv_numeric_labels_are_ids_as_in_parquet_and_fractions_or_gaps_are_refused(tmp_path):
    x, y = _table(30)
    ids = [{"cat": 2, "dog": 0, "eel": 1}[c] for c in y]
    floats = write_csv(tmp_path / "f.csv", ["a", "b", "c", "d", "label"],
                       [[*r, f"{i}.0" if n % 2 else i] for n, (r, i) in enumerate(zip(x.tolist(), ids))])
    raw = DATASETS.get("csv")(path=floats)  # 2 and 2.0 alike: one class, as Parquet reads a float column
    assert raw.labels == ("0", "1", "2")
    got = np.concatenate([raw.y_train, raw.y_test])
    assert sorted(got.tolist()) == sorted(ids)
    frac = write_csv(tmp_path / "frac.csv", ["a", "b", "c", "d", "label"],
                     [[*r, i + 0.5] for r, i in zip(x.tolist(), ids)])
    with _fails("non-integer numbers", frac, "'label'"):
        load_dataset("csv", frac)
    one_based = write_csv(tmp_path / "one.csv", ["a", "b", "c", "d", "label"],
                          [[*r, i + 1] for r, i in zip(x.tolist(), ids)])
    with _fails("no row of class 0", one_based, "subtract 1"):
        load_dataset("csv", one_based)


def test_csv_bad_values_name_file_column_and_row(tmp_path):
    x, y = _table(20)
    rows = [[*r, c] for r, c in zip(x.tolist(), y)]
    rows[4][1] = "red"
    p = write_csv(tmp_path / "text.csv", ["f0", "colour", "f2", "f3", "label"], rows)
    with _fails("column 'colour' holds non-numeric value 'red'", p, "row 5", "line 6"):
        load_dataset("csv", p)
    rows[4][1] = "nan"
    p = write_csv(tmp_path / "nan.csv", ["f0", "f1", "f2", "f3", "label"], rows)
    with _fails("column 'f1' holds NaN", p, "row 5"):
        load_dataset("csv", p)
    rows[4][1] = ""
    p = write_csv(tmp_path / "empty.csv", ["f0", "f1", "f2", "f3", "label"], rows)
    with _fails("column 'f1' holds an empty cell", p, "row 5"):
        load_dataset("csv", p)
    p = tmp_path / "ragged.csv"
    p.write_text("a,b,label\n1,2,x\n1,y\n")
    with _fails("line 3 has 2 fields", p):
        load_dataset("csv", p)
    p = write_csv(tmp_path / "one.csv", ["a", "label"], [[i, "cat"] for i in range(10)])
    with _fails("column 'label' holds 1 class", p, "data.label_column"):
        load_dataset("csv", p)
    with _fails("no such file", tmp_path / "nope.csv", "data.path"):
        load_dataset("csv", tmp_path / "nope.csv")


def test_parquet_reads_numeric_columns_and_refuses_text(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    x, y = _table(40)
    cols = {f"f{i}": x[:, i] for i in range(3)}
    cols["n"] = np.arange(40, dtype=np.int32)
    p = tmp_path / "t.parquet"
    pq.write_table(pa.table({**cols, "label": y}), p)
    raw = DATASETS.get("parquet")(path=p)
    # classes of 14, 13 and 13 rows: 3 of each held out
    assert raw.labels == ("cat", "dog", "eel") and raw.x_train.shape == (31, 1, 4)
    assert sorted(np.concatenate([raw.x_train, raw.x_test])[:, 0, 3].tolist()) == list(range(40))
    pq.write_table(pa.table({**cols, "label": [i % 3 for i in range(40)]}), p)
    assert DATASETS.get("parquet")(path=p).labels == ("0", "1", "2")
    pq.write_table(pa.table({**cols, "colour": ["red"] * 40, "label": y}), p)
    with _fails("column 'colour' holds string values", p):
        load_dataset("parquet", p)
    f1 = x[:, 1].copy()
    f1[7] = np.nan
    pq.write_table(pa.table({**cols, "f1": f1, "label": y}), p)
    with _fails("column 'f1' holds NaN", p, "row 7"):
        load_dataset("parquet", p)
    pq.write_table(pa.table({**cols, "f1": pa.array([None] + x[1:, 1].tolist()), "label": y}), p)
    with _fails("column 'f1' has 1 missing value", p, "row 0"):
        load_dataset("parquet", p)
    p.write_bytes(b"PAR1 not really")
    with _fails("not a readable Parquet file", p):
        load_dataset("parquet", p)


# --- options, config and provenance ---------------------------------------------------------------

def test_every_source_is_registered_and_listed():
    names = {"mnist1d", "digits", "npz", "idx", "fashion-mnist", "imagefolder", "csv", "parquet", "text",
             "movie-reviews"}
    assert set(DATASETS.names()) == names
    with pytest.raises(InputError) as e:
        load_dataset("cifar")
    assert all(n in str(e.value) for n in names)


def test_options_a_source_does_not_take_change_nothing():
    a, b = load_dataset("digits"), load_dataset("digits", image_size=[8, 8], label_column="y", channels=3)
    assert a.fingerprint == b.fingerprint and b.source["options"] == {}


def test_checkpoints_reload_their_data_with_its_options(tmp_path):
    from edgekd.checkpoint import training_data
    from edgekd.types import Checkpoint

    d = image_folder(tmp_path / "img")
    ds = load_dataset("imagefolder", d, image_size=[6, 6], channels=3)
    source = json.loads(json.dumps(ds.source))  # as model.json stores it
    ckpt = Checkpoint(path=tmp_path / "ckpt", name="t", role="teacher", arch="mobilenet2d", width=1.0,
                      depth=None, input_shape=ds.input_shape, labels=ds.labels, mean=ds.mean, std=ds.std,
                      params=1, weights_sha256="", data_fingerprint=ds.fingerprint,
                      provenance={"data": source})
    again = training_data(ckpt)
    assert again.input_shape == (3, 6, 6) and again.fingerprint == ds.fingerprint


def test_data_config_fields_reach_the_source(tmp_path):
    from edgekd.config import DataConfig, Recipe
    from edgekd.pipeline import load_data

    d = image_folder(tmp_path / "img")
    recipe = Recipe(data=DataConfig(name="imagefolder", path=d, image_size=[4, 4], channels=3),
                    students=[{"name": "s"}])
    data = load_data(recipe)
    assert data.input_shape == (3, 4, 4) and data.source["options"] == {"image_size": [4, 4], "channels": 3}
    for bad in ({"image_size": [0, 4]}, {"image_size": [4]}, {"channels": 2}):
        with pytest.raises(ValueError):
            DataConfig(name="imagefolder", **bad)


def test_the_fashion_mnist_recipe_validates_and_builds():
    from importlib import resources

    from edgekd.config import load_recipe
    from edgekd.models import build_model, count_params
    from edgekd.models.budget import fit_width

    recipe, _ = load_recipe(Path(str(resources.files("edgekd") / "recipes" / "fashion-mnist.yaml")))
    assert recipe.data.name == "fashion-mnist" and recipe.teacher.min_accuracy == 0.9
    teacher = count_params(build_model(recipe.teacher.arch, (1, 28, 28), 10, width=recipe.teacher.width,
                                       depth=recipe.teacher.depth))
    for s in recipe.students:
        claimed = float(s.name.rsplit("-", 1)[1].rstrip("x"))
        assert s.compression == claimed, s.name  # the name says the budget it asks for
        width, depth, _ = fit_width(s.arch, (1, 28, 28), 10, teacher / s.compression, s.depths, s.name)
        params = count_params(build_model(s.arch, (1, 28, 28), 10, width=width, depth=depth))
        assert abs(teacher / params - claimed) <= 0.1 * claimed, (s.name, teacher / params)


# --- end to end -----------------------------------------------------------------------------------

def _write(path: Path, content: dict) -> Path:
    path.write_text(yaml.safe_dump(content))
    return path


def _image_recipe(folder: Path, **overrides) -> dict:
    tiny = {"epochs": 2, "batch_size": 4, "lr": 0.01}
    return {"name": "pngs", "data": {"name": "imagefolder", "path": str(folder), "image_size": [8, 8],
                                     "transfer_samples": 64},
            "teacher": {"arch": "mobilenet2d", "width": 0.5, "depth": 2, "min_accuracy": 0.0, "train": tiny},
            "students": [{"name": "s", "arch": "mobilenet2d", "width": 0.125, "depth": 1}],
            "distill": {"train": tiny}, **overrides}


def _run_end_to_end(tmp_path: Path, recipe: dict) -> None:
    (tmp_path / "policy.yaml").write_text("min_retention: 0.01\n")
    recipe.update({"export": {"formats": ["onnx"], "quants": ["fp32"]}, "bench": {"targets": ["host-cpu"]},
                   "bundle": {"platforms": {"android": "onnx"}}, "gate": {"policy": "policy.yaml"}})
    r = run_cli("run", _write(tmp_path / "recipe.yaml", recipe), "--out", tmp_path / "out")
    assert r.returncode == 0, r.stderr + r.stdout
    manifest = json.loads((tmp_path / "out" / "bundles" / "android" / "manifest.json").read_text())
    assert manifest["model"]["file"].endswith(".onnx")
    assert (tmp_path / "out" / "bundles" / "android.zip").is_file()
    # the teacher learned the classes (chance is 1/3): inputs and labels reached training paired
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["teacher_accuracy"] > 0.5
    return manifest


@pytest.mark.heavy
def test_a_png_folder_runs_end_to_end(tmp_path):
    folder = image_folder(tmp_path / "pngs", classes=("a", "b", "c"), n=20, size=8)
    manifest = _run_end_to_end(tmp_path, _image_recipe(folder))
    assert manifest["input_shape"] == [1, 8, 8] and manifest["labels"] == ["a", "b", "c"]
    assert manifest["provenance"]["data"]["options"] == {"image_size": [8, 8], "channels": None}


@pytest.mark.heavy
def test_a_csv_table_runs_end_to_end(tmp_path):
    x, y = _table(90)
    p = write_csv(tmp_path / "rows.csv", ["f0", "f1", "f2", "f3", "kind"],
                  [[*r, c] for r, c in zip(x.tolist(), y)])
    tiny = {"epochs": 2, "batch_size": 4, "lr": 0.01}
    recipe = {"name": "table", "data": {"name": "csv", "path": str(p), "label_column": "kind",
                                        "transfer_samples": 64},
              "teacher": {"arch": "mlp", "width": 0.25, "min_accuracy": 0.0, "train": tiny},
              "students": [{"name": "s", "arch": "mlp", "width": 0.0625, "depth": 1}],
              "distill": {"train": tiny}}
    manifest = _run_end_to_end(tmp_path, recipe)
    assert manifest["input_shape"] == [1, 4] and manifest["labels"] == ["cat", "dog", "eel"]
    assert manifest["provenance"]["data"]["options"] == {"label_column": "kind"}
