"""Turn images and descriptions into CORE's input tensors, with the paper's training augmentation."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from realness.boxes import strip_boxes
from realness.core.configuration import CoreConfig


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
        """One RGB PIL image as a normalised (3, H, W) float tensor."""
        height, width = self.config.image_size
        img = img.resize((width, height), Image.Resampling.BILINEAR)
        if augment:
            img = self._augment(img)
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
