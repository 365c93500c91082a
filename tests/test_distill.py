import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import tiny_recipe
from edgekd.checkpoint import load_checkpoint, save_checkpoint
from edgekd.data import load_dataset
from edgekd.distill import train as train_mod
from edgekd.distill.cache import cached_teacher_outputs
from edgekd.distill.stage import seeded_model
from edgekd.distill.train import accuracy, train
from edgekd.errors import InputError, TrainingError
from edgekd.models import build_model
from edgekd.types import ModelSpec
from helpers import run_cli, run_main

CNN_025 = ModelSpec.zoo("cnn1d", 0.25)


@pytest.fixture(scope="module")
def data():
    return load_dataset("mnist1d")


def _small_train(model, data, state_path=None, epochs=2, n=512, **kw):
    return train(model, data.x_train[:n], data.y_train[:n], epochs=epochs, batch_size=128, lr=3e-3,
                 weight_decay=0.0, seed=3, state_path=state_path, **kw)


@pytest.mark.heavy
def test_training_is_deterministic_and_learns(data):
    m1, m2 = seeded_model(CNN_025, data, 7), seeded_model(CNN_025, data, 7)
    torch.manual_seed(123)  # the batch order must come from the training seed, not the caller's state
    _small_train(m1, data, n=4000)
    _small_train(m2, data, n=4000)
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)
    assert accuracy(m1, data.x_test, data.y_test) > 0.5  # chance is 0.1


def test_resume_after_interruption_gives_the_same_weights(data, tmp_path, monkeypatch):
    reference = seeded_model(CNN_025, data, 1)
    _small_train(reference, data, epochs=3)

    real_save = train_mod._save_state

    def save_then_crash(path, model, proj, opt, sched, gen, epoch, *rest):
        real_save(path, model, proj, opt, sched, gen, epoch, *rest)
        if epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_mod, "_save_state", save_then_crash)
    state = tmp_path / "state.pt"
    with pytest.raises(KeyboardInterrupt):
        _small_train(seeded_model(CNN_025, data, 1), data, state, epochs=3)
    monkeypatch.setattr(train_mod, "_save_state", real_save)
    resumed = seeded_model(CNN_025, data, 1)
    stats = _small_train(resumed, data, state, epochs=3)
    assert stats.resumed_from_epoch == 1
    for a, b in zip(reference.state_dict().values(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b)


def test_nan_loss_stops_with_a_clear_error(data):
    x = data.x_train[:256].copy()
    x[5, 0, 3] = np.nan
    with pytest.raises(TrainingError, match="loss became nan at epoch 1.*lower the learning rate"):
        train(build_model("mlp", (1, 40), 10, width=0.1), x, data.y_train[:256], epochs=1, batch_size=256,
              lr=1e-3, weight_decay=0.0, seed=0)


@pytest.mark.parametrize("terms", [{"hint_weight": 1.0}, {"cosine_weight": 1.0},
                                   {"hint_weight": 1.0, "cosine_weight": 1.0}])
def test_feature_loss_terms_change_what_the_student_learns(data, terms):
    """Each feature term must reach the weights: deleting it from the loss makes this test fail."""
    torch.manual_seed(0)
    teacher = build_model("cnn1d", (1, 40), 10, width=0.5)
    logits, feats, _ = cached_teacher_outputs(teacher, "t", data.x_train[:256], None)

    def student(**kw):
        torch.manual_seed(1)
        m = build_model("cnn1d", (1, 40), 10, width=0.2)
        stats = train(m, data.x_train[:256], data.y_train[:256], epochs=1, batch_size=128, lr=1e-3,
                      weight_decay=0.0, seed=0, teacher_logits=logits, teacher_features=feats, **kw)
        assert np.isfinite(stats.final_loss)
        return torch.cat([p.detach().flatten() for p in m.parameters()])

    plain, with_terms = student(), student(**terms)
    assert not torch.allclose(plain, with_terms), f"{terms} did not change the student's features"


def test_transfer_set_cache_is_keyed_by_x_unlabeled_and_rebuilds_bad_entries(tmp_path):
    from edgekd.data import load_dataset as load
    from edgekd.distill.cache import cached_array
    from edgekd.distill.stage import transfer_inputs

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(60, 1, 8)).astype(np.float32), np.arange(60) % 3
    np.savez(tmp_path / "a.npz", x=x, y=y, x_unlabeled=rng.normal(size=(40, 1, 8)).astype(np.float32))
    np.savez(tmp_path / "b.npz", x=x, y=y, x_unlabeled=rng.normal(size=(40, 1, 8)).astype(np.float32))
    a, b = load("npz", tmp_path / "a.npz"), load("npz", tmp_path / "b.npz")
    assert a.fingerprint != b.fingerprint  # students and caches of a and b can never be confused
    ta, tb = transfer_inputs(a, 30, 0, tmp_path / "c"), transfer_inputs(b, 30, 0, tmp_path / "c")
    assert not np.array_equal(ta, tb)
    # a poisoned entry (rows of another width, or garbage) is rebuilt, never fatal
    made = cached_array(tmp_path / "c", "k", lambda: np.zeros((3, 1, 9), np.float32))
    assert made.shape == (3, 1, 9)
    rebuilt = cached_array(tmp_path / "c", "k", lambda: np.ones((3, 1, 8), np.float32), row_shape=(1, 8))
    assert rebuilt.shape == (3, 1, 8) and rebuilt.sum() == 24
    next((tmp_path / "c" / "arrays").glob("k.npy")).write_bytes(b"garbage")
    assert cached_array(tmp_path / "c", "k", lambda: np.ones((2, 1, 8)), row_shape=(1, 8)).shape == (2, 1, 8)


def test_a_failed_training_leaves_no_resume_state(data, tmp_path):
    x = data.x_train[:256].copy()
    x[5, 0, 3] = np.nan
    state = tmp_path / "s.state.pt"
    with pytest.raises(TrainingError):
        train(build_model("mlp", (1, 40), 10, width=0.1), x, data.y_train[:256], epochs=2, batch_size=128,
              lr=1e-3, weight_decay=0.0, seed=0, state_path=state)
    assert not state.exists()


def test_logit_cache_hits_on_second_call_and_rejects_damage(data, tmp_path):
    teacher = build_model("cnn1d", (1, 40), 10, width=0.25).eval()
    x = data.x_train[:300]
    l1, f1, hit1 = cached_teacher_outputs(teacher, "abc", x, tmp_path)
    l1 = np.array(l1)  # a copy: the test damages the mapped file in place below
    l2, f2, hit2 = cached_teacher_outputs(teacher, "abc", x, tmp_path)
    assert (hit1, hit2) == (False, True)
    np.testing.assert_array_equal(l1, l2)
    with torch.no_grad():
        np.testing.assert_allclose(l1, teacher(torch.from_numpy(x)).numpy(), atol=1e-5)
    assert isinstance(l2, np.memmap) and not l2.flags.writeable  # read from disk as batches need it
    del l2, f2, f1
    _, _, hit_other = cached_teacher_outputs(teacher, "other-teacher", x, tmp_path)
    assert not hit_other
    for entry in (tmp_path / "logits").iterdir():
        (entry / "logits.npy").write_bytes(b"garbage")
    l3, _, hit3 = cached_teacher_outputs(teacher, "abc", x, tmp_path)
    assert not hit3
    np.testing.assert_array_equal(l1, l3)
    for entry in (tmp_path / "logits").iterdir():  # a short entry (rows missing) is not trusted either
        np.save(entry / "features.npy", np.zeros((10, 3), np.float32))
    assert not cached_teacher_outputs(teacher, "abc", x, tmp_path)[2]


def test_checkpoint_roundtrip_and_corruption(data, tmp_path):
    model = build_model("transformer", (1, 40), 10, width=0.25)
    ckpt = save_checkpoint(model, tmp_path / "ck", name="t", role="student", arch="transformer", width=0.25,
                           depth=None, input_shape=(1, 40), labels=data.labels, mean=0.0, std=1.0,
                           data_fingerprint="f", accuracy=None)
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())
    # the weights are as readable as model.json (a shared run folder), not 0600 as safetensors writes them
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "ck").iterdir()}
    assert modes["model.safetensors"] == modes["model.json"], modes
    loaded, model2 = load_checkpoint(tmp_path / "ck")
    assert loaded.params == ckpt.params and loaded.labels == data.labels
    x = torch.from_numpy(data.x_test[:4])
    torch.testing.assert_close(model.eval()(x), model2(x))

    (tmp_path / "ck" / "model.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(InputError, match="model.safetensors: corrupt weights file"):
        load_checkpoint(tmp_path / "ck")
    (tmp_path / "ck" / "model.json").write_text("{nope")
    with pytest.raises(InputError, match="model.json: corrupt checkpoint metadata"):
        load_checkpoint(tmp_path / "ck")
    with pytest.raises(InputError, match="not an edgekd checkpoint"):
        load_checkpoint(tmp_path)


@pytest.fixture(scope="module")
def distilled(tmp_path_factory):
    """One real `edgekd distill` run of the tiny recipe, shared by the tests below."""
    import yaml

    d = tmp_path_factory.mktemp("distill")
    recipe = d / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe()))
    out = d / "out"
    r = run_cli("distill", recipe, "--out", out)
    assert r.returncode == 0, r.stderr
    return recipe, out


@pytest.mark.heavy
def test_distill_cli_writes_metrics(distilled):
    _, out = distilled
    m = json.loads((out / "metrics.json").read_text())
    for key in ("teacher_accuracy", "student_accuracy", "retention", "teacher_params", "student_params",
                "compression"):
        assert key in m
    assert m["retention"] == pytest.approx(m["student_accuracy"] / m["teacher_accuracy"])
    assert m["compression"] == pytest.approx(m["teacher_params"] / m["student_params"])
    assert m["student_accuracy"] > 0.5 and m["compression"] > 3
    ckpt, _ = load_checkpoint(out / "students" / "s")
    assert ckpt.role == "student" and ckpt.labels == tuple(str(i) for i in range(10))
    assert not list(out.rglob("*.state.pt")), "resume state must be removed once a model is saved"


@pytest.mark.heavy
def test_distill_rerun_reuses_teacher_and_students(distilled):
    recipe, out = distilled
    before = {p: p.stat().st_mtime_ns for p in out.rglob("model.safetensors")}
    first = json.loads((out / "metrics.json").read_text())["students"][0]
    r = run_cli("distill", recipe, "--out", out)
    assert r.returncode == 0, r.stderr
    assert {p: p.stat().st_mtime_ns for p in out.rglob("model.safetensors")} == before
    # the reused student keeps the throughput of the run that trained it (not 0), and says it was reused
    again = json.loads((out / "metrics.json").read_text())["students"][0]
    assert first["trained_here"] and not again["trained_here"]
    assert again["train_samples_per_s"] == first["train_samples_per_s"] > 0


def test_a_recipe_record_loads_back_as_the_same_recipe():
    """Run folders, bundles and searches keep the recipe as JSON: a budget student's default width (not
    its width) must not be written, or the record cannot be read back."""
    from edgekd.config import Recipe, load_recipe

    r = Recipe.model_validate({**tiny_recipe(), "students": [
        {"name": "a", "compression": 10, "depths": [2, 3]}, {"name": "b", "width": 0.3}, {"name": "c"}]})
    d = json.loads(json.dumps(r.record()))
    assert "width" not in d["students"][0] and d["students"][1]["width"] == 0.3
    assert Recipe.model_validate(d) == r
    # as every stage gets its recipe: through load_recipe, which resolves each student's model
    for name in ("mnist1d.yaml", "fashion-mnist.yaml"):
        loaded, _ = load_recipe(Path(__file__).parents[1] / "edgekd" / "recipes" / name)
        assert Recipe.model_validate(json.loads(json.dumps(loaded.record()))) == loaded, name


@pytest.mark.heavy
def test_teacher_below_floor_is_refused(distilled, write_recipe, tmp_path):
    _, out = distilled
    rec = write_recipe(tiny_recipe(teacher={"checkpoint": str(out / "teacher"), "min_accuracy": 0.9999}))
    r = run_cli("distill", rec, "--out", tmp_path / "o")
    assert r.returncode != 0
    assert "below the floor teacher.min_accuracy=0.9999" in r.stderr


@pytest.mark.heavy
def test_teacher_with_other_label_count_is_refused(distilled, write_recipe, tmp_path):
    _, out = distilled
    three_classes = tmp_path / "three.npz"
    np.savez(three_classes, x=np.random.default_rng(0).normal(size=(60, 1, 40)), y=np.arange(60) % 3)
    rec = write_recipe(tiny_recipe(data={"name": "npz", "path": str(three_classes)},
                                   teacher={"checkpoint": str(out / "teacher")}))
    r = run_cli("distill", rec, "--out", tmp_path / "o")
    assert r.returncode == 2
    assert "the teacher predicts 10 classes (field 'labels') but dataset 'npz' has 3" in r.stderr
    assert not (tmp_path / "o").exists()
    rec = write_recipe(tiny_recipe(data={"name": "digits"}, teacher={"checkpoint": str(out / "teacher")}))
    r = run_cli("distill", rec, "--out", tmp_path / "o")
    assert r.returncode == 2 and "the teacher takes inputs of shape [1, 40] (field 'input_shape')" in r.stderr


@pytest.mark.heavy
def test_teacher_cli_loads_a_given_teacher(distilled, write_recipe, tmp_path):
    _, out = distilled
    rec = write_recipe(tiny_recipe(teacher={"checkpoint": str(out / "teacher"), "min_accuracy": 0.5}))
    r = run_cli("teacher", rec, "--out", tmp_path / "t")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["teacher_accuracy"] == pytest.approx(
        json.loads((out / "metrics.json").read_text())["teacher_accuracy"])


@pytest.mark.parametrize("recipe, message", [
    (None, "no such recipe file"),
    ("students: [", "not valid YAML"),
    ("- a\n- b\n", "must be a YAML mapping"),
    ({"students": [{"name": "s"}], "teachr": {}}, "teachr: unknown field"),
    ({"students": [{"name": "s"}], "distill": {"temperature": -1}},
     "distill.temperature: Input should be greater than 0"),
    ({"students": [{"name": "s"}], "data": {"name": "imagenet"}}, "unknown dataset 'imagenet'"),
    ({"students": [{"name": "s", "arch": "resnet"}]}, "students.s: unknown model 'resnet'"),
    ({"students": [{"name": "s", "train": {"epoch": 3}}]}, "students.0.train.epoch: unknown field"),
    ({"students": [{"name": "s"}], "teacher": {"checkpoint": "nowhere"}},
     "nowhere: no such checkpoint directory"),
    ({"students": [{"name": "s"}], "data": {"name": "npz", "path": "missing.npz"}},
     "missing.npz: no such file"),
])
def test_bad_recipes_fail_cleanly(tmp_path, recipe, message, capsys):
    import yaml

    path = tmp_path / "r.yaml"
    if recipe is not None:
        path.write_text(recipe if isinstance(recipe, str) else yaml.safe_dump(recipe))
    out = tmp_path / "out"
    code, err = run_main(["distill", path, "--out", out], capsys)
    assert code == 2, err
    assert message in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.heavy
def test_corrupt_teacher_checkpoint_fails_cleanly(distilled, write_recipe, tmp_path):
    _, out = distilled
    bad = tmp_path / "bad_teacher"
    shutil.copytree(out / "teacher", bad)
    (bad / "model.safetensors").write_bytes(b"junk")
    rec = write_recipe(tiny_recipe(teacher={"checkpoint": str(bad)}))
    r = run_cli("distill", rec, "--out", tmp_path / "o")
    assert r.returncode == 2 and "corrupt weights file" in r.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.heavy
def test_npz_recipe_end_to_end(npz_data, write_recipe, tmp_path):
    rec = write_recipe({
        "data": {"name": "npz", "path": str(npz_data), "transfer_samples": 500},
        "teacher": {"arch": "mlp", "width": 0.25, "min_accuracy": 0.6,
                    "train": {"epochs": 10, "batch_size": 64}},
        "students": [{"name": "tiny", "arch": "mlp", "width": 0.05, "depth": 1}],
        "distill": {"train": {"epochs": 3, "batch_size": 64}},
    })
    r = run_cli("distill", rec, "--out", tmp_path / "o")
    assert r.returncode == 0, r.stderr
    ckpt, _ = load_checkpoint(tmp_path / "o" / "students" / "tiny")
    assert ckpt.labels == ("a", "b", "c") and ckpt.input_shape == (1, 16)


@pytest.mark.heavy
def test_a_student_can_have_its_own_training_budget(tmp_path):
    """students[].train overrides distill.train field by field; the student is trained with exactly that."""
    from edgekd.config import Recipe
    from edgekd.distill import distill_student
    from edgekd.pipeline import distill_stage, load_data, teacher_stage

    recipe = Recipe.model_validate(tiny_recipe(
        teacher={"arch": "cnn1d", "width": 0.25, "min_accuracy": 0.3,
                 "train": {"epochs": 2, "batch_size": 128}},
        students=[{"name": "plain", "arch": "cnn1d", "width": 0.125},
                  {"name": "longer", "arch": "cnn1d", "width": 0.125, "train": {"epochs": 1}}]))
    plain, longer = recipe.students
    assert recipe.student_train(plain) == recipe.distill.train
    assert recipe.student_train(longer).model_dump() == {**recipe.distill.train.model_dump(), "epochs": 1}

    data = load_data(recipe)
    distill_stage(recipe, tmp_path / "run", data)
    teacher, teacher_model = teacher_stage(recipe, data, tmp_path / "run")
    d = recipe.distill
    by_hand = distill_student(data, teacher, teacher_model, tmp_path / "by-hand", name="longer",
                              spec=ModelSpec.zoo("cnn1d", 0.125), temperature=d.temperature, alpha=d.alpha,
                              transfer_samples=recipe.data.transfer_samples, cache_dir=None, seed=recipe.seed,
                              epochs=1, batch_size=128, lr=0.003, weight_decay=0.0)
    sha = {n: load_checkpoint(tmp_path / "run" / "students" / n)[0].weights_sha256
           for n in ("plain", "longer")}
    assert sha["longer"] == load_checkpoint(by_hand.checkpoint)[0].weights_sha256
    assert sha["plain"] != sha["longer"]


def test_batches_from_chained_memory_maps_train_exactly_like_arrays_in_memory(data, tmp_path):
    """The loader reads rows a batch at a time from memory maps (a chain of the labelled set and the
    transfer set); the student it trains is the one whole in-memory arrays would give."""
    from edgekd.distill.batches import Chain

    x, y = data.x_train[:384], data.y_train[:384]
    np.save(tmp_path / "a.npy", x[:256])
    np.save(tmp_path / "b.npy", x[256:])
    chained = Chain(np.load(tmp_path / "a.npy", mmap_mode="r"), np.load(tmp_path / "b.npy", mmap_mode="r"))
    idx = np.array([300, 2, 255, 256, 383, 0])
    np.testing.assert_array_equal(chained[idx], x[idx])
    m1, m2 = seeded_model(CNN_025, data, 5), seeded_model(CNN_025, data, 5)
    _small_train(m1, data, n=384)
    train(m2, chained, Chain(y[:256], y[256:]), epochs=2, batch_size=128, lr=3e-3, weight_decay=0.0, seed=3,
          workers=0)
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)


def test_augmentation_changes_the_batches_deterministically_and_needs_an_online_teacher(data):
    from edgekd.distill.batches import Augment

    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4)
    aug = Augment(crop=1, flip=True)
    a = aug(x, torch.Generator().manual_seed(0))
    b = aug(x, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape == x.shape and not torch.equal(a, x)
    with pytest.raises(ValueError, match="augmentation needs the teacher"):
        train(build_model("mlp", (1, 40), 10, width=0.1), data.x_train[:8], data.y_train[:8], epochs=1,
              batch_size=8, lr=1e-3, weight_decay=0.0, seed=0, teacher_logits=np.zeros((8, 10), np.float32),
              augment=aug)


def test_teacher_augment_trains_another_teacher_and_is_refused_on_signals(tmp_path):
    """teacher.augment changes what the teacher learns from, so it is part of the teacher's key; on
    data that are not images it is refused with the field named."""
    from edgekd.config import Recipe
    from edgekd.pipeline import teacher_stage

    digits = load_dataset("digits")
    base = tiny_recipe(data={"name": "digits"},
                       teacher={"arch": "mobilenet2d", "width": 0.25, "depth": 1, "min_accuracy": 0.0,
                                "train": {"epochs": 1, "batch_size": 256, "lr": 3e-3, "weight_decay": 0.0}})
    plain, _ = teacher_stage(Recipe.model_validate(base), digits, tmp_path / "a")
    base["teacher"]["augment"] = {"crop": 1, "flip": True}
    augmented, _ = teacher_stage(Recipe.model_validate(base), digits, tmp_path / "b")
    key = lambda c: json.loads((c.path / "model.json").read_text())["provenance"]["key"]  # noqa: E731
    assert key(plain) != key(augmented)
    assert load_checkpoint(plain.path)[0].weights_sha256 != load_checkpoint(augmented.path)[0].weights_sha256
    signals = tiny_recipe(teacher={"augment": {"flip": True}, "min_accuracy": 0.0})
    with pytest.raises(InputError, match="teacher.augment crops and flips images.*remove teacher.augment"):
        teacher_stage(Recipe.model_validate(signals), load_dataset("mnist1d"), tmp_path / "c")
