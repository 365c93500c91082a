import numpy as np
import pytest
import torch

from edgekd.data import DATASETS, load_dataset
from edgekd.errors import InputError
from edgekd.models import MODELS, build_model, count_params


def test_mnist1d_standard_split_is_deterministic():
    a, b = load_dataset("mnist1d"), load_dataset("mnist1d")
    assert a.x_train.shape == (4000, 1, 40) and a.x_test.shape == (1000, 1, 40)
    assert a.fingerprint == b.fingerprint
    assert abs(float(a.x_train.mean())) < 1e-4 and abs(float(a.x_train.std()) - 1) < 1e-4


@pytest.mark.parametrize("seed,samples,split", [(42, 5000, 0.8), (10_000, 1230, 1.0), (7, 990, 0.5)])
def test_mnist1d_generator_is_the_packages_byte_for_byte(seed, samples, split):
    from mnist1d.data import get_dataset_args, make_dataset

    from edgekd.data.mnist1d import signals

    args = get_dataset_args()
    args.seed, args.num_samples, args.train_split = seed, samples, split
    ref = make_dataset(args)
    x, y = signals(args)
    cut = int(len(y) * split)
    np.testing.assert_array_equal(x[:cut], ref["x"])
    np.testing.assert_array_equal(y[:cut], ref["y"])
    np.testing.assert_array_equal(x[cut:], ref["x_test"])
    np.testing.assert_array_equal(y[cut:], ref["y_test"])


def test_mnist1d_transfer_set_is_fresh_and_seeded():
    d = load_dataset("mnist1d")
    t1, t2, t3 = d.transfer_set(100, 0), d.transfer_set(100, 0), d.transfer_set(100, 1)
    assert t1.shape == (100, 1, 40) and t1.dtype == np.float32
    np.testing.assert_array_equal(t1, t2)
    assert not np.allclose(t1, t3)
    # not copies of training rows
    assert min(np.abs(d.x_train - t1[0]).sum(axis=(1, 2))) > 1e-3


def test_digits_loads_images():
    d = load_dataset("digits")
    assert d.input_shape == (1, 8, 8) and d.num_classes == 10
    assert d.transfer_set(10, 0).shape == (10, 1, 8, 8)


def test_npz_records_labels_and_normalisation(npz_data):
    d = load_dataset("npz", npz_data)
    assert d.labels == ("a", "b", "c") and d.input_shape == (1, 16)
    assert len(d.x_train) == 240 and len(d.x_test) == 60
    raw = np.load(npz_data)["x"]
    assert d.mean == pytest.approx(float(raw.mean()), abs=0.05)  # the train split's mean: close to the file's
    assert abs(float(d.x_train.mean())) < 1e-4
    assert d.std > 0


@pytest.mark.parametrize("arrays, message", [
    ({"x": np.zeros((4, 3))}, "missing array 'y'"),
    ({"y": np.zeros(4)}, "missing array 'x'"),
    ({"x": np.zeros((4, 3)), "y": np.zeros(5)}, "'x' has 4 rows but 'y' has 5"),
])
def test_npz_bad_files_name_the_problem(tmp_path, arrays, message):
    p = tmp_path / "bad.npz"
    np.savez(p, **arrays)
    with pytest.raises(InputError, match=message) as e:
        load_dataset("npz", p)
    assert str(p) in str(e.value)


def test_npz_missing_and_corrupt_file(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_dataset("npz", tmp_path / "nope.npz")
    p = tmp_path / "junk.npz"
    p.write_bytes(b"not a zip")
    with pytest.raises(InputError, match="not a readable .npz"):
        load_dataset("npz", p)


def test_unknown_dataset_lists_the_choices():
    with pytest.raises(InputError, match="unknown dataset 'cifar'.*digits.*mnist1d, movie-reviews, npz"):
        load_dataset("cifar")


SHAPES = {"cnn1d": (1, 40), "mobilenet2d": (1, 8, 8), "mobilenet2d-s2": (1, 8, 8), "mlp": (1, 40),
          "transformer": (1, 40)}


@pytest.mark.parametrize("arch", MODELS.names())
def test_every_model_family_builds_and_scales_with_width(arch):
    shape = SHAPES[arch]
    small, big = build_model(arch, shape, 10, width=0.25), build_model(arch, shape, 10, width=1.0)
    x = torch.randn(3, *shape)
    assert small(x).shape == (3, 10) and big.features(x).shape == (3, big.feature_dim)
    assert count_params(small) < count_params(big)
    shallow, deep = build_model(arch, shape, 10, depth=1), build_model(arch, shape, 10, depth=3)
    assert count_params(shallow) < count_params(deep)


def test_transformer_takes_images_too():
    assert build_model("transformer", (1, 8, 8), 10, width=0.5)(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_model_rejects_wrong_input_rank():
    with pytest.raises(InputError, match="'cnn1d' takes signals"):
        build_model("cnn1d", (1, 8, 8), 10)


def test_registry_refuses_duplicates():
    with pytest.raises(ValueError, match="registered twice"):
        DATASETS.register("mnist1d")(lambda **_: None)
