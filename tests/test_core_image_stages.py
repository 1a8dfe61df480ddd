"""Training the top stages of the image backbone: the split backbone is exact, only the trained stages ship,
and training on cached feature maps gives the model that training on the files gives."""


import pytest
import torch
from conftest import held_out_predictions, planted_manifest
from safetensors import safe_open

from realness.core import CoreModel, create_core
from realness.core.backbones import build_image_backbone, image_below, image_stages, image_top
from realness.core.training import CoreTrainConfig, train_core


@pytest.mark.parametrize("name", ["offline/efficientnet_lite0", "timm/test_resnet"])
def test_top_stages_on_the_maps_below_them_are_the_whole_backbone(name):
    model, _ = build_image_backbone(name, pretrained=False)
    model.eval()
    x = torch.randn(2, 3, 64, 96)
    n = len(image_stages(model)[0])
    with torch.no_grad():
        full = model(x)
        for k in (1, 2, n):
            torch.testing.assert_close(image_top(model, image_below(model, x, k), k), full)
        assert image_below(model, x, 1).shape[1] != image_below(model, x, 2).shape[1]  # a split, not a no-op
    with pytest.raises(ValueError, match=f"within 1..{n}"):
        image_below(model, x, n + 1)


def test_training_top_stages_on_cached_maps_equals_training_on_the_files(tiny_core_kwargs, tmp_path):
    data, _, _ = planted_manifest(tmp_path / "data", 40)
    base = dict(data=str(data), image_backbone=tiny_core_kwargs["image_backbone"], text_encoder=tiny_core_kwargs["text_encoder"],
                pretrained=False, pretrained_text=True, image_size=(48, 48), head_hidden=16, folds=1, epochs=3,
                batch_size=8, lr=5e-3, image_lr=5e-3, num_workers=0, augment=False, progress=False,
                freeze_image=True, freeze_text=True, train_image_stages=1, flip_tta=True)
    train_core(CoreTrainConfig.from_flat(**base, output_dir=str(tmp_path / "cached")))
    train_core(CoreTrainConfig.from_flat(**base, output_dir=str(tmp_path / "files"), cache_features=False))
    assert sorted(p.name.split("-")[0] for p in (tmp_path / "cached" / "feature_cache").glob("*")) == ["imagetrunk1", "text"]
    assert held_out_predictions(tmp_path / "cached") == pytest.approx(held_out_predictions(tmp_path / "files"), abs=1e-4)

    # The trained stage moved, the stages below it did not: rebuild the run's initial model (same seed).
    from accelerate.utils import set_seed

    best = CoreModel.from_pretrained(tmp_path / "cached" / "seed42" / "fold0" / "best")
    cfg = CoreTrainConfig.from_flat(**base, output_dir=str(tmp_path / "x"))
    set_seed(42)
    fresh = create_core(cfg.preset, pretrained=False, pretrained_text=True, **cfg.model_overrides())
    stages_best, stages_fresh = image_stages(best.image_backbone)[0], image_stages(fresh.image_backbone)[0]
    assert any(not torch.equal(a, b) for a, b in zip(stages_best[-1].parameters(), stages_fresh[-1].parameters()))
    for below_best, below_fresh in zip(stages_best[:-1], stages_fresh[:-1]):
        for a, b in zip(below_best.state_dict().values(), below_fresh.state_dict().values()):
            assert torch.equal(a, b)
    trained = {n for n, p in best.named_parameters() if p.requires_grad}
    assert any(n.startswith("image_backbone.layer4.") for n in trained)
    assert not any(n.startswith(("image_backbone.layer3.", "image_backbone.conv1", "text_encoder.")) for n in trained)


def test_only_the_trained_stages_of_a_frozen_backbone_are_saved(tmp_path):
    model = create_core("offline", pretrained=False, pretrained_text=False, freeze_image=True, freeze_text=True,
                        train_image_stages=2, mode="image", image_size=(64, 64))
    model.save_pretrained(tmp_path / "m", include_frozen=False)
    with safe_open(str(tmp_path / "m" / "model.safetensors"), framework="pt") as fh:
        keys = list(fh.keys())
    saved = {k.split(".")[1] for k in keys if k.startswith("image_backbone.")}
    assert saved == {"blocks", "conv_head", "bn2"}
    assert {k.split(".")[2] for k in keys if k.startswith("image_backbone.blocks.")} == {"6"}
    assert all(k.startswith(("head.", "image_backbone.blocks.6.", "image_backbone.conv_head.", "image_backbone.bn2.")) for k in keys)
    with pytest.raises(ValueError, match="freeze_image"):
        create_core("offline", pretrained=False, pretrained_text=False, train_image_stages=1, mode="image")
