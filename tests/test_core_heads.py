"""Several heads side by side and standardised features: what each changes, and what must not change."""

import copy
import csv

import pytest
import torch
from conftest import planted_manifest
from PIL import Image
from safetensors.torch import load_file, save_file

from realness.core import CoreModel, create_core
from realness.core.modeling import CoreHead
from realness.core.training import CoreTrainConfig, train_core

TEXTS = ["the sky looks natural", "distorted fur on the tree"]


def _batch(model):
    images = [Image.new("RGB", (64, 64), c) for c in [(200, 30, 30), (20, 20, 220)]]
    return model.processor(images, TEXTS)


def test_heads_score_their_mean_and_files_of_one_head_still_load(tiny_core_kwargs, tmp_path):
    model = create_core("paper", pretrained=False, pretrained_text=True, n_heads=3, **tiny_core_kwargs).eval()
    batch = _batch(model)
    with torch.no_grad():
        per_head = model(**batch, per_head=True)
        assert per_head.shape == (2, 3)
        torch.testing.assert_close(model(**batch), per_head.mean(-1))
    images = [Image.new("RGB", (64, 64), c) for c in [(200, 30, 30), (20, 20, 220)]]
    feats = model.predict_features(images, TEXTS, batch_size=1)  # what the head reads, batch by batch
    assert feats.shape == (2, model.head.members[0][1].in_features)
    torch.testing.assert_close(model.score_features(feats), model.predict(images, TEXTS))
    first = [m[1].weight for m in model.head.members]
    assert not torch.equal(first[0], first[1])  # initialised differently, or the ensemble is one head
    model.save_pretrained(tmp_path / "three")
    model.save_pretrained(tmp_path / "half", dtype=torch.float16)
    size = {n: (tmp_path / n / "model.safetensors").stat().st_size for n in ("three", "half")}
    assert size["half"] < 0.55 * size["three"]
    with torch.no_grad():
        torch.testing.assert_close(CoreModel.from_pretrained(tmp_path / "three")(**batch), model(**batch))
        half = CoreModel.from_pretrained(tmp_path / "half")
        assert next(half.head.parameters()).dtype == torch.float32
        torch.testing.assert_close(half(**batch), model(**batch), atol=2e-3, rtol=1e-2)

    # A model saved before heads were `CoreHead` names its one head `head.1.weight`: it loads unchanged.
    single = create_core("paper", pretrained=False, pretrained_text=True, **tiny_core_kwargs).eval()
    single.save_pretrained(tmp_path / "old")
    weights = tmp_path / "old" / "model.safetensors"
    state = {k.replace("head.members.0.", "head."): v for k, v in load_file(str(weights)).items()}
    assert "head.1.weight" in state
    save_file(state, str(weights), metadata={"format": "pt", "include_frozen": "True"})
    with torch.no_grad():
        torch.testing.assert_close(CoreModel.from_pretrained(tmp_path / "old")(**batch), single(**batch))


def test_standardised_features_reach_the_head_centred_and_scaled():
    head = CoreHead(width=4, hidden=8, n_heads=1, standardize=True)
    feats = torch.randn(200, 4) * torch.tensor([0.01, 1.0, 50.0, 0.0]) + torch.tensor([3.0, -1.0, 10.0, 7.0])
    head.set_feature_stats(feats)
    seen = []
    head.members[0][1].register_forward_hook(lambda m, args, out: seen.append(args[0]))
    head(feats)
    torch.testing.assert_close(seen[0][:, :3].mean(0), torch.zeros(3), atol=1e-4, rtol=0)
    torch.testing.assert_close(seen[0][:, :3].std(0, unbiased=False), torch.ones(3), atol=1e-4, rtol=0)
    assert torch.all(seen[0][:, 3] == 0)  # a constant feature is centred, not divided by zero
    with pytest.raises(RuntimeError, match="standardize_features"):
        CoreHead(4, 8).set_feature_stats(feats)


def _cfg(tiny_core_kwargs, data, out, **over):
    base = dict(data=str(data), output_dir=str(out), image_backbone=tiny_core_kwargs["image_backbone"],
                text_encoder=tiny_core_kwargs["text_encoder"], pretrained=False, pretrained_text=True,
                image_size=(48, 48), head_hidden=16, folds=1, epochs=1, batch_size=8, lr=5e-3, num_workers=0,
                augment=False, progress=False, freeze_image=True, freeze_text=True)
    return CoreTrainConfig.from_flat(**{**base, **over})


def test_heads_side_by_side_train_as_separate_runs_would(tiny_core_kwargs, tmp_path):
    """Each head has its own loss and its own parameters: the first of three ends exactly where the one
    head of a single-head run with the same seed ends (same initialisation, same batches)."""
    data, _, _ = planted_manifest(tmp_path / "data", 40)
    train_core(_cfg(tiny_core_kwargs, data, tmp_path / "one"))
    train_core(_cfg(tiny_core_kwargs, data, tmp_path / "three", n_heads=3, feature_cache=str(tmp_path / "one" / "feature_cache")))
    one = CoreModel.from_pretrained(tmp_path / "one" / "seed42" / "fold0" / "best")
    three = CoreModel.from_pretrained(tmp_path / "three" / "seed42" / "fold0" / "best")
    assert len(three.head.members) == 3
    for a, b in zip(one.head.members[0].parameters(), three.head.members[0].parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(three.head.members[0][1].weight, three.head.members[1][1].weight)


@pytest.mark.parametrize("flip_tta", [False, True])
def test_training_sets_the_standardisation_from_training_rows_and_scores_match_the_files(tiny_core_kwargs, tmp_path,
                                                                                        flip_tta):
    """Trained on cached features (with flips: of each image and its mirror image), the selected model
    scores the files themselves exactly as the cache said."""
    data, _, _ = planted_manifest(tmp_path / "data", 40)
    out = tmp_path / "std"
    train_core(_cfg(tiny_core_kwargs, data, out, standardize_features=True, epochs=3, flip_tta=flip_tta, dropout=0.2))
    best = CoreModel.from_pretrained(out / "seed42" / "fold0" / "best")
    assert best.config.standardize_features and best.config.flip_tta == flip_tta and best.config.dropout == 0.2
    assert not torch.all(best.head.feature_mean == 0) and not torch.all(best.head.feature_std == 1)
    from realness.data import load_manifest
    from realness.images import load_image

    rows = list(csv.DictReader((out / "seed42" / "fold0" / "predictions.csv").open()))
    ds = {r["filename"]: r for r in load_manifest(data).to_list()}
    direct = best.predict([load_image(ds[r["filename"]]["image"]) for r in rows],
                          [ds[r["filename"]]["description"] for r in rows]).numpy()
    assert direct == pytest.approx([float(r["pred_z"]) for r in rows], abs=1e-4)


@pytest.mark.parametrize("hidden", [32, 0])
def test_merged_models_score_the_mean_of_their_scores(tiny_core_kwargs, hidden):
    from realness.core.ensemble import merge_cores

    kwargs = dict(tiny_core_kwargs, head_hidden=hidden)
    a = create_core("paper", pretrained=False, pretrained_text=True, standardize_features=True, mos_mean=60.0,
                    mos_std=15.0, **kwargs).eval()
    assert len(a.head.members[0]) == (5 if hidden else 2)  # 0: a linear head
    torch.manual_seed(1)
    a.head.set_feature_stats(torch.randn(30, a.head.in_features) * 3 + 1)
    b = copy.deepcopy(a)
    b.config.n_heads, b.config.mos_mean, b.config.mos_std = 2, 55.0, 20.0
    b.head = CoreHead(a.head.in_features, hidden, n_heads=2, standardize=True)
    b.head.set_feature_stats(torch.randn(30, a.head.in_features) * 0.5 - 2)
    c = copy.deepcopy(a)
    c.config.standardize_features, c.head = False, CoreHead(a.head.in_features, hidden)
    merged = merge_cores([a, b, c])
    assert merged.config.n_heads == 4 and not merged.config.standardize_features
    batch = _batch(a)
    with torch.no_grad():
        # each model's heads, on its own MOS scale, weighted as heads: a 1, b 2, c 1
        mos = torch.cat([m.to_mos(m(**batch, per_head=True)) for m in (a, b, c)], dim=-1)
        torch.testing.assert_close(merged.to_mos(merged(**batch)), mos.mean(-1), atol=1e-3, rtol=1e-5)
    other = copy.deepcopy(a)
    with torch.no_grad():
        next(other.image_backbone.parameters()).add_(1.0)
    with pytest.raises(ValueError, match="other weights"):
        merge_cores([a, other])
    with pytest.raises(ValueError, match="head_hidden"):
        merge_cores([a, create_core("paper", pretrained=False, pretrained_text=True, **dict(kwargs, head_hidden=8))])


def test_final_fits_of_several_seeds_ship_as_one_model(tiny_core_kwargs, tmp_path):
    data, _, _ = planted_manifest(tmp_path / "data", 30)
    out = tmp_path / "final"
    # text only: the tiny BERT loads the same weights for every seed (a random image backbone would not)
    train_core(_cfg(tiny_core_kwargs, data, out, folds=0, seeds=[42, 43], epochs=2, mode="text", save_dtype="float16"))
    seeds = [CoreModel.from_pretrained(out / f"seed{s}" / "fold0" / "best") for s in (42, 43)]
    ensemble = CoreModel.from_pretrained(out / "ensemble")
    assert ensemble.config.n_heads == 2
    from safetensors import safe_open

    with safe_open(str(out / "ensemble" / "model.safetensors"), framework="pt") as fh:
        assert fh.get_tensor("head.members.0.1.weight").dtype == torch.float16
    batch = ensemble.processor(None, TEXTS)
    with torch.no_grad():
        expected = torch.stack([m.to_mos(m(**batch)) for m in seeds]).mean(0)
        torch.testing.assert_close(ensemble.to_mos(ensemble(**batch)), expected, atol=1e-3, rtol=1e-5)


def test_flip_tta_scores_the_mean_of_the_image_and_its_mirror_image(tiny_core_kwargs):
    plain = create_core("paper", pretrained=False, pretrained_text=True, n_heads=2, **tiny_core_kwargs).eval()
    tta = copy.deepcopy(plain)
    tta.config.flip_tta = True
    batch = _batch(plain)
    batch["pixel_values"][:, :, :, :20] = 0.0  # not mirror-symmetric
    mirrored = dict(batch, pixel_values=batch["pixel_values"].flip(-1))
    with torch.no_grad():
        torch.testing.assert_close(tta(**batch), (plain(**batch) + plain(**mirrored)) / 2)
        torch.testing.assert_close(tta(**batch, per_head=True), (plain(**batch, per_head=True) + plain(**mirrored, per_head=True)) / 2)
        assert tta.features(**batch).shape == (2, 2, plain.head.in_features)
        assert not torch.allclose(plain(**batch), plain(**mirrored))
