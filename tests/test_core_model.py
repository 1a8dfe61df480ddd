import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from realness.core import CoreConfig, CoreModel, create_core, list_presets


def _images(n=3):
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)) for _ in range(n)]


TEXTS = ["Yes, the hand looks distorted.", "No, everything looks natural.", "Somewhat. Odd shadows on the road."]


def _tiny(kwargs, **over):
    return create_core("paper", pretrained=False, pretrained_text=True, **{**kwargs, **over})


def test_presets_and_paper_defaults():
    assert {"paper", "offline", "paper-image-only", "paper-text-only"} <= set(list_presets())
    c = CoreConfig()
    assert (c.image_backbone, c.text_encoder, c.text_pooling) == ("torchvision/resnet50", "bert-base-uncased", "pooler")
    assert (c.head_hidden, c.max_text_tokens, c.image_size, c.mode) == (529, 128, (384, 512), "fusion")
    with pytest.raises(ValueError, match="mode"):
        CoreConfig(mode="both")


def test_paper_architecture_shapes(tmp_path, tiny_bert):
    # The published network, random weights: ResNet-50 (2048) + a BERT-base-shaped encoder (768)
    # -> Linear(2816, 529) -> ReLU -> Linear(529, 1). BERT-base's shape is its default config.
    from transformers import AutoTokenizer, BertConfig, BertModel

    BertModel(BertConfig(vocab_size=100)).save_pretrained(tmp_path / "bert-base-shape")
    AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(tmp_path / "bert-base-shape")
    m = create_core("paper", pretrained=False, pretrained_text=True, text_encoder=str(tmp_path / "bert-base-shape"))
    linears = [layer for layer in m.head.members[0] if isinstance(layer, torch.nn.Linear)]
    assert [(l.in_features, l.out_features) for l in linears] == [(2816, 529), (529, 1)]
    assert isinstance(m.head.members[0][2], torch.nn.ReLU) and len(m.head.members) == 1
    assert m.config.image_size == (384, 512)
    batch = m.processor(_images(2), TEXTS[:2])
    assert batch["pixel_values"].shape == (2, 3, 384, 512)
    assert m(**batch).shape == (2,)


@pytest.mark.parametrize("mode,parts", [("fusion", (True, True)), ("image", (True, False)), ("text", (False, True))])
def test_modes_build_only_their_branches(tiny_core_kwargs, mode, parts):
    m = _tiny(tiny_core_kwargs, mode=mode)
    assert (m.image_backbone is not None, m.text_encoder is not None) == parts
    width = m.head.in_features
    expected = (m.image_backbone is not None) * 96 + (m.text_encoder is not None) * 32  # test_resnet, tiny BERT
    assert width == expected
    out = m.predict(_images() if parts[0] else None, TEXTS if parts[1] else None)
    assert out.shape == (3,) and torch.isfinite(out).all()


def test_image_only_ignores_text_and_text_only_ignores_image(tiny_core_kwargs):
    img = _tiny(tiny_core_kwargs, mode="image")
    a = img.predict(_images(), None)
    assert torch.equal(a, img.predict(_images(), None))
    txt = _tiny(tiny_core_kwargs, mode="text")
    t1 = txt.predict(None, TEXTS)
    assert not torch.allclose(t1[0], t1[1])  # different texts, different scores
    with pytest.raises(ValueError, match="needs descriptions"):
        txt.predict(_images(), None)


def test_empty_description_is_a_clear_error(tiny_core_kwargs):
    m = _tiny(tiny_core_kwargs)
    with pytest.raises(ValueError, match="empty description at batch position"):
        m.predict(_images(2), ["fine", "  "])


@pytest.mark.parametrize("mode", ["fusion", "image", "text"])
def test_save_load_round_trip_is_exact(tiny_core_kwargs, tmp_path, mode):
    m = _tiny(tiny_core_kwargs, mode=mode, mos_mean=50.0, mos_std=10.0, mos_range=(0, 100))
    with torch.no_grad():  # move off the init so a load that silently re-initialises would show
        for p in m.head.parameters():
            p.add_(0.05)
    images, texts = (_images() if m.config.uses_image else None), (TEXTS if m.config.uses_text else None)
    before = m.predict(images, texts)
    m.save_pretrained(tmp_path / "m")
    assert not list((tmp_path / "m").glob("*.bin")) and not list((tmp_path / "m").glob("*.pt"))
    loaded = CoreModel.from_pretrained(tmp_path / "m")
    assert loaded.config == m.config
    assert torch.equal(before, loaded.predict(images, texts))
    assert loaded.to_mos(1.0) == pytest.approx(60.0)
    assert loaded.to_mos(100.0) == 100.0  # clipped to the scale


def test_frozen_backbones_do_not_change_and_can_be_left_out(tiny_core_kwargs, tmp_path):
    m = _tiny(tiny_core_kwargs, freeze_text=True, freeze_image=True)
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("head.") for n in trainable)
    m.train()
    assert not m.text_encoder.training and not m.image_backbone.training and m.head.training
    # Text frozen and left out: rebuilt from its source folder; image kept in the file.
    m2 = _tiny(tiny_core_kwargs, freeze_text=True)
    m2.save_pretrained(tmp_path / "small", include_frozen=False)
    keys = load_file(str(tmp_path / "small" / "model.safetensors")).keys()
    assert not any(k.startswith("text_encoder.") for k in keys) and any(k.startswith("image_backbone.") for k in keys)
    loaded = CoreModel.from_pretrained(tmp_path / "small")
    assert torch.equal(m2.predict(_images(), TEXTS), loaded.predict(_images(), TEXTS))


def test_loading_rejects_mismatched_weights(tiny_core_kwargs, tmp_path):
    m = _tiny(tiny_core_kwargs)
    m.save_pretrained(tmp_path / "m")
    cfg = CoreConfig.load(tmp_path / "m" / "config.json")
    cfg.head_hidden = 16
    cfg.save(tmp_path / "m" / "config.json")
    with pytest.raises(RuntimeError, match="size mismatch|do not match"):
        CoreModel.from_pretrained(tmp_path / "m")
    with pytest.raises(FileNotFoundError, match="not a saved CORE model"):
        CoreModel.from_pretrained(tmp_path)
