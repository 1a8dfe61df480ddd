"""Multi-level image features: the documented width, the single-level case unchanged, cache parity, reload."""

import pytest
import torch
from PIL import Image

from realness.core import CoreModel, create_core
from realness.core.backbones import build_image_backbone, multi_level
from realness.core.features import cached_features


@pytest.mark.parametrize("levels,pooling,width", [(1, "mean_std", 2 * 1280), (3, "mean", 192 + 320 + 1280),
                                                  (3, "mean_std", 2 * (192 + 320 + 1280))])
def test_efficientnet_levels_have_the_documented_width(levels, pooling, width):
    model, dim = build_image_backbone("offline/efficientnet_lite0", pretrained=False, levels=levels, pooling=pooling)
    assert dim == width
    with torch.no_grad():
        assert model.eval()(torch.randn(2, 3, 96, 128)).shape == (2, width)


def test_one_level_mean_is_the_plain_pooled_feature():
    plain, _ = build_image_backbone("offline/efficientnet_lite0", pretrained=False)
    x = torch.randn(2, 3, 96, 128)
    with torch.no_grad():
        torch.testing.assert_close(multi_level(plain.eval(), 1, "mean")(x), plain(x))
    resnet, _ = build_image_backbone("timm/test_resnet", pretrained=False, levels=2, pooling="mean_std")
    assert resnet.eval()(torch.randn(1, 3, 64, 64)).shape == (1, resnet.dim)
    with pytest.raises(ValueError, match="image_levels must be within"):
        build_image_backbone("offline/efficientnet_lite0", pretrained=False, levels=9)


def test_multi_level_core_caches_what_it_computes_and_reloads(tiny_core_kwargs, tmp_path):
    kwargs = dict(tiny_core_kwargs, image_levels=2, image_pooling="mean_std", freeze_image=True, freeze_text=True)
    model = create_core("paper", pretrained=False, pretrained_text=True, **kwargs).eval()
    records = [{"image": str(tmp_path / f"{i}.png"), "description": d} for i, d in enumerate(["the face", "no sky"])]
    for i, c in enumerate([(200, 10, 10), (10, 10, 200)]):
        Image.new("RGB", (64, 64), c).save(records[i]["image"])
    cached = cached_features(model, records, tmp_path / "cache", progress=False)
    batch = model.processor([Image.open(r["image"]) for r in records], [r["description"] for r in records])
    with torch.no_grad():
        torch.testing.assert_close(cached, model.features(**batch), atol=1e-5, rtol=1e-5)
    assert cached.shape[1] == model.head.in_features
    model.save_pretrained(tmp_path / "m")
    again = CoreModel.from_pretrained(tmp_path / "m")
    assert (again.config.image_levels, again.config.image_pooling) == (2, "mean_std")
    torch.testing.assert_close(again(**batch), model(**batch))
