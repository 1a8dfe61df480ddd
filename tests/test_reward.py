"""`realness.reward`: a differentiable realness reward on pixels, its adapters, the audit and the worked example."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from realness.reward import RealnessLoss, RealnessReward, as_batch, best_of_n, ddpo_reward_fn

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = sorted((ROOT / "realness" / "samples" / "images").iterdir())


@pytest.fixture(scope="module")
def reward():
    """Three heads (the RAISE-only image model), so the heads' aggregates are exercised."""
    return RealnessReward("offline-image-raise")


@pytest.fixture(scope="module")
def photos():
    return [Image.open(p).convert("RGB") for p in SAMPLES]


@pytest.mark.parametrize("name", ["offline-image-raise", "offline-image"])
def test_reward_equals_predict_with_augmentations_off(name, photos):
    """Both bundled image models, the squashed input and the shape-keeping crops (`tensor_views`)."""
    reward = RealnessReward(name)
    h, w = reward.core.config.image_size
    sized = [im.resize((w, h), Image.Resampling.BILINEAR) for im in photos]
    with torch.no_grad():
        torch.testing.assert_close(reward(as_batch(sized)), reward.core.predict(sized, batch_size=3), atol=1e-4, rtol=0)
        own_size = torch.cat([reward(as_batch([im])) for im in photos])  # resized in torch, 8-bit rounded
    assert (own_size - reward.core.predict(photos, batch_size=3)).abs().max() < 0.05


def test_gradients_reach_the_pixels_and_batches_equal_one_by_one(reward, photos):
    x = as_batch([im.resize((128, 96)) for im in photos[:3]]).requires_grad_(True)
    r = reward(x)
    assert r.shape == (3,) and r.requires_grad
    r.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    with torch.no_grad():
        one = torch.cat([reward(x[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(r.detach(), one, atol=1e-5, rtol=0)
    for size in ((64, 64), (200, 333)):  # any size
        assert reward(torch.rand(2, 3, *size)).shape == (2,)


def test_scales_and_aggregates(reward, photos):
    x = as_batch([im.resize((128, 96)) for im in photos[:2]])
    with torch.no_grad():
        heads = reward.heads(x)
        assert heads.shape == (2, reward.n_heads) and reward.n_heads == 3
        torch.testing.assert_close(reward(x), heads.mean(-1))
        mos = RealnessReward("offline-image-raise", scale="mos")(x)
        c = reward.core.config
        torch.testing.assert_close(mos, heads.mean(-1) * c.mos_std + c.mos_mean)
        assert (RealnessReward("offline-image-raise", aggregate="min")(x) <= heads.mean(-1) + 1e-6).all()
    with pytest.raises(ValueError, match="aggregate"):
        RealnessReward("offline-image", aggregate="median")


def test_adapters_give_the_documented_shapes_and_types(reward, photos):
    fn = ddpo_reward_fn(reward)
    tensors = as_batch([im.resize((128, 96)) for im in photos[:3]])
    rewards, meta = fn(tensors, ["a photo"] * 3, [{}] * 3)
    assert isinstance(rewards, np.ndarray) and rewards.dtype == np.float32 and rewards.shape == (3,)
    assert meta["realness_model"] == "offline-image-raise"
    nhwc = (tensors.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    np.testing.assert_allclose(fn(nhwc, None, None)[0], rewards, atol=1e-4)
    order, values = best_of_n(reward, tensors, k=2)
    assert len(order) == 2 and values[order[0]] == values.max() and values[order[0]] >= values[order[1]]
    loss = RealnessLoss(reward)(tensors)
    torch.testing.assert_close(loss, -values.mean().to(loss), atol=1e-5, rtol=0)


def test_a_few_steps_of_pixel_ascent_raise_the_reward(reward, photos):
    from realness.reward_audit import attack

    x = as_batch([photos[0].resize((128, 96))])
    rows = attack(reward, x, steps=3, epsilon=8 / 255, step_size=2 / 255,
                  watch=lambda im: {"attacked": float(reward(im.detach()).mean())})
    assert rows[-1]["attacked"] > rows[0]["attacked"] + 0.05  # a broken gradient does not climb
    assert (rows[-1]["images"] - x).abs().max() <= 8 / 255 + 1e-6  # within the budget


def test_eot_views_are_seeded_and_differentiable(photos):
    x = as_batch([photos[0].resize((128, 96))]).requires_grad_(True)
    a = RealnessReward("offline-image", augment_views=2, seed=3)
    b = RealnessReward("offline-image", augment_views=2, seed=3)
    ra, rb = a(x), b(x)
    torch.testing.assert_close(ra, rb)
    ra.sum().backward()
    assert x.grad.abs().sum() > 0


@pytest.mark.slow
def test_reward_audit_writes_its_table_plot_and_grid(tmp_path):
    from realness.cli import main

    folder = tmp_path / "photos"
    folder.mkdir()
    Image.open(SAMPLES[0]).convert("RGB").resize((128, 96)).save(folder / "r0.png")
    out = tmp_path / "audit"
    assert main(["reward-audit", str(folder), "--out", str(out), "--steps", "2", "--settings", "plain", "eot",
                 "--progress", "false"]) == 0
    report = json.loads((out / "audit.json").read_text())
    assert set(report["settings"]) == {"plain", "eot"}
    plain = report["settings"]["plain"]
    assert len(plain["steps"]) == 3 and plain["gain_attacked"] > 0
    assert plain["steps"][-1]["psnr"] < 100 and 0 < plain["steps"][-1]["ssim"] <= 1
    assert {"audit", "plain", "artifact_mean_after"} <= set(plain["steps"][-1]) | set(plain)
    assert (out / "audit.png").stat().st_size > 1000 and (out / "grid.png").is_file()


@pytest.mark.slow
def test_the_worked_example_trains_the_generator_and_the_reward_moves(tmp_path):
    sys.path.insert(0, str(ROOT / "eval"))
    import example_reward_finetune as ex

    result = ex.main(["--steps", "4", "--pretrain-steps", "10", "--lr", "2e-3", "--out", str(tmp_path)])
    assert result["held_out_after"]["reward"] != result["held_out_before"]["reward"]
    assert result["curve"][-1]["step"] == 4 and (tmp_path / "grid.png").is_file()
    assert result["held_out_after"]["distance_to_start"] > 0
