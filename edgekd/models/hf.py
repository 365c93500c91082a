"""Text models from Hugging Face BERT-family folders (BERT, MiniLM): the folder's encoder in
edgekd's plain-PyTorch `BertClassifier` (edgekd.nets.text), as a teacher or as a student made of it.

    layers=[0, 2, 4]          every other layer and the embeddings copied (DistilBERT, Sanh et al. 2019)
    hidden=128, layers=2      narrow (TinyBERT-sized): the folder's embeddings cut to `hidden` dimensions
                              by SVD, fresh encoder layers
    vocab=[ids...]            the embedding keeps only these rows (the task's tokens, `bind_data`); a
                              table inside the graph sends every other id to [UNK]'s row
    positions=64              only the first positions keep an embedding (the sequence length a phone runs)
    embedding=64              the word table factorised (ALBERT, Lan et al. 2019): 64 numbers a token and
                              one projection to the hidden size, both from the student's table by SVD (its
                              best rank-64 approximation, after the vocabulary and width cuts)
    heads=6, intermediate=512 at the folder's width: each copied layer keeps its 6 heads and 512 feed-forward
                              units that contribute most (structured pruning, Michel et al. 2019; with
                              `init: teacher`, measured layer by layer on the student's own stack over
                              training rows, the cut heads' and units' mean output folded into the two
                              output biases; from the folder, by weight norms)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgekd.data.tokens import pretrained_folder, special_ids
from edgekd.errors import InputError
from edgekd.models.spec import SOURCES, read_state_dict
from edgekd.nets.text import BertClassifier
from edgekd.types import ModelSpec

FOLDER_FILES = ("config.json", "model.safetensors", "tokenizer.json")


@SOURCES.register("hf")
def _hf(spec: ModelSpec, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    kwargs = dict(spec.kwargs)
    if kwargs.get("vocab") == "task":
        raise InputError("model.kwargs.vocab 'task' is the task's token set, fixed when a student is "
                         "distilled (edgekd.models.hf.bind_data); give a list of token ids here")
    init = kwargs.pop("init", "folder")
    if init not in ("folder", "teacher"):
        raise InputError(f"model.kwargs.init is {init!r}; give 'folder' (the pretrained folder's layers) or "
                         "'teacher' (the fine-tuned teacher's, when it was made from the same folder)")
    if init == "teacher" and kwargs.get("hidden"):
        raise InputError("model.kwargs.init 'teacher' copies the teacher's layers, so the student keeps the "
                         "teacher's width: drop hidden (prune with heads, intermediate, vocab and embedding "
                         "instead), or init a narrower student from the folder")
    known = {"layers", "hidden", "heads", "intermediate", "vocab", "positions", "embedding"}
    if set(kwargs) - known:
        raise InputError(f"model.kwargs {sorted(set(kwargs) - known)} unknown for a Hugging Face folder; "
                         f"it takes {sorted(known)}")
    return from_folder(pretrained_folder(spec.folder, "model.folder"), num_classes, **kwargs)


def init_from_teacher(student: BertClassifier, teacher: nn.Module, layers: list[int] | None,
                      rows: np.ndarray | None = None) -> None:
    """DistilBERT's initialisation from the fine-tuned teacher itself (Sanh et al. 2019 take one layer
    in two of the teacher): its embeddings, the encoder layers `layers` (all when None) and its head.
    The teacher must be a text model of the same width (a folder's, fine-tuned by `edgekd teacher`).
    A student that keeps fewer tokens gets the teacher's rows of them (factorised by SVD when its table
    is). One that keeps fewer heads or feed-forward units per layer is pruned a layer at a time, on the
    student's own stack: each layer keeps those that add most to its output over `rows` (token rows
    (N, 2, L), the training split's) as it runs after the layers below it were pruned, and the mean of
    what it cuts joins its biases, so over those rows the mean output of its attention (on the layer's
    input) and of its feed-forward (behind the pruned attention), each before its add & norm, is the
    unpruned block's (by weight norms, and no bias change, without rows)."""
    if not isinstance(teacher, BertClassifier) or teacher.feature_dim != student.feature_dim:
        raise InputError("model.kwargs.init 'teacher': the teacher is not a text model of the student's "
                         "width (hidden); init the student from the folder instead (init: folder)")
    n_teacher = len(teacher.encoder.layer)
    keep = list(range(n_teacher)) if layers is None else list(layers)
    if any(not 0 <= i < n_teacher for i in keep):
        raise InputError(f"model.kwargs.layers {keep}: the teacher has {n_teacher} layers "
                         f"(indices 0..{n_teacher - 1})")
    if student.config["max_positions"] > teacher.config["max_positions"]:
        raise InputError(f"model.kwargs.positions {student.config['max_positions']}: the teacher keeps "
                         f"{teacher.config['max_positions']} positions; give positions: "
                         f"{teacher.config['max_positions']} or less")
    big = teacher.state_dict()
    state = {k: v for k, v in big.items()
             if k.startswith(("embeddings.", "head.")) and k != "embeddings.word_projection.weight"}
    state.update(_student_table(student, teacher))
    state.update(_renumbered_layers(big, keep))
    own = student.state_dict()
    if student.vocab_map is not None:
        state["vocab_map"] = own["vocab_map"]
    if len(student.encoder.layer) != len(keep):
        raise InputError(f"model.kwargs.layers {keep}: the student has {len(student.encoder.layer)} layers; "
                         "give one teacher layer index per student layer")
    _check_fits({k: v for k, v in state.items() if not k.startswith("encoder.")},
                {k: v for k, v in own.items() if not k.startswith("encoder.")})  # before any pruning
    small, wide = student.encoder.layer[0], teacher.encoder.layer[0]
    units = small.output.dense.in_features
    if (small.heads, small.head_dim, units) != (wide.heads, wide.head_dim, _units(teacher)):
        if small.head_dim != wide.head_dim:
            raise InputError(f"model.kwargs.init 'teacher': the teacher's heads are {wide.head_dim} wide, "
                             f"the student's {small.head_dim} (the teacher comes from another folder); init "
                             "the student from the folder instead (init: folder)")
        if rows is None:
            state.update(prune_layers(state, len(keep), wide.head_dim, small.heads, units))
        else:
            state = _pruned_on_rows(student, teacher, state, len(keep), rows)
    _check_fits(state, own)
    student.load_state_dict(state)


def _check_fits(state: dict[str, torch.Tensor], own: dict[str, torch.Tensor]) -> None:
    bad = sorted(k for k in set(state) | set(own) if k not in state or k not in own
                 or state[k].shape != own[k].shape)
    if bad:
        raise InputError(f"model.kwargs.init 'teacher': the teacher's weights do not fit the student "
                         f"({', '.join(bad[:3])}); init the student from the folder instead (init: folder)")


def _pruned_on_rows(student: BertClassifier, teacher: BertClassifier, state: dict[str, torch.Tensor],
                    n_layers: int, rows) -> dict[str, torch.Tensor]:
    """`state` (the student's tables, the teacher's kept layers unpruned) with its layers pruned one at a
    time to the student's heads and units, each measured on the stack below it as already pruned (and
    its units behind its pruned attention)."""
    config = {k: v for k, v in student.config.items() if k != "head_dim"}
    stack = BertClassifier(**{**config, "heads": teacher.config["heads"], "intermediate": _units(teacher),
                              "head_dim": teacher.encoder.layer[0].head_dim})
    stack.load_state_dict(state)
    small = student.encoder.layer[0]
    for j in range(n_layers):
        prefix = f"encoder.layer.{j}."
        # heads first, then the units measured behind the pruned attention
        for heads, units in ((small.heads, _units(teacher)), (small.heads, small.output.dense.in_features)):
            layer = {k[len(prefix):]: v for k, v in stack.state_dict().items() if k.startswith(prefix)}
            cut = prune_layer(layer, small.head_dim, heads, units, _contributions(stack, j, rows))
            stack.encoder.layer[j] = type(stack.encoder.layer[j])(
                student.feature_dim, heads, units, student.config["eps"], small.head_dim)
            stack.encoder.layer[j].load_state_dict(cut)
    return stack.state_dict()


def _units(model: BertClassifier) -> int:
    return model.encoder.layer[0].output.dense.in_features


def _student_table(student: BertClassifier, teacher: BertClassifier) -> dict[str, torch.Tensor]:
    """The student's word and position tables from the teacher's: the rows of the tokens the student
    keeps (the teacher's whole table when it keeps all), cut to its best rank-E approximation when the
    student's table is factorised, and the first positions."""
    ids = torch.arange(student.config["vocab_size"])  # student row r holds tokenizer id ids[r]
    if student.vocab_map is not None:  # a pruned vocabulary; [UNK]'s row holds [UNK]
        kept = torch.as_tensor(student.kept_ids(), dtype=torch.long)
        ids = torch.full((student.config["vocab_size"],), student.config["unk_id"], dtype=torch.long)
        ids[student.vocab_map[kept].long()] = kept
    emb = teacher.embeddings
    with torch.no_grad():
        if teacher.vocab_map is not None:
            ids = teacher.vocab_map[ids].long()
        table = emb.word_embeddings.weight[ids]
        if emb.word_projection is not None:
            table = emb.word_projection(table)
        return {"embeddings.position_embeddings.weight":
                emb.position_embeddings.weight[:student.config["max_positions"]],
                **_factorised(table, student.config.get("embedding"))}


def _factorised(table: torch.Tensor, embedding: int | None) -> dict[str, torch.Tensor]:
    """A word table (V, H) as the state a student's embeddings load: itself, or with `embedding` its best
    rank-E approximation (Eckart-Young): rows = its first SVD coordinates, projection = those axes."""
    if not embedding:
        return {"embeddings.word_embeddings.weight": table}
    axes = torch.linalg.svd(table, full_matrices=False)[2][:embedding].T  # (H, E)
    return {"embeddings.word_embeddings.weight": table @ axes, "embeddings.word_projection.weight": axes}


def _contributions(model: BertClassifier, j: int, rows, batch: int = 64) -> dict:
    """What every attention head and feed-forward unit of layer j adds to the layer's output over the
    real tokens of `rows` (N, 2, L): the mean norm of each head's share of the attention output (its
    context through its block of the output projection), the mean |activation| of each unit times its
    output column's norm, and the mean output vectors of both (what a cut one's bias correction adds)."""
    layer = model.encoder.layer[j]
    acc = {"tokens": 0, "head_norm": 0, "head_sum": 0, "unit_abs": 0, "unit_sum": 0}
    mask = None

    def attention_hook(module, args, _):
        ctx = args[0]
        b, length, _ = ctx.shape
        w = module.weight.view(module.out_features, layer.heads, layer.head_dim)
        part = torch.einsum("blhd,ohd->blho", ctx.view(b, length, layer.heads, layer.head_dim), w)[mask]
        acc["head_norm"] += part.norm(dim=-1).sum(0)  # part: (tokens, heads, H)
        acc["head_sum"] += part.sum(0)

    def unit_hook(module, args, _):
        a = args[0][mask]  # (tokens, F)
        acc["unit_abs"] += a.abs().sum(0)
        acc["unit_sum"] += a.sum(0)
        acc["tokens"] += a.shape[0]

    hooks = [layer.attention.output.dense.register_forward_hook(attention_hook),
             layer.output.dense.register_forward_hook(unit_hook)]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(rows), batch):
                x = torch.as_tensor(np.asarray(rows[start:start + batch]), dtype=torch.long)
                mask = x[:, 1].bool()
                model.features(x)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    n = max(acc["tokens"], 1)
    w_out = layer.output.dense.weight.detach()  # (H, F)
    return {"heads": acc["head_norm"] / n, "head_mean": acc["head_sum"] / n,  # (heads,), (heads, H)
            "units": acc["unit_abs"] / n * w_out.norm(dim=0),  # (F,)
            "unit_mean": acc["unit_sum"][None, :] / n * w_out}  # (H, F): each unit's mean output


def prune_layers(state: dict[str, torch.Tensor], n_layers: int, head_dim: int, heads: int,
                 units: int) -> dict[str, torch.Tensor]:
    """The encoder layers 0..n_layers-1 of `state`, each cut by weight norms (prune_layer)."""
    out = {}
    for i in range(n_layers):
        p = f"encoder.layer.{i}."
        layer = {k[len(p):]: v for k, v in state.items() if k.startswith(p)}
        out.update({p + k: v for k, v in prune_layer(layer, head_dim, heads, units).items()})
    return out


def prune_layer(layer: dict[str, torch.Tensor], head_dim: int, heads: int, units: int,
                stats: dict | None = None) -> dict[str, torch.Tensor]:
    """One encoder layer's weights (names inside the layer) cut to `heads` heads and `units` feed-forward
    units: those that contribute most by `stats` (edgekd.models.hf._contributions: what they added to the
    layer's output over some rows; the mean output of what is cut then joins the output projections'
    biases, so each block's mean output before its add & norm over those rows is kept), or without stats
    by weight norms (a head: its value rows times its output columns; a unit: its input row times its
    output column). Kept heads and units stay in their order."""
    wv, wo = layer["attention.self.value.weight"], layer["attention.output.dense.weight"]
    w_in, w_out = layer["intermediate.dense.weight"], layer["output.dense.weight"]
    n_heads = wo.shape[1] // head_dim
    if heads > n_heads or units > w_in.shape[0]:
        raise InputError(f"model.kwargs heads {heads} / intermediate {units}: the teacher's layers hold "
                         f"{n_heads} heads and {w_in.shape[0]} units; give at most those")
    if stats is None:
        head_score = (wv.view(n_heads, head_dim, -1).flatten(1).norm(dim=1)
                      * wo.view(wo.shape[0], n_heads, head_dim).transpose(0, 1).flatten(1).norm(dim=1))
        unit_score = w_in.norm(dim=1) * w_out.norm(dim=0)
    else:
        head_score, unit_score = stats["heads"], stats["units"]
    kept_heads = head_score.topk(heads).indices.sort().values
    kept_units = unit_score.topk(units).indices.sort().values
    cols = (kept_heads[:, None] * head_dim + torch.arange(head_dim)).flatten()
    out = dict(layer)
    for name in ("query", "key", "value"):
        out[f"attention.self.{name}.weight"] = layer[f"attention.self.{name}.weight"][cols]
        out[f"attention.self.{name}.bias"] = layer[f"attention.self.{name}.bias"][cols]
    out["attention.output.dense.weight"] = wo[:, cols]
    out["intermediate.dense.weight"] = w_in[kept_units]
    out["intermediate.dense.bias"] = layer["intermediate.dense.bias"][kept_units]
    out["output.dense.weight"] = w_out[:, kept_units]
    if stats is not None:  # what the cut heads and units added on average stays in as a constant
        cut_heads = torch.ones(n_heads, dtype=torch.bool)
        cut_heads[kept_heads] = False
        cut_units = torch.ones(w_in.shape[0], dtype=torch.bool)
        cut_units[kept_units] = False
        out["attention.output.dense.bias"] = (layer["attention.output.dense.bias"]
                                              + stats["head_mean"][cut_heads].sum(0))
        out["output.dense.bias"] = layer["output.dense.bias"] + stats["unit_mean"][:, cut_units].sum(1)
    return out


def bind_data(spec: ModelSpec, token_rows) -> ModelSpec:
    """A spec whose structure depends on the data, made concrete: `vocab: task` becomes the token ids
    the rows (N, 2, L) use (edgekd.nets.text keeps only those embedding rows), plus the specials."""
    if spec.kind != "hf" or spec.kwargs.get("vocab") != "task":
        return spec
    used = set()
    for i in range(0, len(token_rows), 4096):
        used.update(np.unique(np.asarray(token_rows[i:i + 4096])[:, 0]).tolist())
    used.update(special_ids(pretrained_folder(spec.folder, "model.folder")).values())
    return ModelSpec("hf", folder=spec.folder, kwargs={**spec.kwargs, "vocab": sorted(int(i) for i in used)})


def check_folder(folder: Path, where: str = "model.folder") -> dict:
    """The folder's BERT config; a missing file or another architecture is refused naming the fix."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such Hugging Face model folder ({where})")
    missing = [f for f in FOLDER_FILES if not (folder / f).is_file()]
    if missing:
        raise InputError(f"{folder}: Hugging Face folder lacks {', '.join(missing)} ({where}); copy the "
                         "whole folder (save_pretrained writes the model; the tokenizer's writes "
                         "tokenizer.json)")
    try:
        cfg = json.loads((folder / "config.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{folder / 'config.json'}: not JSON ({e})") from None
    if cfg.get("model_type") not in ("bert",) or cfg.get("position_embedding_type", "absolute") != "absolute":
        raise InputError(f"{folder / 'config.json'}: model_type {cfg.get('model_type')!r}; edgekd's text "
                         "models take BERT-family encoders (bert, MiniLM); convert or pick another folder")
    if cfg.get("hidden_act", "gelu") != "gelu":
        raise InputError(f"{folder / 'config.json'}: hidden_act {cfg.get('hidden_act')!r}; only 'gelu' "
                         "(exact GELU, as BERT) is built")
    return cfg


def folder_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The folder's encoder weights under this module's names (a `bert.` prefix dropped; pooler and
    position-id buffers ignored)."""
    state = read_state_dict(Path(folder) / "model.safetensors")
    out = {}
    for k, v in state.items():
        k = k.removeprefix("bert.")
        if k.startswith(("embeddings.", "encoder.")) and not k.endswith("position_ids"):
            out[k] = v
    return out


def from_folder(folder: Path, num_classes: int, *, layers: list[int] | int | None = None,
                hidden: int | None = None, heads: int | None = None, intermediate: int | None = None,
                vocab: list[int] | None = None, positions: int | None = None,
                embedding: int | None = None) -> BertClassifier:
    """The folder's encoder with a fresh head; with `layers` (indices) only those layers (DistilBERT's
    initialisation); with a smaller `hidden`, a narrow student whose embeddings are the folder's cut by
    SVD and whose layers are fresh; with `vocab`, only those tokenizer ids keep an embedding row; with
    `positions`, only the first positions (the sequence length the phone runs) keep theirs; with
    `embedding`, the word table is factorised into `embedding`-wide rows and a projection; at the
    folder's width with fewer `heads` or `intermediate` units, the copied layers are pruned to them by
    weight norms (prune_layers; init_from_teacher prunes the teacher's by measured contribution)."""
    cfg = check_folder(folder)
    big = folder_weights(folder)
    full_hidden, n_layers = cfg["hidden_size"], cfg["num_hidden_layers"]
    hidden = hidden or full_hidden
    narrow = hidden != full_hidden
    if narrow:  # fresh layers: a count
        if not isinstance(layers, int) or layers < 1:
            raise InputError(f"text student: a narrow student (hidden {hidden}) needs layers: a count of "
                             f"fresh layers, not {layers!r}")
        keep_layers, n_student_layers = [], layers
    else:  # the folder's own layers: indices
        if layers is not None and (not isinstance(layers, (list, tuple))
                                   or not all(isinstance(i, int) for i in layers)):
            raise InputError(f"model.kwargs.layers is {layers!r}: at the folder's width (hidden "
                             f"{full_hidden}) a student copies the folder's layers, so give their indices, "
                             "e.g. [0, 2, 4] (a count of fresh layers goes with a smaller hidden)")
        keep_layers = list(range(n_layers)) if layers is None else list(layers)
        if not keep_layers or any(not 0 <= i < n_layers for i in keep_layers):
            raise InputError(f"{folder}: layers {keep_layers} out of range: the encoder has {n_layers} "
                             f"layers (indices 0..{n_layers - 1})")
        n_student_layers = len(keep_layers)
    tokenizer_vocab, max_positions = cfg["vocab_size"], cfg["max_position_embeddings"]
    if positions is not None and not 1 <= positions <= max_positions:
        raise InputError(f"model.kwargs.positions is {positions}: the folder has {max_positions} positions; "
                         "give the sequence length (data.max_length) or less")
    if hidden > full_hidden:
        raise InputError(f"model.kwargs.hidden is {hidden}, wider than the folder's {full_hidden}; "
                         "a student is at most as wide as its folder")
    if embedding is not None and (not isinstance(embedding, int) or isinstance(embedding, bool)
                                  or not 1 <= embedding < hidden):
        raise InputError(f"model.kwargs.embedding is {embedding!r}: a factorised word table is narrower "
                         f"than the student's hidden size ({hidden}); give a count below it, e.g. "
                         f"{max(1, hidden // 4)}, or drop it for a plain table")
    words = big["embeddings.word_embeddings.weight"]  # (V, H)
    rows = torch.arange(tokenizer_vocab) if vocab is None else torch.as_tensor(sorted(set(vocab)))
    if vocab is not None and (not len(rows) or rows.min() < 0 or rows.max() >= tokenizer_vocab):
        raise InputError(f"model.kwargs.vocab holds ids outside the tokenizer's 0..{tokenizer_vocab - 1}; "
                         "use `vocab: task`, or ids of this folder's tokenizer")
    unk = special_ids(folder)["unk"] if vocab is not None else None
    for field, value in (("heads", heads), ("intermediate", intermediate)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise InputError(f"model.kwargs.{field} is {value!r}: give a whole number of at least 1")
    folder_heads, folder_units = cfg["num_attention_heads"], cfg["intermediate_size"]
    heads = heads or (folder_heads if not narrow else max(1, hidden // 64))
    intermediate = intermediate or (folder_units if not narrow else 4 * hidden)
    # at the folder's width, fewer heads or units than its layers hold: those layers pruned (prune_layers)
    pruned = not narrow and (heads, intermediate) != (folder_heads, folder_units)
    if pruned and not (1 <= heads <= folder_heads and 1 <= intermediate <= folder_units):
        raise InputError(f"model.kwargs heads {heads} / intermediate {intermediate}: a student copying the "
                         f"folder's layers keeps at most their {folder_heads} heads and {folder_units} "
                         "units; give fewer (or a smaller hidden for fresh layers)")
    model = BertClassifier(
        vocab_size=len(rows), hidden=hidden, layers=n_student_layers, heads=heads, intermediate=intermediate,
        num_classes=num_classes, max_positions=positions or max_positions, eps=cfg["layer_norm_eps"],
        tokenizer_vocab=tokenizer_vocab if vocab is not None else None, unk_id=unk, embedding=embedding,
        head_dim=full_hidden // folder_heads if pruned else None)
    state = model.state_dict()
    emb = {"embeddings.word_embeddings.weight": words[rows],
           "embeddings.position_embeddings.weight": big["embeddings.position_embeddings.weight"][:positions],
           "embeddings.token_type_embeddings.weight": big["embeddings.token_type_embeddings.weight"]}
    if narrow:  # one SVD basis of the word table projects words, positions and segment types alike
        _, _, vt = torch.linalg.svd(words, full_matrices=False)  # vt: (H, H)
        basis = vt[:hidden].T  # (H, h)
        emb = {k: v @ basis for k, v in emb.items()}
    # the student's own table (its rows, its width), factorised when asked
    emb.update(_factorised(emb["embeddings.word_embeddings.weight"], embedding))
    if not narrow:
        emb["embeddings.LayerNorm.weight"] = big["embeddings.LayerNorm.weight"]
        emb["embeddings.LayerNorm.bias"] = big["embeddings.LayerNorm.bias"]
        emb.update(_renumbered_layers(big, keep_layers))
        if pruned:
            emb.update(prune_layers(emb, n_student_layers, full_hidden // folder_heads, heads, intermediate))
    state.update(emb)
    if vocab is not None:
        table = torch.full((tokenizer_vocab,), _unk_row(unk, rows), dtype=torch.int32)
        table[rows] = torch.arange(len(rows), dtype=torch.int32)
        state["vocab_map"] = table
    model.load_state_dict(state)
    return model


def _renumbered_layers(state: dict[str, torch.Tensor], keep: list[int]) -> dict[str, torch.Tensor]:
    """Encoder layers `keep` of a state dict, numbered 0, 1, ... as a shallower encoder's."""
    out = {}
    for new, old in enumerate(keep):
        prefix = f"encoder.layer.{old}."
        out.update({f"encoder.layer.{new}." + k[len(prefix):]: v
                    for k, v in state.items() if k.startswith(prefix)})
    return out


def _unk_row(unk: int, rows: torch.Tensor) -> int:
    """The embedding row [UNK] got in a pruned vocabulary (every dropped id is read as [UNK])."""
    hit = (rows == unk).nonzero()
    if not len(hit):
        raise InputError(f"model.kwargs.vocab must keep [UNK] (id {unk}); `vocab: task` adds it")
    return int(hit[0, 0])
