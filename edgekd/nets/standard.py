"""Standard networks without weights, for the simulator (latency needs shapes, not trained values).

Named as in the published-latency set's `torch_constructor` column: torchvision's constructors
(`mobilenet_v2`, `resnet18`, ...), timm's model names (`mobilevit_s`, `fastvit_t8`, ...; FastViT and
MobileOne re-parameterised for inference, as their authors measured them) and Hugging Face encoders built
from their default configs (`distilbert`, `mobilebert`, `albert`, `bert`).

torchvision from the registry is built against CUDA torch; beside CPU torch its import fails on two
operator schemas it registers fakes for (`torchvision::nms`, `qnms`). `import_torchvision` declares
them first, so the network definitions load; no torchvision operator is ever run. timm imports
torchvision, so it goes through the same door.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from edgekd.errors import InputError

_SCHEMAS = ("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
            "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
_LIBRARY: list = []  # keeps the torch.library alive


def import_torchvision():
    try:
        torch._C._dispatch_find_schema_or_throw("torchvision::nms", "")
    except RuntimeError:
        if not _LIBRARY:
            lib = torch.library.Library("torchvision", "DEF")
            for schema in _SCHEMAS:
                lib.define(schema)
            _LIBRARY.append(lib)
    try:
        import torchvision
    except ImportError:
        raise InputError("the standard networks need torchvision (an edgekd dependency): reinstall edgekd "
                         "(pip install torch==2.13.0 first, then edgekd)") from None
    return torchvision


TORCHVISION = ("mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small", "efficientnet_b0",
               "efficientnet_b1", "squeezenet1_0", "squeezenet1_1", "shufflenet_v2_x0_5",
               "shufflenet_v2_x1_0", "mnasnet0_5", "mnasnet1_0", "resnet18", "resnet34", "resnet50",
               "regnet_y_400mf", "regnet_y_800mf", "regnet_x_400mf", "convnext_tiny", "vit_b_16",
               "densenet121", "googlenet", "inception_v3", "alexnet", "vgg16")
TIMM = ("mobilevit_s", "mobilevit_xs", "mobilevitv2_100", "fastvit_t8", "fastvit_t12", "fastvit_s12",
        "fastvit_sa12", "fastvit_sa24", "fastvit_sa36", "fastvit_ma36", "mobileone_s0", "mobileone_s1",
        "mobileone_s2", "mobileone_s3", "mobileone_s4", "efficientformer_l1", "levit_128s", "levit_128",
        "efficientvit_b0", "ghostnet_100", "tf_efficientnet_lite0")
TEXT = {"distilbert": "DistilBertConfig", "mobilebert": "MobileBertConfig", "albert": "AlbertConfig",
        "bert": "BertConfig"}


def names() -> list[str]:
    return sorted([*TORCHVISION, *TIMM, *TEXT, "efficientnet_lite0"])


def default_shape(name: str) -> tuple[int, ...]:
    if name in TEXT:
        return (1, 128)  # token ids
    return (1, 3, 299, 299) if name == "inception_v3" else (1, 3, 224, 224)


def build(name: str, input_shape: tuple[int, ...] | None = None) -> tuple[nn.Module, tuple]:
    """(network in eval mode, example inputs) for a standard network; random weights."""
    shape = tuple(input_shape or default_shape(name))
    if name not in names():
        raise InputError(f"unknown network {name!r}; built in: {', '.join(names())}")
    want = "1,L (token ids; L <= 512)" if name in TEXT else "N,3,H,W (RGB images)"
    rank_ok = len(shape) == 2 and shape[1] <= 512 if name in TEXT else len(shape) == 4 and shape[1] == 3
    if not rank_ok or min(shape) < 1:
        raise InputError(f"--input-shape {','.join(map(str, shape))} does not fit {name}: give {want}")
    torch.manual_seed(0)
    if name in TORCHVISION:
        tv = import_torchvision()
        kwargs = {"init_weights": False, "aux_logits": False} if name in ("inception_v3", "googlenet") else {}
        model = getattr(tv.models, name)(weights=None, **kwargs)
    elif name in TIMM:
        import_torchvision()
        import timm
        from timm.utils.model import reparameterize_model

        model = reparameterize_model(timm.create_model(name, pretrained=False).eval())
    elif name == "efficientnet_lite0":
        from edgekd.nets.efficientnet_lite import efficientnet_lite

        model = efficientnet_lite("lite0")
    elif name in TEXT:
        return _text_encoder(name, shape)
    else:
        raise InputError(f"unknown network {name!r}; built in: {', '.join(names())}")
    return model.eval(), (torch.randn(*shape),)


class _Encoder(nn.Module):
    """A Hugging Face encoder with token ids in and its last hidden state out (all tokens attended)."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids):
        return self.encoder(input_ids=input_ids).last_hidden_state


def _text_encoder(name: str, shape: tuple[int, ...]) -> tuple[nn.Module, tuple]:
    import_torchvision()  # transformers' model modules import torchvision, which needs its schemas first
    import transformers

    # the base size of each family (AlbertConfig() alone is ALBERT-xxlarge)
    sizes = {"albert": {"hidden_size": 768, "num_attention_heads": 12, "intermediate_size": 3072}}
    config = getattr(transformers, TEXT[name])(**sizes.get(name, {}))
    config._attn_implementation = "eager"  # plain matmul + softmax, as a converter sees them
    model = transformers.AutoModel.from_config(config).eval()
    return _Encoder(model).eval(), (torch.zeros(shape, dtype=torch.long),)


def from_constructor(text: str) -> str | None:
    """The built-in network a `torch_constructor` cell names (`torchvision.models.resnet50()`,
    `timm.create_model('mobilevit_s') ...`, `transformers DistilBertForMaskedLM(...)`), or None."""
    m = re.search(r"torchvision\.models\.(\w+)\(", text) or re.search(r"create_model\('([\w.]+)'", text)
    if m:
        return m.group(1) if m.group(1) in names() else None
    for key, cls in (("distilbert", "DistilBert"), ("mobilebert", "MobileBert"), ("albert", "Albert")):
        if f"transformers {cls}" in text:
            return key
    return None

