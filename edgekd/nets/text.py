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

A pruned vocabulary keeps a lookup table (`vocab_map`, int32, one entry per tokenizer id) that sends
every id without a row of its own to [UNK]'s. Folders and the students made of them: edgekd.models.hf.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from edgekd.errors import InputError

# -1e4, not float32's minimum: the mask bias must survive fp16 (Core ML, the Neural Engine) without
# turning a fully padded row into NaN; exp(-1e4) is 0 in both precisions, as in the original BERT.
MASK_BIAS = -10000.0


class _Embeddings(nn.Module):
    """Word + position + segment-type embeddings, normalised. With `factor` (E < H) the word table is
    factorised as in ALBERT (Lan et al. 2019): V x E rows and one E x H projection, so on a phone-sized
    student the table, most of the model, costs E/H of its size."""

    def __init__(self, vocab: int, hidden: int, positions: int, eps: float, factor: int | None = None):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, factor or hidden)
        self.word_projection = nn.Linear(factor, hidden, bias=False) if factor else None
        self.position_embeddings = nn.Embedding(positions, hidden)
        self.token_type_embeddings = nn.Embedding(2, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # (B, L) -> (B, L, H)
        length = ids.shape[1]
        pos = self.position_embeddings.weight[:length]  # (L, H)
        words = self.word_embeddings(ids)
        if self.word_projection is not None:
            words = self.word_projection(words)
        h = words + pos + self.token_type_embeddings.weight[0]  # one segment: type 0
        return self.LayerNorm(h)


class _SelfAttention(nn.Module):
    def __init__(self, hidden: int, inner: int):
        super().__init__()
        self.query, self.key, self.value = (nn.Linear(hidden, inner) for _ in range(3))


class _Dense(nn.Module):
    def __init__(self, cin: int, cout: int, eps: float | None):
        super().__init__()
        self.dense = nn.Linear(cin, cout)
        if eps is not None:
            self.LayerNorm = nn.LayerNorm(cout, eps=eps)


class _Attention(nn.Module):
    def __init__(self, hidden: int, inner: int, eps: float):
        super().__init__()
        self.self = _SelfAttention(hidden, inner)
        self.output = _Dense(inner, hidden, eps)


class _Layer(nn.Module):
    """One post-LayerNorm BERT layer: attention, add & norm, GELU feed-forward, add & norm. Each of the
    `heads` heads is `head_dim` wide (hidden / heads unless given: a layer with pruned heads keeps the
    width of the heads it kept)."""

    def __init__(self, hidden: int, heads: int, intermediate: int, eps: float, head_dim: int | None = None):
        super().__init__()
        self.heads, self.head_dim = heads, head_dim or hidden // heads
        self.attention = _Attention(hidden, heads * self.head_dim, eps)
        self.intermediate = _Dense(hidden, intermediate, None)
        self.output = _Dense(intermediate, hidden, eps)

    def forward(self, h: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:  # (B, L, H), (B, 1, 1, L)
        b, length, _ = h.shape
        d = self.head_dim
        att = self.attention.self

        def split(t):  # (B, L, heads * d) -> (B, heads, L, d)
            return t.reshape(b, length, self.heads, d).transpose(1, 2)

        q, k, v = split(att.query(h)), split(att.key(h)), split(att.value(h))
        scores = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(d)) + bias  # (B, heads, L, L)
        ctx = torch.matmul(scores.softmax(-1), v).transpose(1, 2).reshape(b, length, self.heads * d)
        out = self.attention.output
        h = out.LayerNorm(out.dense(ctx) + h)
        ff = self.output.dense(F.gelu(self.intermediate.dense(h)))
        return self.output.LayerNorm(ff + h)


class _Encoder(nn.Module):
    def __init__(self, layers: int, hidden: int, heads: int, intermediate: int, eps: float,
                 head_dim: int | None = None):
        super().__init__()
        self.layer = nn.ModuleList(_Layer(hidden, heads, intermediate, eps, head_dim) for _ in range(layers))


class BertClassifier(nn.Module):
    """Token rows (B, 2, L) -> class logits (B, C); `features` is the mean-pooled last hidden state
    (B, H), the sentence embedding the head (and the DistilBERT cosine loss) reads."""

    text_inputs = True  # token rows in; the exporters give the graph input_ids and attention_mask

    def __init__(self, *, vocab_size: int, hidden: int, layers: int, heads: int, intermediate: int,
                 num_classes: int, max_positions: int = 512, eps: float = 1e-12,
                 tokenizer_vocab: int | None = None, unk_id: int | None = None, embedding: int | None = None,
                 head_dim: int | None = None):
        super().__init__()
        if head_dim is None and hidden % heads:
            raise InputError(f"text model: hidden size {hidden} is not a multiple of its {heads} heads")
        if embedding is not None and not 1 <= embedding < hidden:
            raise InputError(f"text model: a factorised embedding of {embedding} must be narrower than the "
                             f"hidden size {hidden}; drop it (a plain table) or give fewer dimensions")
        self.config = dict(vocab_size=vocab_size, hidden=hidden, layers=layers, heads=heads,
                           intermediate=intermediate, num_classes=num_classes, max_positions=max_positions,
                           eps=eps, tokenizer_vocab=tokenizer_vocab, unk_id=unk_id)
        if embedding is not None:  # only when set: checkpoints of plain tables keep their specs
            self.config["embedding"] = embedding
        if head_dim is not None:  # pruned heads (edgekd.models.hf.prune_layers); recorded only when set
            self.config["head_dim"] = head_dim
        self.embeddings = _Embeddings(vocab_size, hidden, max_positions, eps, embedding)
        self.encoder = _Encoder(layers, hidden, heads, intermediate, eps, head_dim)
        self.head = nn.Linear(hidden, num_classes)
        # a pruned vocabulary: tokenizer id -> embedding row; unk_id: the tokenizer's [UNK], whose row
        # every id without its own reads (edgekd.models.hf)
        if tokenizer_vocab is not None:
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

    def kept_ids(self) -> list[int] | None:
        """With a pruned vocabulary, the tokenizer ids that have an embedding row of their own (every other
        id, [UNK] among them, reads [UNK]'s row); None for the full vocabulary."""
        if self.vocab_map is None:
            return None
        unk_row = self.vocab_map[self.config["unk_id"]]
        return [int(i) for i in (self.vocab_map != unk_row).nonzero().flatten().tolist()]

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
