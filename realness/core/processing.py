"""Turn images and descriptions into CORE's input tensors, with the paper's training augmentation."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from realness.boxes import strip_boxes
from realness.core.configuration import CoreConfig

MAX_STRIP = 8  # crops: the scaled image's longer side is at most this many crop widths (a panorama is squeezed)


def _scaled_size(h: int, w: int, how: str, size: tuple[int, int]) -> tuple[int, int]:
    """(width, height) the image is brought to before cropping: `crops` covers `size` with the shape kept (a strip
    more than `MAX_STRIP` crops long is squeezed to that length, so a 10000x10 banner cannot take gigabytes);
    `native` keeps the image as it is unless it is smaller than `size`."""
    height, width = size
    scale = max(height / h, width / w) if how == "crops" else max(1.0, height / h, width / w)
    if scale == 1.0:
        return w, h
    new_w, new_h = max(width, round(w * scale)), max(height, round(h * scale))
    if how == "crops":
        new_w, new_h = min(new_w, MAX_STRIP * width), min(new_h, MAX_STRIP * height)
    return new_w, new_h


def _crop_origins(w: int, h: int, size: tuple[int, int], n: int) -> list[tuple[int, int]]:
    """Top-left corners of `n` crops of `size` evenly spaced from the top-left to the bottom-right of a w x h image
    (one crop: the centre)."""
    height, width = size
    spots = np.linspace(0.0, 1.0, n) if n > 1 else np.array([0.5])
    return [(round((w - width) * t), round((h - height) * t)) for t in spots]


def image_views(img: Image.Image, how: str, size: tuple[int, int], n: int = 1) -> list[Image.Image]:
    """What the image backbone sees of one image.

    `resize`: the whole image squashed to `size` (height, width), whatever its shape (the paper's input).
    `crops`: the image scaled, its shape kept, so that it just covers `size`, then `n` crops of `size` evenly spaced
    from the top-left to the bottom-right corner (a 4:3 photo and a square both keep their geometry; with two
    crops a 4:3 image is read whole).
    `native`: `n` crops of `size` from the image at its own resolution (scaled up only when smaller than `size`),
    so fine detail reaches the backbone unchanged and memory does not grow with the image.
    """
    height, width = size
    if how == "resize":
        return [img.resize((width, height), Image.Resampling.BILINEAR)]
    w, h = _scaled_size(img.size[1], img.size[0], how, size)
    if (w, h) != img.size:
        img = img.resize((w, h), Image.Resampling.BILINEAR)
    return [img.crop((x0, y0, x0 + width, y0 + height)) for x0, y0 in _crop_origins(w, h, size, n)]


def tensor_views(images: torch.Tensor, how: str, size: tuple[int, int], n: int = 1) -> torch.Tensor:
    """`image_views` on a batch of equal-sized images (B, 3, H, W), differentiably (the reward's path): (B, 3, h, w)
    for `resize`, else (B, n, 3, h, w)."""
    import torch.nn.functional as F

    height, width = size
    h, w = images.shape[-2:]

    def scaled(x, new_h, new_w):
        if (new_h, new_w) == (h, w):
            return x
        return F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True)

    if how == "resize":
        return scaled(images, height, width)
    new_w, new_h = _scaled_size(h, w, how, size)
    images = scaled(images, new_h, new_w)
    return torch.stack([images[..., y0:y0 + height, x0:x0 + width]
                        for x0, y0 in _crop_origins(new_w, new_h, size, n)], dim=1)


class CoreProcessor:
    """Resize + normalise images and tokenise descriptions the way a given `CoreConfig` expects.

    Training augmentation (the paper's): horizontal flip, rotation within +-10 degrees, colour jitter.
    Augmentation draws from torch's global generator, so a seeded run (and a resumed one, whose RNG
    state is restored from the checkpoint) repeats exactly.
    """

    def __init__(self, config: CoreConfig, tokenizer=None):
        self.config = config
        self.tokenizer = tokenizer
        if config.uses_text and tokenizer is None:
            raise ValueError("a text or fusion CORE needs a tokenizer")
        self._mean = torch.tensor(config.image_mean).view(3, 1, 1)
        self._std = torch.tensor(config.image_std).view(3, 1, 1)

    def _augment(self, img: Image.Image) -> Image.Image:
        from torchvision.transforms import ColorJitter  # pure-Python part of torchvision

        if torch.rand(()) < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        angle = float(torch.empty(()).uniform_(-10.0, 10.0))
        img = img.rotate(angle, resample=Image.Resampling.BILINEAR, fillcolor=(0, 0, 0))
        return ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02)(img)

    def image_tensor(self, img: Image.Image, augment: bool = False) -> torch.Tensor:
        """One RGB PIL image as a normalised (3, H, W) float tensor, or (V, 3, H, W) for several views."""
        if augment:
            img = self._augment(img)
        views = [self._normalise(v) for v in image_views(img, self.config.image_views, self.config.image_size,
                                                          self.config.n_views)]
        return views[0] if self.config.image_views == "resize" else torch.stack(views)

    def _normalise(self, img: Image.Image) -> torch.Tensor:
        x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
        return (x - self._mean) / self._std

    def __call__(
        self,
        images: Sequence[Image.Image] | None = None,
        descriptions: Sequence[str] | None = None,
        augment: bool = False,
    ) -> dict[str, torch.Tensor]:
        batch: dict[str, torch.Tensor] = {}
        if self.config.uses_image:
            if images is None:
                raise ValueError("this CORE model needs images")
            batch["pixel_values"] = torch.stack([self.image_tensor(im, augment) for im in images])
        if self.config.uses_text:
            if descriptions is None:
                raise ValueError("this CORE model needs descriptions")
            batch.update(self.tokenize(descriptions))
        return batch

    def tokenize(self, descriptions: Sequence[str]) -> dict[str, torch.Tensor]:
        """`input_ids` and `attention_mask` for descriptions, cut at `max_text_tokens`; a grounded claim's box
        (`realness.boxes`) is not read: CORE learnt from descriptions without boxes."""
        empty = [i for i, d in enumerate(descriptions) if not str(d).strip()]
        if empty:
            raise ValueError(f"empty description at batch position(s) {empty}")
        tokens = self.tokenizer(
            [strip_boxes(str(d)) for d in descriptions],
            padding=True,
            truncation=True,
            max_length=self.config.max_text_tokens,
            return_tensors="pt",
        )
        return {"input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"]}
