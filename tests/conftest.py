from pathlib import Path

import numpy as np
import pytest
import yaml


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Each test session gets its own teacher-logit cache, never the user's."""
    monkeypatch.setenv("EDGEKD_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
    # and the packaged target profiles, never a host profile the user fitted (edgekd calibrate host)
    monkeypatch.setenv("EDGEKD_CONFIG_DIR", str(tmp_path_factory.getbasetemp() / "config"))


@pytest.fixture
def write_recipe(tmp_path):
    """Write a recipe YAML (a dict) into tmp_path and return its path."""

    def write(recipe: dict, name: str = "recipe.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(recipe))
        return path

    return write


def tiny_recipe(**overrides) -> dict:
    """A recipe that trains in seconds on MNIST-1D: small teacher, one student, few epochs."""
    r = {
        "name": "tiny", "seed": 0,
        "data": {"name": "mnist1d", "transfer_samples": 2000},
        "teacher": {"arch": "cnn1d", "width": 0.5, "min_accuracy": 0.5,
                    "train": {"epochs": 8, "batch_size": 128, "lr": 0.003}},
        "students": [{"name": "s", "arch": "cnn1d", "width": 0.125}],
        "distill": {"temperature": 4.0, "alpha": 0.1, "train": {"epochs": 6, "batch_size": 128, "lr": 0.003}},
    }
    for k, v in overrides.items():
        r[k] = v
    return r


@pytest.fixture
def npz_data(tmp_path):
    """A small separable 3-class signal dataset as an .npz file."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    x = rng.normal(0, 0.3, (300, 1, 16)).astype(np.float32)
    x[np.arange(300), 0, y * 5] += 3.0
    path = tmp_path / "data.npz"
    np.savez(path, x=x, y=y, labels=np.array(["a", "b", "c"]))
    return path
