"""The text branch's LoRA adapter: the split encoder is exact, the adapter is all that ships, and training on
cached hidden states gives the model that training on the files gives."""


import pytest
import torch
from conftest import held_out_predictions, planted_manifest
from safetensors import safe_open

from realness.core import CoreModel, create_core
from realness.core.backbones import build_text_encoder
from realness.core.features import cached_text_hidden
from realness.core.training import CoreTrainConfig, train_core

TEXTS = ["the sky looks natural", "distorted fur on the tree photo image", "looks"]


@pytest.mark.parametrize("pooling", ["mean", "cls", "pooler"])
def test_top_layers_on_the_hidden_states_below_them_are_the_whole_encoder(tiny_bert, pooling):
    encoder, tokenizer = build_text_encoder(str(tiny_bert), pooling)
    encoder.eval()
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        full = encoder(batch["input_ids"], batch["attention_mask"])
        for k in (1, 2):
            hidden = encoder.hidden_below(batch["input_ids"], batch["attention_mask"], k)
            torch.testing.assert_close(encoder.forward_top(hidden, batch["attention_mask"], k), full)
        # a different split point runs different layers: the embeddings are not the input of the top layer
        hidden = encoder.hidden_below(batch["input_ids"], batch["attention_mask"], 2)
        assert not torch.allclose(encoder.forward_top(hidden, batch["attention_mask"], 1), full)
    assert not any("_tops" in k for k in encoder.state_dict())  # the split view holds no second copy
    with pytest.raises(ValueError, match="within 1..2"):
        encoder.hidden_below(batch["input_ids"], batch["attention_mask"], 3)


def _lora_core(tiny_core_kwargs, **over):
    kwargs = dict(tiny_core_kwargs, freeze_image=True, freeze_text=True, text_lora_rank=4, text_lora_layers=1)
    return create_core("paper", pretrained=False, pretrained_text=True, **{**kwargs, **over}).eval()


def test_adapter_changes_text_features_and_is_all_of_the_text_branch_that_is_saved(tiny_core_kwargs, tmp_path):
    model = _lora_core(tiny_core_kwargs, mode="text")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("head.") or "lora_" in n for n in trainable)
    assert any(".layer.1." in n for n in trainable if "lora_" in n)
    assert not any(".layer.0." in n for n in trainable)  # only the top layer is adapted
    batch = model.processor(None, TEXTS)
    with torch.no_grad():
        before = model.features(**batch)
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # B starts at zero (the adapter starts as the identity)
        after = model.features(**batch)
    assert (after - before).abs().max() > 1e-3
    model.save_pretrained(tmp_path / "m", include_frozen=False)
    with safe_open(str(tmp_path / "m" / "model.safetensors"), framework="pt") as fh:
        keys = list(fh.keys())
    assert keys and all(k.startswith("head.") or "lora_" in k for k in keys)
    assert sum("lora_" in k for k in keys) == 4  # query and value, A and B, of the one adapted layer
    again = CoreModel.from_pretrained(tmp_path / "m")  # the base encoder comes from its source again
    with torch.no_grad():
        torch.testing.assert_close(again.features(**batch), after)
    with pytest.raises(ValueError, match="freeze_text"):
        _lora_core(tiny_core_kwargs, freeze_text=False)


def test_cached_hidden_states_are_the_encoders(tiny_core_kwargs, tmp_path):
    model = _lora_core(tiny_core_kwargs)
    records = [{"description": t} for t in TEXTS]
    hidden, mask = cached_text_hidden(model, records, tmp_path / "cache", layers=1, progress=False)
    again, _ = cached_text_hidden(model, records, tmp_path / "cache", layers=1, progress=False)  # from the file
    tokens = model.processor.tokenize(TEXTS)
    with torch.no_grad():
        direct = model.text_encoder.hidden_below(tokens["input_ids"], tokens["attention_mask"], 1)
    assert hidden.shape == direct.shape and torch.equal(mask, tokens["attention_mask"])
    torch.testing.assert_close(hidden, direct)
    torch.testing.assert_close(again, hidden)


@pytest.mark.parametrize("mode,flip_tta", [("fusion", True), ("text", False)])
def test_training_on_cached_hidden_states_equals_training_on_the_files(tiny_core_kwargs, tmp_path, mode, flip_tta):
    data, _, _ = planted_manifest(tmp_path / "data", 40)
    base = dict(data=str(data), image_backbone=tiny_core_kwargs["image_backbone"], mode=mode,
                text_encoder=tiny_core_kwargs["text_encoder"], pretrained=False, pretrained_text=True,
                image_size=(48, 48), head_hidden=16, folds=1, epochs=3, batch_size=8, lr=5e-3, text_lr=5e-3,
                num_workers=0, augment=False, progress=False, freeze_image=True, freeze_text=True,
                text_lora_rank=4, text_lora_layers=1, n_heads=2, standardize_features=True, flip_tta=flip_tta)
    train_core(CoreTrainConfig.from_flat(**base, output_dir=str(tmp_path / "cached")))
    train_core(CoreTrainConfig.from_flat(**base, output_dir=str(tmp_path / "files"), cache_features=False))
    assert sorted(p.name.split("-")[0] for p in (tmp_path / "cached" / "feature_cache").glob("*")) == (
        ["image", "texthidden"] if mode == "fusion" else ["texthidden"])
    assert held_out_predictions(tmp_path / "cached") == pytest.approx(held_out_predictions(tmp_path / "files"), abs=1e-4)
    best = CoreModel.from_pretrained(tmp_path / "cached" / "seed42" / "fold0" / "best")
    lora_b = [p for n, p in best.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.abs().max() > 0 for p in lora_b)  # the adapter trained (it starts at zero)


def test_checkpoints_of_cached_training_hold_what_trains_and_restore_it(tiny_core_kwargs, tmp_path):
    """A resumed run reloads the adapter and head from a checkpoint that leaves the frozen encoders out."""
    from accelerate import Accelerator

    from realness.core.training import _CachedTops

    records = [{"description": t} for t in TEXTS]
    model = _lora_core(tiny_core_kwargs, mode="text")
    hidden, mask = cached_text_hidden(model, records, tmp_path / "cache", layers=1, progress=False)
    tops = _CachedTops(model, None, hidden, mask)
    trainable = [p for p in model.parameters() if p.requires_grad]
    accelerator = Accelerator(cpu=True)
    tops, optimizer = accelerator.prepare(tops, torch.optim.AdamW(trainable, lr=1e-2))
    tops(**tops.inputs(torch.arange(3))).sum().backward()
    optimizer.step()
    accelerator.save_state(str(tmp_path / "ckpt"))
    saved = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    with safe_open(str(tmp_path / "ckpt" / "model.safetensors"), framework="pt") as fh:
        keys = list(fh.keys())
    assert keys and all(k.startswith("core.head.") or "lora_" in k for k in keys)
    with torch.no_grad():
        for p in trainable:
            p.add_(1.0)
    accelerator.load_state(str(tmp_path / "ckpt"))
    for n, p in model.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(p, saved[n])
