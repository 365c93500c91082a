"""The zoo: teachers and students by name, with width and depth multipliers.

Every family uses only layers that Core ML, TFLite and ONNX convert (Conv, BatchNorm, ReLU, MaxPool,
Linear, LayerNorm, matmul + softmax attention, mean pooling), so any trained model can be exported.
Each model exposes `features(x) -> (B, D)` (the penultimate layer, for hint losses) and `head`.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from edgekd.errors import InputError
from edgekd.registry import Registry

MODELS: Registry[Callable[..., "Classifier"]] = Registry("model")


def _channels(base: int, width: float, minimum: int = 4) -> int:
    return max(minimum, int(round(base * width)))


class Classifier(nn.Module):
    head: nn.Linear

    def features(self, x: torch.Tensor) -> torch.Tensor:  # (B, *input_shape) -> (B, D)
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # -> logits (B, num_classes)
        return self.head(self.features(x))

    @property
    def feature_dim(self) -> int:
        return self.head.in_features


def _expect_rank(input_shape: tuple[int, ...], ranks: tuple[int, ...], family: str) -> None:
    if len(input_shape) not in ranks:
        kinds = {2: "signals (C, L)", 3: "images (C, H, W)"}
        want = " or ".join(kinds[r] for r in ranks)
        raise InputError(f"model {family!r} takes {want}, "
                         f"but the data's inputs have shape {tuple(input_shape)}")


class MaxPool1d2(nn.MaxPool1d):
    """`nn.MaxPool1d(2)` that trains faster on CPU: in training, a pairwise max over a (B, C, L/2, 2) view
    instead of `max_pool1d_with_indices` (16% of a small cnn1d student's step on one thread). Same values
    and the same gradient (to the larger of each pair; the zoo pools after ReLU, where ties are zeros
    whose gradient ReLU stops), so training is bit-for-bit unchanged; eval and export use the standard op."""

    def __init__(self):
        super().__init__(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, L) -> (B, C, L // 2)
        if not self.training or x.dim() != 3:
            return super().forward(x)
        b, c, length = x.shape
        return x[..., :length - length % 2].reshape(b, c, length // 2, 2).max(dim=-1).values


@MODELS.register("cnn1d")
class CNN1d(Classifier):
    """Plain 1-D CNN: `depth` conv-BN-ReLU blocks of 96*width channels, max-pool after blocks 2 and 4.
    width=1, depth=4 is the MNIST-1D teacher (~141k params)."""

    def __init__(self, input_shape, num_classes, width: float = 1.0, depth: int = 4, kernel_size: int = 5):
        super().__init__()
        _expect_rank(input_shape, (2,), "cnn1d")
        c, cin, layers = _channels(96, width), input_shape[0], []
        for i in range(depth):
            layers += [nn.Conv1d(cin, c, kernel_size, padding=kernel_size // 2), nn.BatchNorm1d(c), nn.ReLU()]
            if i in (1, 3) and input_shape[1] >= 4 * (i + 1):
                layers.append(MaxPool1d2())
            cin = c
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(c, num_classes)

    def features(self, x):
        return self.body(x).mean(dim=-1)  # (B, C, L) -> (B, C)


class _DepthwiseSeparable(nn.Sequential):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__(
            nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin), nn.ReLU(),
            nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
        )


@MODELS.register("mobilenet2d")
class MobileNet2d(Classifier):
    """MobileNet-v1 style (Howard et al. 2017): a 3x3 stem, then `depth` depthwise-separable blocks;
    blocks 1 and 3 halve the resolution and double the channels."""

    stem_stride = 1  # tiny inputs (8x8 digits) keep their resolution; MobileNet2dS2 halves it

    def __init__(self, input_shape, num_classes, width: float = 1.0, depth: int = 4):
        super().__init__()
        _expect_rank(input_shape, (3,), "mobilenet2d")
        c, s = _channels(32, width), self.stem_stride
        layers: list[nn.Module] = [nn.Conv2d(input_shape[0], c, 3, s, 1, bias=False), nn.BatchNorm2d(c),
                                   nn.ReLU()]
        size = (min(input_shape[1:]) + s - 1) // s
        for i in range(depth):
            down = i in (1, 3) and size >= 4
            cout = c * 2 if down else c
            layers.append(_DepthwiseSeparable(c, cout, 2 if down else 1))
            size, c = (size + 1) // 2 if down else size, cout
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(c, num_classes)

    def features(self, x):
        return self.body(x).mean(dim=(-2, -1))  # (B, C, H, W) -> (B, C)


@MODELS.register("mobilenet2d-s2")
class MobileNet2dS2(MobileNet2d):
    """mobilenet2d with MobileNet's own stride-2 stem: every layer runs at half the resolution, a quarter
    of the compute, for images of 28x28 and up (Fashion-MNIST trains ~4x faster)."""

    stem_stride = 2


@MODELS.register("mlp")
class MLP(Classifier):
    """Flatten, then `depth` Linear-ReLU layers of 256*width units."""

    def __init__(self, input_shape, num_classes, width: float = 1.0, depth: int = 2):
        super().__init__()
        h, cin, layers = _channels(256, width), math.prod(input_shape), [nn.Flatten()]
        for _ in range(depth):
            layers += [nn.Linear(cin, h), nn.ReLU()]
            cin = h
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(cin, num_classes)

    def features(self, x):
        return self.body(x)


class _EncoderLayer(nn.Module):
    """Pre-norm transformer encoder layer with attention written out (matmul, softmax) so that every
    converter sees plain ops rather than a fused attention kernel."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.ff = nn.Sequential(nn.Linear(dim, 2 * dim), nn.ReLU(), nn.Linear(2 * dim, dim))

    def forward(self, x):  # (B, N, D)
        b, n, d = x.shape
        hd = d // self.heads
        # q, k, v: (B, H, N, hd) each
        q, k, v = self.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, hd).permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-2, -1) * (hd ** -0.5), dim=-1)  # (B, H, N, N)
        x = x + self.proj((att @ v).transpose(1, 2).reshape(b, n, d))
        return x + self.ff(self.norm2(x))


@MODELS.register("transformer")
class TransformerClassifier(Classifier):
    """Small ViT-style encoder: patch embedding (conv with stride = patch), learned positions,
    `depth` pre-norm layers of width 64*width, mean pooling."""

    def __init__(self, input_shape, num_classes, width: float = 1.0, depth: int = 2, heads: int = 4,
                 patch: int = 4):
        super().__init__()
        _expect_rank(input_shape, (2, 3), "transformer")
        dim = max(heads, int(round(64 * width / heads)) * heads)
        if len(input_shape) == 2:
            p = min(patch, input_shape[1])
            self.embed = nn.Conv1d(input_shape[0], dim, p, stride=p)
            tokens = input_shape[1] // p
        else:
            p = min(patch // 2 or 1, *input_shape[1:])
            self.embed = nn.Conv2d(input_shape[0], dim, p, stride=p)
            tokens = (input_shape[1] // p) * (input_shape[2] // p)
        self.pos = nn.Parameter(torch.zeros(1, tokens, dim))
        nn.init.trunc_normal_(self.pos, std=0.02)
        self.layers = nn.Sequential(*[_EncoderLayer(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def features(self, x):
        t = self.embed(x).flatten(2).transpose(1, 2) + self.pos  # (B, N, D)
        return self.norm(self.layers(t).mean(dim=1))


class WithProbabilities(nn.Module):
    """The exported graph: logits -> softmax, so an app reads class probabilities directly.
    BatchNorm layers that follow a conv are folded into it (litert-torch otherwise keeps them as a MUL
    and an ADD per layer at run time)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = fold_batchnorm(model)

    def forward(self, x):  # (B, *input_shape) -> (B, C)
        return torch.softmax(self.model(x), dim=-1)

    def train(self, mode: bool = True):
        self.training = mode
        if mode:
            self.model.train()
        else:
            eval_mode(self.model)
        return self


def export_graph(model: nn.Module) -> nn.Module:
    """The graph exporters convert: probabilities out; a text model takes input_ids and attention_mask
    (edgekd.nets.text), every other model its input x."""
    if getattr(model, "text_inputs", False):
        from edgekd.nets.text import TextWithProbabilities

        return TextWithProbabilities(model).eval()
    return WithProbabilities(model).eval()


def eval_mode(model: nn.Module) -> nn.Module:
    """`model.eval()`, also for a torch.export program's module (fixed in the mode it was exported in)."""
    try:
        model.eval()  # (a PT2E graph's patched eval returns None, not the module)
    except NotImplementedError:
        pass
    return model


WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Linear)  # the layers whose weights the exporters quantise


def conv_bn_pairs(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(conv's qualified name, its BatchNorm) for every Conv -> BatchNorm pair inside an nn.Sequential:
    the pairs `fold_batchnorm` fuses."""
    pairs = []
    for prefix, seq in model.named_modules():
        if not isinstance(seq, nn.Sequential):
            continue
        names = list(seq._modules)
        for a, b in zip(names, names[1:]):
            conv, bn = seq._modules[a], seq._modules[b]
            if isinstance(conv, (nn.Conv1d, nn.Conv2d)) and isinstance(bn, (nn.BatchNorm1d, nn.BatchNorm2d)):
                pairs.append((f"{prefix}.{a}" if prefix else a, bn))
    return pairs


def neutral_variance(eps: float) -> float:
    """A float32 variance v with v + eps == 1.0 exactly in float32 (so 1 / sqrt(v + eps) is exactly 1)."""
    v = torch.tensor(1.0 - eps, dtype=torch.float32)
    one = torch.tensor(1.0, dtype=torch.float32)
    while (v + eps).item() != 1.0:
        v = torch.nextafter(v, one if (v + eps).item() < 1.0 else -one)
    return v.item()


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of `model` (eval mode) with every Conv -> BatchNorm pair inside an nn.Sequential fused."""
    import copy

    from torch.nn.utils.fusion import fuse_conv_bn_eval

    model = eval_mode(copy.deepcopy(model))
    for conv_name, bn in conv_bn_pairs(model):
        parent, _, a = conv_name.rpartition(".")
        seq = model.get_submodule(parent) if parent else model
        b = next(k for k, m in seq._modules.items() if m is bn)
        seq._modules[a] = fuse_conv_bn_eval(seq._modules[a], bn)
        seq._modules[b] = nn.Identity()
    return model


def build_model(arch: str, input_shape: tuple[int, ...], num_classes: int, *, width: float = 1.0,
                depth: int | None = None) -> Classifier:
    factory = MODELS.get(arch, "model.arch")
    kwargs = {"width": width} if depth is None else {"width": width, "depth": depth}
    return factory(tuple(input_shape), num_classes, **kwargs)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
