"""A BERT-family sentence classifier in plain PyTorch: what a Hugging Face BERT folder (BERT, MiniLM,
all-MiniLM-L6-v2) computes, mean-pooled, with a linear head, built from layers every converter takes.

Why not `transformers.BertModel` itself: its mask builder (`masking_utils`, transformers 5) calls
`new_ones`, which coremltools cannot convert, and its graph is not ours to keep stable. This module
takes the folder's weights under the same names (`embeddings.word_embeddings.weight`,
`encoder.layer.N.attention.self.query.weight`, ...) and matches `BertModel`'s last hidden state
(tests/test_text.py checks it against transformers on a random BERT).

Inputs in edgekd are token rows `x` (B, 2, L) of integers: token ids, then the attention mask (1 = a
token, 0 = padding). The exported graph takes them as two int32 inputs, `input_ids` and
`attention_mask` (`TextWithProbabilities`).

Students (Sanh et al. 2019, DistilBERT; Jiao et al. 2020, TinyBERT):
    layers=[0, 2, 4]          every other layer and the embeddings copied from the folder
    hidden=256, layers=2      narrow: the folder's embeddings cut to `hidden` dimensions by SVD,
                              fresh encoder layers
    vocab=[ids...]            the embedding keeps only these rows (the task's tokens); a lookup table
                              (`vocab_map`, int32, one entry per tokenizer id) sends every other id to [UNK]
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from edgekd.errors import InputError

# -1e4, not float32's minimum: the mask bias must survive fp16 (Core ML, the Neural Engine) without
# turning a fully padded row into NaN; exp(-1e4) is 0 in both precisions, as in the original BERT.
MASK_BIAS = -10000.0
FOLDER_FILES = ("config.json", "model.safetensors", "tokenizer.json")


class _Embeddings(nn.Module):
    def __init__(self, vocab: int, hidden: int, positions: int, eps: float):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, hidden)
        self.position_embeddings = nn.Embedding(positions, hidden)
        self.token_type_embeddings = nn.Embedding(2, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # (B, L) -> (B, L, H)
        length = ids.shape[1]
        pos = self.position_embeddings.weight[:length]  # (L, H)
        h = self.word_embeddings(ids) + pos + self.token_type_embeddings.weight[0]  # one segment: type 0
        return self.LayerNorm(h)


class _SelfAttention(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.query, self.key, self.value = (nn.Linear(hidden, hidden) for _ in range(3))


class _Dense(nn.Module):
    def __init__(self, cin: int, cout: int, eps: float | None):
        super().__init__()
        self.dense = nn.Linear(cin, cout)
        if eps is not None:
            self.LayerNorm = nn.LayerNorm(cout, eps=eps)


class _Attention(nn.Module):
    def __init__(self, hidden: int, eps: float):
        super().__init__()
        self.self = _SelfAttention(hidden)
        self.output = _Dense(hidden, hidden, eps)


class _Layer(nn.Module):
    """One post-LayerNorm BERT layer: attention, add & norm, GELU feed-forward, add & norm."""

    def __init__(self, hidden: int, heads: int, intermediate: int, eps: float):
        super().__init__()
        self.heads = heads
        self.attention = _Attention(hidden, eps)
        self.intermediate = _Dense(hidden, intermediate, None)
        self.output = _Dense(intermediate, hidden, eps)

    def forward(self, h: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:  # (B, L, H), (B, 1, 1, L)
        b, length, dim = h.shape
        d = dim // self.heads
        att = self.attention.self

        def split(t):  # (B, L, H) -> (B, heads, L, d)
            return t.reshape(b, length, self.heads, d).transpose(1, 2)

        q, k, v = split(att.query(h)), split(att.key(h)), split(att.value(h))
        scores = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(d)) + bias  # (B, heads, L, L)
        ctx = torch.matmul(scores.softmax(-1), v).transpose(1, 2).reshape(b, length, dim)
        out = self.attention.output
        h = out.LayerNorm(out.dense(ctx) + h)
        ff = self.output.dense(F.gelu(self.intermediate.dense(h)))
        return self.output.LayerNorm(ff + h)


class _Encoder(nn.Module):
    def __init__(self, layers: int, hidden: int, heads: int, intermediate: int, eps: float):
        super().__init__()
        self.layer = nn.ModuleList(_Layer(hidden, heads, intermediate, eps) for _ in range(layers))


class BertClassifier(nn.Module):
    """Token rows (B, 2, L) -> class logits (B, C); `features` is the mean-pooled last hidden state
    (B, H), the sentence embedding the head (and the DistilBERT cosine loss) reads."""

    text_inputs = True  # token rows in; the exporters give the graph input_ids and attention_mask

    def __init__(self, *, vocab_size: int, hidden: int, layers: int, heads: int, intermediate: int,
                 num_classes: int, max_positions: int = 512, eps: float = 1e-12,
                 tokenizer_vocab: int | None = None):
        super().__init__()
        if hidden % heads:
            raise InputError(f"text model: hidden size {hidden} is not a multiple of its {heads} heads")
        self.config = dict(vocab_size=vocab_size, hidden=hidden, layers=layers, heads=heads,
                           intermediate=intermediate, num_classes=num_classes, max_positions=max_positions,
                           eps=eps, tokenizer_vocab=tokenizer_vocab)
        self.embeddings = _Embeddings(vocab_size, hidden, max_positions, eps)
        self.encoder = _Encoder(layers, hidden, heads, intermediate, eps)
        self.head = nn.Linear(hidden, num_classes)
        if tokenizer_vocab is not None:  # a pruned vocabulary: tokenizer id -> embedding row
            self.register_buffer("vocab_map", torch.zeros(tokenizer_vocab, dtype=torch.int32))
        else:
            self.vocab_map = None

    @property
    def feature_dim(self) -> int:
        return self.head.in_features

    def rebuild_spec(self):
        """How a checkpoint rebuilds this network without the folder it came from: its constructor."""
        from edgekd.types import ModelSpec

        return ModelSpec("factory", factory="edgekd.nets.text:bert_classifier", kwargs=dict(self.config))

    def hidden_states(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """ids, mask: (B, L) integers -> the last hidden state (B, L, H)."""
        if self.vocab_map is not None:
            ids = self.vocab_map[ids.long()]
        h = self.embeddings(ids.long())
        bias = (1.0 - mask.to(h.dtype))[:, None, None, :] * MASK_BIAS  # (B, 1, 1, L)
        for layer in self.encoder.layer:
            h = layer(h, bias)
        return h

    def pooled(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # -> (B, H)
        h = self.hidden_states(ids, mask)
        m = mask.to(h.dtype).unsqueeze(-1)  # (B, L, 1)
        return (h * m).sum(1) / m.sum(1).clamp(min=1e-9)

    def features(self, x: torch.Tensor) -> torch.Tensor:  # (B, 2, L) -> (B, H)
        return self.pooled(x[:, 0], x[:, 1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 2, L) -> (B, C)
        return self.head(self.features(x))


class TextWithProbabilities(nn.Module):
    """The exported text graph: input_ids (B, L) and attention_mask (B, L), int32 -> probabilities (B, C)."""

    def __init__(self, model: BertClassifier):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model.head(self.model.pooled(input_ids, attention_mask)).softmax(-1)


def bert_classifier(**config) -> BertClassifier:
    """The factory a text checkpoint's spec names (`edgekd.nets.text:bert_classifier`)."""
    return BertClassifier(**config)


# --- Hugging Face folders


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
    from edgekd.models.spec import read_state_dict

    state = read_state_dict(Path(folder) / "model.safetensors")
    out = {}
    for k, v in state.items():
        k = k.removeprefix("bert.")
        if k.startswith(("embeddings.", "encoder.")) and not k.endswith("position_ids"):
            out[k] = v
    return out


def from_folder(folder: Path, num_classes: int, *, layers: list[int] | int | None = None,
                hidden: int | None = None, heads: int | None = None, intermediate: int | None = None,
                vocab: list[int] | None = None, positions: int | None = None) -> BertClassifier:
    """The folder's encoder with a fresh head; with `layers` (indices) only those layers (DistilBERT's
    initialisation); with a smaller `hidden`, a narrow student whose embeddings are the folder's cut by
    SVD and whose layers are fresh; with `vocab`, only those tokenizer ids keep an embedding row; with
    `positions`, only the first positions (the sequence length the phone runs) keep theirs."""
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
        keep_layers = list(range(n_layers)) if layers is None else [int(i) for i in layers]
        if not keep_layers or any(not 0 <= i < n_layers for i in keep_layers):
            raise InputError(f"{folder}: layers {keep_layers} out of range: the encoder has {n_layers} "
                             f"layers (indices 0..{n_layers - 1})")
        n_student_layers = len(keep_layers)
    tokenizer_vocab = cfg["vocab_size"]
    words = big["embeddings.word_embeddings.weight"]  # (V, H)
    rows = torch.arange(tokenizer_vocab) if vocab is None else torch.as_tensor(sorted(set(vocab)))
    model = BertClassifier(
        vocab_size=len(rows), hidden=hidden, layers=n_student_layers,
        heads=heads or (cfg["num_attention_heads"] if not narrow else max(1, hidden // 64)),
        intermediate=intermediate or (cfg["intermediate_size"] if not narrow else 4 * hidden),
        num_classes=num_classes, max_positions=positions or cfg["max_position_embeddings"],
        eps=cfg["layer_norm_eps"],
        tokenizer_vocab=tokenizer_vocab if vocab is not None else None)
    state = model.state_dict()
    emb = {"embeddings.word_embeddings.weight": words[rows],
           "embeddings.position_embeddings.weight": big["embeddings.position_embeddings.weight"][:positions],
           "embeddings.token_type_embeddings.weight": big["embeddings.token_type_embeddings.weight"]}
    if narrow:  # one SVD basis of the word table projects words, positions and segment types alike
        if hidden > full_hidden:
            raise InputError(f"text student: hidden {hidden} is wider than the folder's {full_hidden}")
        _, _, vt = torch.linalg.svd(words, full_matrices=False)  # vt: (H, H)
        basis = vt[:hidden].T  # (H, h)
        emb = {k: v @ basis for k, v in emb.items()}
    else:
        emb["embeddings.LayerNorm.weight"] = big["embeddings.LayerNorm.weight"]
        emb["embeddings.LayerNorm.bias"] = big["embeddings.LayerNorm.bias"]
        for new, old in enumerate(keep_layers):
            prefix = f"encoder.layer.{old}."
            for k, v in big.items():
                if k.startswith(prefix):
                    emb[f"encoder.layer.{new}." + k[len(prefix):]] = v
    state.update(emb)
    if vocab is not None:
        table = torch.full((tokenizer_vocab,), _unk_row(folder, rows), dtype=torch.int32)
        table[rows] = torch.arange(len(rows), dtype=torch.int32)
        state["vocab_map"] = table
    model.load_state_dict(state)
    return model


def _unk_row(folder: Path, rows: torch.Tensor) -> int:
    """The embedding row [UNK] got in a pruned vocabulary (every dropped id is read as [UNK])."""
    from edgekd.data.tokens import special_ids

    unk = special_ids(folder)["unk"]
    hit = (rows == unk).nonzero()
    if not len(hit):
        raise InputError("text student: a pruned vocabulary must keep [UNK]")
    return int(hit[0, 0])


def pruned_vocabulary(checkpoint: Path) -> list[int] | None:
    """The tokenizer ids with an embedding row of their own in a text checkpoint whose vocabulary was
    pruned; every other id, [UNK] among them, reads [UNK]'s row. None for a full vocabulary or another
    kind of network."""
    from safetensors import safe_open

    path = Path(checkpoint) / "model.safetensors"
    with safe_open(str(path), "pt") as f:
        if "vocab_map" not in f.keys():
            return None
        table = f.get_tensor("vocab_map")
    rows = torch.bincount(table.long())
    shared = int(rows.argmax())  # the [UNK] row: every dropped id points at it
    return [int(i) for i in (table != shared).nonzero().flatten().tolist()]
