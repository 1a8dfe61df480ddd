"""Floors for localization: maps that know nothing of the artifact, scored in the same run as a real map.

- `centre`: a Gaussian centred on the image (sigma a quarter of each side): edits and subjects sit near
  the middle more often than not, so this floor is far above chance.
- `random`: uniform noise (seeded), smoothed to the artifact map's cell size; pixel AUROC about 0.5.
- `texture`: local gradient energy (Sobel magnitude, Gaussian-pooled): "where there is detail".
- `boxes`: the detected regions' boxes alone (1 inside any box, 0 outside; a small centre prior breaks ties).
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage

from realness.dream.regions import Region, box_mask

FLOORS = ("centre", "random", "texture", "boxes")


def centre_prior(shape: tuple[int, int]) -> np.ndarray:
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return np.exp(-(((yy - (h - 1) / 2) / (h / 4)) ** 2 + ((xx - (w - 1) / 2) / (w / 4)) ** 2) / 2).astype(np.float32)


def random_map(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return ndimage.gaussian_filter(rng.random(shape).astype(np.float32), 4)


def texture_map(image: Image.Image, shape: tuple[int, int]) -> np.ndarray:
    gray = np.asarray(image.convert("L").resize((shape[1], shape[0]), Image.Resampling.BILINEAR), np.float32) / 255
    energy = np.hypot(ndimage.sobel(gray, 0), ndimage.sobel(gray, 1))
    return ndimage.gaussian_filter(energy, max(1.0, max(shape) / 64)).astype(np.float32)


def boxes_map(regions: list[dict], shape: tuple[int, int], image_size: tuple[int, int]) -> np.ndarray:
    inside = box_mask([Region.from_dict(r) for r in regions], shape, image_size)
    return inside + 0.01 * centre_prior(shape)


def floor_maps(shape: tuple[int, int], image: Image.Image | None = None, regions: list[dict] | None = None,
               image_size: tuple[int, int] | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """Every floor that can be computed from what is given (texture needs the image, boxes the regions)."""
    out = {"centre": centre_prior(shape), "random": random_map(shape, seed)}
    if image is not None:
        out["texture"] = texture_map(image, shape)
    if regions is not None and image_size is not None:
        out["boxes"] = boxes_map(regions, shape, image_size)
    return out
