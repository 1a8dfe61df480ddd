"""Realness as a training signal: a batched, differentiable reward for image generators.

    from realness.reward import RealnessReward, RealnessLoss, ddpo_reward_fn, best_of_n

    reward = RealnessReward("offline-image", device="cuda", dtype=torch.bfloat16)
    r = reward(images)                     # images: B x 3 x H x W in [0, 1], any size; r: (B,), differentiable
    loss = RealnessLoss(reward)(images)    # lower = more real: backpropagate through a generator (DRaFT, AlignProp)
    fn = ddpo_reward_fn(reward)            # (images, prompts, metadata) -> (rewards, metadata): DDPO, Flow-GRPO
    order, r = best_of_n(reward, images)   # most real first, for best-of-n and reward-weighted filtering

CORE's image branch runs on the pixels as given: resizing (bilinear, antialiased) and normalisation are torch
operations, so gradients reach the pixels. The reward is CORE's predicted realness z-score (`scale="z"`: 0 is
the training set's mean opinion, 1 one standard deviation of it) or the MOS scale it was trained on
(`scale="mos"`: RAISE's 0-100, not clipped, so the gradient never vanishes at the ends).

`quantize` (default on) rounds the resized image to 8 bits in the forward pass, with a straight-through
gradient: CORE's features respond to the difference between smooth float pixels and 8-bit ones (up to 0.22
z on the samples), and `predict` reads 8-bit images; with it the reward is within 0.022 z of `predict`
on the samples, and exactly on images already at the model's input size.

A reward model trained on 510 images is easy to push: see `realness reward-audit` (`realness.reward_audit`)
and README "Realness as a reward". Two options make it harder, each measured there:

- `aggregate`: how the bundled model's heads (three seeds) are combined: `mean` (what `predict` scores),
  `min` (the most pessimistic head), `lcb` (mean minus their standard deviation).
- `augment_views`: an expectation over random transformations (resized crop of 80-100 % of the side, a
  horizontal flip, a small brightness change) at every call: `n` views per image, averaged.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from realness.core import CoreModel
from realness.core.processing import tensor_views
from realness.devices import resolve_device
from realness.images import load_image

SCALES = ("z", "mos")
AGGREGATES = ("mean", "min", "lcb")


class RealnessReward(torch.nn.Module):
    """CORE as a differentiable function of pixels. Its weights are frozen (the reward never trains)."""

    def __init__(self, model: str | Path = "offline-image", device: str | torch.device = "cpu",
                 dtype: torch.dtype | None = None, scale: str = "z", aggregate: str = "mean",
                 augment_views: int = 0, quantize: bool = True, seed: int | None = None):
        super().__init__()

        if scale not in SCALES:
            raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
        if aggregate not in AGGREGATES:
            raise ValueError(f"aggregate must be one of {AGGREGATES}, got {aggregate!r}")
        if augment_views < 0:
            raise ValueError(f"augment_views must be 0 (off) or more, got {augment_views}")
        self.device = torch.device(resolve_device(str(device)))
        self.core = CoreModel.from_pretrained(model, device=self.device).eval().requires_grad_(False)
        config = self.core.config
        if scale == "mos" and (config.mos_mean is None or config.mos_std is None):
            raise ValueError(f"{model}: no MOS scale recorded in this CORE model; use scale='z'")
        self.name, self.scale, self.aggregate, self.augment_views = str(model), scale, aggregate, augment_views
        self.quantize = quantize
        self.dtype = dtype
        self.register_buffer("mean", torch.tensor(config.image_mean, device=self.device).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(config.image_std, device=self.device).view(1, 3, 1, 1))
        self.generator = torch.Generator(device="cpu")
        if seed is not None:
            self.generator.manual_seed(seed)

    @property
    def uses_text(self) -> bool:
        return self.core.config.uses_text

    @property
    def n_heads(self) -> int:
        return self.core.config.n_heads

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """B x 3 x H x W in [0, 1] -> CORE's normalised input: its views at its image size (differentiable)."""
        images = as_batch(images).to(self.device)
        c = self.core.config
        images = tensor_views(images, c.image_views, c.image_size, c.n_views)
        if self.quantize:  # 8 bits, as CORE saw in training and `predict` feeds it; the gradient passes straight through
            images = images + ((images.clamp(0, 1) * 255).round() / 255 - images).detach()
        return (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)

    def _views(self, images: torch.Tensor) -> torch.Tensor:
        """`augment_views` random views of each image: (views * B) x 3 x H x W, view-major."""
        b, _, h, w = images.shape
        out = []
        for _ in range(self.augment_views):
            side = float(torch.empty(()).uniform_(0.8, 1.0, generator=self.generator))
            ch, cw = max(8, round(h * side)), max(8, round(w * side))
            top = int(torch.randint(0, h - ch + 1, (), generator=self.generator))
            left = int(torch.randint(0, w - cw + 1, (), generator=self.generator))
            view = images[:, :, top:top + ch, left:left + cw]
            if torch.rand((), generator=self.generator) < 0.5:
                view = view.flip(-1)
            gain = float(torch.empty(()).uniform_(0.9, 1.1, generator=self.generator))
            view = (view * gain).clamp(0, 1)
            out.append(F.interpolate(view, size=(h, w), mode="bilinear", align_corners=False, antialias=True))
        return torch.cat(out)

    def heads(self, images: torch.Tensor, texts: Sequence[str] | None = None) -> torch.Tensor:
        """Every head's z-score, (B, n_heads), averaged over the augmented views when there are any."""
        images = as_batch(images).to(self.device)
        if self.augment_views:
            images = self._views(images)
        text_inputs = {}
        if self.uses_text:
            if texts is None:
                raise ValueError(f"{self.name} reads descriptions too: pass texts (prompts or descriptions), one per image")
            texts = list(texts) * (self.augment_views or 1)
            if len(texts) != len(images):
                raise ValueError(f"{len(texts)} texts for {len(images)} images")
            text_inputs = {k: v.to(self.device) for k, v in self.core.processor.tokenize(texts).items()}
        pixels = self.preprocess(images) if self.core.config.uses_image else None
        autocast = torch.autocast(self.device.type, dtype=self.dtype) if self.dtype not in (None, torch.float32) \
            else contextlib.nullcontext()
        with autocast:
            z = self.core(pixel_values=pixels, **text_inputs, per_head=True).float()
        if self.augment_views:
            z = z.view(self.augment_views, -1, z.shape[-1]).mean(0)
        return z

    def forward(self, images: torch.Tensor, texts: Sequence[str] | None = None) -> torch.Tensor:
        """One reward per image, (B,): higher = more real, on `scale`."""
        z = self.heads(images, texts)
        if self.aggregate == "mean":
            z = z.mean(-1)
        elif self.aggregate == "min":
            z = z.min(-1).values
        else:  # lower confidence bound over the heads
            z = z.mean(-1) - (z.std(-1, unbiased=False) if z.shape[-1] > 1 else 0.0)
        if self.scale == "mos":
            c = self.core.config
            return z * c.mos_std + c.mos_mean
        return z


def as_batch(images) -> torch.Tensor:
    """Images as a float B x 3 x H x W tensor in [0, 1]: a tensor (B x 3 x H x W or 3 x H x W, float in [0, 1]
    or uint8), a NumPy array (B x H x W x 3 or H x W x 3, uint8 or float in [0, 1]) or a list of PIL images
    (all one size). Tensors keep their graph."""
    if isinstance(images, (list, tuple)) and images and not torch.is_tensor(images[0]):
        images = np.stack([np.asarray(im.convert("RGB")) for im in images])
    if isinstance(images, np.ndarray):
        arr = images[None] if images.ndim == 3 else images
        images = torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2)
    if isinstance(images, (list, tuple)):
        images = torch.stack(list(images))
    if not torch.is_tensor(images):
        raise TypeError(f"images must be a tensor, an array or PIL images, got {type(images).__name__}")
    if images.dim() == 3:
        images = images[None]
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be B x 3 x H x W, got shape {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        return images.float() / 255.0
    return images if images.is_floating_point() else images.float()


class RealnessLoss(torch.nn.Module):
    """`-reward` (lower = more real) for backpropagation through a generator; `reduction` mean, sum or none."""

    def __init__(self, reward: RealnessReward | None = None, reduction: str = "mean", **reward_options):
        super().__init__()
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be mean, sum or none, got {reduction!r}")
        self.reward = reward or RealnessReward(**reward_options)
        self.reduction = reduction

    def forward(self, images: torch.Tensor, texts: Sequence[str] | None = None) -> torch.Tensor:
        loss = -self.reward(images, texts)
        return loss.mean() if self.reduction == "mean" else loss.sum() if self.reduction == "sum" else loss


def ddpo_reward_fn(reward: RealnessReward | None = None, batch_size: int = 32, texts_from: str = "prompts",
                   **reward_options):
    """A reward function with the signature of DDPO's reference implementation (`ddpo-pytorch`), which Flow-GRPO
    and later GRPO-style codebases for diffusion and flow models keep: `fn(images, prompts, metadata)` returns
    `(rewards, metadata)`, rewards a float32 NumPy array of shape (B,). Images: a B x 3 x H x W tensor in
    [0, 1], a B x H x W x 3 uint8 array or PIL images. No gradients (policy-gradient methods need none).
    A fusion CORE reads `texts_from`: `prompts`, or a key of each item's metadata (e.g. `description`)."""
    reward = reward or RealnessReward(**reward_options)

    def fn(images, prompts=None, metadata=None):
        images = as_batch(images)
        texts = None
        if reward.uses_text:
            texts = list(prompts) if texts_from == "prompts" else [m[texts_from] for m in metadata]
        out = []
        with torch.no_grad():
            for s in range(0, len(images), batch_size):
                out.append(reward(images[s:s + batch_size], texts[s:s + batch_size] if texts else None).float().cpu())
        rewards = torch.cat(out).numpy().astype(np.float32)
        return rewards, {"realness_model": reward.name, "scale": reward.scale}

    return fn


@torch.no_grad()
def best_of_n(reward: RealnessReward, images, texts: Sequence[str] | None = None, k: int | None = None,
              batch_size: int = 32) -> tuple[list[int], torch.Tensor]:
    """`(order, rewards)`: indices of `images` from most to least real (the first `k` when given) and every
    image's reward, for best-of-n selection and reward-weighted filtering."""
    images = as_batch(images)
    values = torch.cat([reward(images[s:s + batch_size], texts[s:s + batch_size] if texts else None).float().cpu()
                        for s in range(0, len(images), batch_size)])
    order = torch.argsort(values, descending=True).tolist()
    return (order[:k] if k else order), values


@torch.no_grad()
def rank_files(reward: RealnessReward, paths: Sequence[str | Path], texts: dict[str, str] | None = None,
               max_side: int | None = None) -> list[tuple[Path, float]]:
    """`(path, reward)` for image files, most real first (one at a time: files may differ in size)."""

    scored = []
    for path in map(Path, paths):
        image = load_image(path)
        if max_side and max(image.size) > max_side:
            image.thumbnail((max_side, max_side))
        text = [texts[path.name]] if texts else None
        scored.append((path, float(reward(as_batch([image]), text)[0])))
    return sorted(scored, key=lambda item: -item[1])


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB of two images in [0, 1]."""
    mse = float(((a - b) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)
