"""Local corruptions of real photographs, with their masks: training and validation data for the artifact map.

Forensics learns to localize artifacts without any fake image by corrupting real ones locally and asking
for the mask (Face X-ray, Li et al., CVPR 2020; self-blended images, Shiohara & Yamasaki, CVPR 2022). A
single recipe teaches a detector that recipe; a broad family teaches "locally inconsistent". This family
(`KINDS`), each at a random strength, inside a random soft-edged region (ellipse, polygon, blob or
rectangle, 1-20 % of the image):

| kind | what changes inside the region | family |
|---|---|---|
| `blur` | Gaussian blur (sigma 1.2-5 px) | smoothing |
| `smear` | inpainted from its border (OpenCV Telea/NS), a large median filter, or motion blur | generative-looking smears |
| `noise` | Gaussian or per-channel noise (sigma 0.02-0.08) | texture / sensor |
| `sharpen` | unsharp mask (amount 1.5-4) or colour posterisation | texture |
| `resample` | down- and up-sampled (3-8x, nearest or bilinear) | texture / resolution |
| `jpeg` | recompressed at quality 5-30 | compression |
| `color` | channel gains, gamma, brightness and saturation changed | colour / lighting |
| `copy_move` | a copy of another part of the same image (optionally flipped) | repetition |
| `repeat` | a small patch of the image tiled over the region | repetition |
| `splice` | another photograph's content | boundary |
| `self_blend` | the image itself slightly rescaled, shifted and colour-jittered (SBI) | boundary |
| `warp` | a smooth local displacement (swirl, bulge/pinch or elastic) | geometric |

`corrupt(image, rng)` returns the corrupted image, the boolean mask (where the region's blend weight is
above 0.5 and the pixels changed) and what was applied. `planted_set(...)` writes a validation set of
images and masks that `realness eval-maps` reads. Images are float32 (H, W, 3) arrays in [0, 1].
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

KINDS = ("blur", "smear", "noise", "sharpen", "resample", "jpeg", "color", "copy_move", "repeat", "splice",
         "self_blend", "warp")
SHAPES = ("ellipse", "polygon", "blob", "rectangle")


@dataclass
class CorruptionConfig:
    """Which corruptions `corrupt` draws from, and how large they are."""

    kinds: tuple[str, ...] = field(default=KINDS, metadata={"help": f"Corruption kinds to draw from (any of {', '.join(KINDS)})."})
    min_area: float = field(default=0.01, metadata={"help": "Smallest region, as a fraction of the image area."})
    max_area: float = field(default=0.2, metadata={"help": "Largest region, as a fraction of the image area."})
    max_regions: int = field(default=2, metadata={"help": "At most this many corrupted regions per image."})
    clean_fraction: float = field(default=0.1, metadata={"help": "Share of training images left clean (an all-zero "
                                                                 "mask)."})
    final_jpeg: float = field(default=0.5, metadata={"help": "Share of images saved once more as JPEG (quality 70-95) "
                                                             "after corruption."})

    def __post_init__(self):
        self.kinds = tuple(self.kinds)
        unknown = [k for k in self.kinds if k not in KINDS]
        if unknown or not self.kinds:
            raise ValueError(f"unknown corruption kind(s) {unknown}; choose from {list(KINDS)}")
        if not 0 < self.min_area <= self.max_area < 1:
            raise ValueError("need 0 < min_area <= max_area < 1")


# ---- regions ------------------------------------------------------------------------------------------
def region_alpha(h: int, w: int, rng: np.random.Generator, area: float, shape: str | None = None) -> np.ndarray:
    """A soft region mask (H, W) float32 in [0, 1] covering about `area` of the image."""
    shape = shape or SHAPES[rng.integers(len(SHAPES))]
    target = area * h * w
    aspect = float(np.exp(rng.uniform(-0.7, 0.7)))
    rh = min(h * 0.95, np.sqrt(target / aspect) * (1.25 if shape != "rectangle" else 1.0))
    rw = min(w * 0.95, target / max(rh, 1.0) * (1.25 if shape != "rectangle" else 1.0))
    cy = rng.uniform(rh / 2, h - rh / 2)
    cx = rng.uniform(rw / 2, w - rw / 2)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    dy, dx = (yy - cy) / max(rh / 2, 1), (xx - cx) / max(rw / 2, 1)
    if shape == "ellipse":
        theta = rng.uniform(0, np.pi)
        u, v = dx * np.cos(theta) + dy * np.sin(theta), -dx * np.sin(theta) + dy * np.cos(theta)
        mask = u * u + v * v <= 1
    elif shape == "rectangle":
        mask = (np.abs(dx) <= 1) & (np.abs(dy) <= 1)
    elif shape == "polygon":
        n = int(rng.integers(5, 12))
        angles = np.sort(rng.uniform(0, 2 * np.pi, n))
        radii = rng.uniform(0.45, 1.0, n)
        ang = np.arctan2(dy, dx) % (2 * np.pi)
        # radius of the star-shaped polygon at each pixel's angle, linear between vertices
        r = np.interp(ang, np.concatenate([angles, angles[:1] + 2 * np.pi]), np.concatenate([radii, radii[:1]]),
                      period=2 * np.pi)
        mask = np.hypot(dx, dy) <= r
    else:  # blob: smoothed noise thresholded inside an ellipse
        noise = ndimage.gaussian_filter(rng.standard_normal((h, w)).astype(np.float32), sigma=max(2.0, min(rh, rw) / 6))
        noise = (noise - noise.mean()) / (noise.std() + 1e-8)
        mask = (dx * dx + dy * dy + 0.35 * noise) <= 1
    alpha = mask.astype(np.float32)
    feather = float(rng.uniform(0, 4))
    if feather > 0.3:
        alpha = ndimage.gaussian_filter(alpha, feather)
    return alpha


# ---- corruptions: each maps (image, alpha, rng, donor) to a full-size altered image --------------------
def _blur(img, alpha, rng, donor):
    s = rng.uniform(1.2, 5.0)
    return ndimage.gaussian_filter(img, (s, s, 0))


def _smear(img, alpha, rng, donor):
    choice = rng.integers(3)
    if choice == 0:
        try:
            import cv2

            u8 = (np.clip(img, 0, 1) * 255).astype(np.uint8)
            hole = (alpha > 0.05).astype(np.uint8)
            method = cv2.INPAINT_TELEA if rng.random() < 0.5 else cv2.INPAINT_NS
            return cv2.inpaint(u8, hole, float(rng.uniform(3, 9)), method).astype(np.float32) / 255
        except ImportError:
            choice = 1
    if choice == 1:
        k = int(rng.integers(4, 8)) * 2 + 1
        return ndimage.median_filter(img, size=(k, k, 1))
    c = int(rng.integers(4, 16))
    length = 2 * c + 1
    theta = rng.uniform(0, np.pi)
    kernel = np.zeros((length, length), np.float32)
    for t in np.linspace(-c, c, 2 * length):
        kernel[int(round(c + t * np.sin(theta))), int(round(c + t * np.cos(theta)))] = 1
    kernel /= kernel.sum()
    return np.stack([ndimage.convolve(img[..., ch], kernel, mode="reflect") for ch in range(3)], -1)


def _noise(img, alpha, rng, donor):
    s = rng.uniform(0.02, 0.08)
    shape = img.shape if rng.random() < 0.5 else img.shape[:2] + (1,)
    return img + rng.standard_normal(shape).astype(np.float32) * s


def _sharpen(img, alpha, rng, donor):
    if rng.random() < 0.6:
        blurred = ndimage.gaussian_filter(img, (1.5, 1.5, 0))
        return img + rng.uniform(1.5, 4.0) * (img - blurred)
    levels = int(rng.integers(3, 9))
    return np.round(img * levels) / levels


def _resample(img, alpha, rng, donor):
    h, w = img.shape[:2]
    f = int(rng.integers(3, 9))
    small = Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).resize((max(1, w // f), max(1, h // f)), Image.Resampling.BILINEAR)
    method = Image.Resampling.NEAREST if rng.random() < 0.5 else Image.Resampling.BILINEAR
    return np.asarray(small.resize((w, h), method), np.float32) / 255


def _jpeg(img, alpha, rng, donor):
    return jpeg_roundtrip(img, int(rng.integers(5, 31)))


def _color(img, alpha, rng, donor):
    out = img * rng.uniform(0.75, 1.3, 3).astype(np.float32)
    out = np.clip(out, 0, 1) ** rng.uniform(0.6, 1.6)
    out = out + rng.uniform(-0.15, 0.15)
    gray = out.mean(-1, keepdims=True)
    return gray + (out - gray) * rng.uniform(0.3, 1.8)


def _shift(img, rng, alpha) -> np.ndarray:
    """`img` rolled so that another part of it lands on the region (at least the region's size away)."""
    h, w = img.shape[:2]
    ys, xs = np.nonzero(alpha > 0.5)
    rh, rw = (int(np.ptp(ys)) + 1, int(np.ptp(xs)) + 1) if len(ys) else (h // 4, w // 4)
    dy = int(rng.integers(min(rh, h // 2), max(min(rh, h // 2) + 1, h - rh + 1))) * rng.choice([-1, 1])
    dx = int(rng.integers(min(rw, w // 2), max(min(rw, w // 2) + 1, w - rw + 1))) * rng.choice([-1, 1])
    return np.roll(img, (dy, dx), axis=(0, 1))


def _copy_move(img, alpha, rng, donor):
    src = img[:, ::-1] if rng.random() < 0.3 else img
    return _shift(src, rng, alpha)


def _repeat(img, alpha, rng, donor):
    h, w = img.shape[:2]
    p = int(rng.integers(12, 49))
    y, x = int(rng.integers(0, max(1, h - p))), int(rng.integers(0, max(1, w - p)))
    tile = img[y:y + p, x:x + p]
    return np.tile(tile, (h // tile.shape[0] + 1, w // tile.shape[1] + 1, 1))[:h, :w]


def _splice(img, alpha, rng, donor):
    if donor is None:
        return _copy_move(img, alpha, rng, None)
    h, w = img.shape[:2]
    d = np.asarray(Image.fromarray((np.clip(donor, 0, 1) * 255).astype(np.uint8)).resize((w, h), Image.Resampling.BILINEAR),
                   np.float32) / 255
    return _shift(d, rng, alpha)


def _self_blend(img, alpha, rng, donor):
    h, w = img.shape[:2]
    scale = rng.uniform(1.02, 1.12)
    big = np.asarray(Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).resize(
        (int(w * scale), int(h * scale)), Image.Resampling.BILINEAR), np.float32) / 255
    oy, ox = int(rng.integers(0, big.shape[0] - h + 1)), int(rng.integers(0, big.shape[1] - w + 1))
    out = big[oy:oy + h, ox:ox + w]
    out = out * rng.uniform(0.85, 1.15, 3).astype(np.float32) + rng.uniform(-0.06, 0.06)
    return ndimage.gaussian_filter(out, (0.8, 0.8, 0)) if rng.random() < 0.5 else out


def _warp(img, alpha, rng, donor):
    h, w = img.shape[:2]
    ys, xs = np.nonzero(alpha > 0.5)
    cy, cx = (ys.mean(), xs.mean()) if len(ys) else (h / 2, w / 2)
    radius = max(8.0, np.sqrt(max(len(ys), 1) / np.pi))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    dy, dx = yy - cy, xx - cx
    r = np.hypot(dy, dx) / radius
    weight = np.clip(alpha, 0, 1)
    choice = rng.integers(3)
    if choice == 0:  # swirl
        angle = rng.uniform(0.6, 2.0) * rng.choice([-1, 1]) * weight * np.exp(-r)
        sy = cy + dx * np.sin(angle) + dy * np.cos(angle)
        sx = cx + dx * np.cos(angle) - dy * np.sin(angle)
    elif choice == 1:  # bulge (k < 0) or pinch (k > 0)
        k = rng.uniform(0.3, 0.7) * rng.choice([-1, 1])
        f = 1 + k * weight * (1 - np.clip(r, 0, 1))
        sy, sx = cy + dy * f, cx + dx * f
    else:  # elastic
        sigma = radius / 3
        amp = rng.uniform(4, 12)
        fy = ndimage.gaussian_filter(rng.standard_normal((h, w)).astype(np.float32), sigma)
        fx = ndimage.gaussian_filter(rng.standard_normal((h, w)).astype(np.float32), sigma)
        norm = max(float(np.abs(fy).max()), float(np.abs(fx).max()), 1e-6)
        sy, sx = yy + fy / norm * amp * weight, xx + fx / norm * amp * weight
    return np.stack([ndimage.map_coordinates(img[..., ch], [sy, sx], order=1, mode="reflect") for ch in range(3)], -1)


CORRUPTIONS: dict[str, Callable] = {
    "blur": _blur, "smear": _smear, "noise": _noise, "sharpen": _sharpen, "resample": _resample, "jpeg": _jpeg,
    "color": _color, "copy_move": _copy_move, "repeat": _repeat, "splice": _splice, "self_blend": _self_blend,
    "warp": _warp,
}


def jpeg_roundtrip(img: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray((np.clip(img, 0, 1) * 255).round().astype(np.uint8)).save(buf, "JPEG", quality=int(quality))
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"), np.float32) / 255


def apply_corruption(img: np.ndarray, kind: str, alpha: np.ndarray, rng: np.random.Generator,
                     donor: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`img` with `kind` blended in through `alpha`, and the label mask: inside the region (alpha > 0.5)
    where the pixels changed visibly (mean absolute change over the channels above 1/255)."""
    altered = np.clip(CORRUPTIONS[kind](img, alpha, rng, donor), 0, 1).astype(np.float32)
    a = alpha[..., None]
    out = img * (1 - a) + altered * a
    changed = np.abs(out - img).mean(-1) > 1 / 255
    if kind in ("blur", "smear", "sharpen", "resample", "jpeg", "noise"):
        # filters change flat areas little: label the whole region, smoothed changes included
        changed = ndimage.binary_closing(changed, iterations=3) | ndimage.binary_dilation(changed, iterations=2)
    mask = (alpha > 0.5) & changed
    return out.astype(np.float32), mask


def corrupt(img: np.ndarray, rng: np.random.Generator, config: CorruptionConfig | None = None,
            donor: np.ndarray | None = None, clean: bool | None = None) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """One training (or validation) sample: the corrupted image, its boolean mask and what was applied.

    A region whose change is too small to see (under 1 % of it changed visibly, e.g. blur on a flat sky)
    is redrawn, at most 5 times.
    """
    config = config or CorruptionConfig()
    h, w = img.shape[:2]
    mask = np.zeros((h, w), bool)
    applied: list[dict] = []
    if clean is None:
        clean = rng.random() < config.clean_fraction
    out = img.astype(np.float32)
    if not clean:
        n = 1 if config.max_regions <= 1 or rng.random() < 0.7 else int(rng.integers(2, config.max_regions + 1))
        for _ in range(n):
            for _attempt in range(5):
                kind = config.kinds[rng.integers(len(config.kinds))]
                area = float(np.exp(rng.uniform(np.log(config.min_area), np.log(config.max_area))))
                alpha = region_alpha(h, w, rng, area)
                new, m = apply_corruption(out, kind, alpha, rng, donor)
                if m.sum() >= 0.3 * (alpha > 0.5).sum() and m.sum() > 16:
                    out, mask = new, mask | m
                    applied.append({"kind": kind, "area": round(float(m.mean()), 4)})
                    break
    if rng.random() < config.final_jpeg:
        out = jpeg_roundtrip(out, int(rng.integers(70, 96)))
    return out, mask, applied


# ---- image pools and the planted validation set ------------------------------------------------------------
def to_array(image: Image.Image, long_side: int | None = 512) -> np.ndarray:
    """An RGB PIL image as float32 (H, W, 3) in [0, 1], its longer side resized to `long_side` (never up)."""
    image = image.convert("RGB")
    if long_side and max(image.size) > long_side:
        scale = long_side / max(image.size)
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.Resampling.BICUBIC)
    return np.asarray(image, np.float32) / 255


def packaged_photos() -> dict[str, Image.Image]:
    """Real colour photographs that ship in installed packages (scikit-image's data, scikit-learn's samples),
    by name. Packages that are missing give nothing."""
    photos: dict[str, Image.Image] = {}
    try:
        from skimage import data

        for name in ("astronaut", "chelsea", "coffee", "rocket", "motorcycle_left", "hubble_deep_field", "immunohistochemistry",
                     "colorwheel", "retina", "cat"):
            loader = getattr(data, name, None)
            if loader is None:
                continue
            try:
                arr = np.asarray(loader())
            except Exception:  # noqa: BLE001 - a data file that needs pooch/network is skipped
                continue
            if arr.ndim == 3 and arr.shape[2] >= 3 and name not in ("colorwheel", "hubble_deep_field", "immunohistochemistry", "retina"):
                photos[f"skimage-{name}"] = Image.fromarray(arr[..., :3].astype(np.uint8))
    except ImportError:
        pass
    try:
        from sklearn.datasets import load_sample_images

        for name, arr in zip(("china", "flower"), load_sample_images().images):
            photos[f"sklearn-{name}"] = Image.fromarray(arr)
    except ImportError:
        pass
    return photos


def planted_set(photos: Sequence[tuple[str, Image.Image]], out: str | Path, per_image: int = 3, seed: int = 0,
                config: CorruptionConfig | None = None, long_side: int = 512) -> list[dict]:
    """Write `images/<name>_<k>.png` and `masks/<name>_<k>.png` (one corruption kind each, cycling through
    `config.kinds` so every kind is present) and `planted.json` listing what each image holds."""
    config = config or CorruptionConfig()
    config = CorruptionConfig(**{**config.__dict__, "max_regions": 1, "clean_fraction": 0.0})
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = [(name, to_array(img, long_side)) for name, img in photos]
    rows, k = [], 0
    for i, (name, arr) in enumerate(arrays):
        for j in range(per_image):
            kind = config.kinds[k % len(config.kinds)]
            k += 1
            donor = arrays[(i + 1 + j) % len(arrays)][1]
            one = CorruptionConfig(**{**config.__dict__, "kinds": (kind,)})
            img, mask, applied = corrupt(arr, rng, one, donor=donor, clean=False)
            if not mask.any():
                continue
            stem = f"{name}_{j}"
            Image.fromarray((img * 255).round().astype(np.uint8)).save(out / "images" / f"{stem}.png")
            Image.fromarray(mask.astype(np.uint8) * 255).save(out / "masks" / f"{stem}.png")
            rows.append({"image": f"{stem}.png", "source": name, "kind": kind, "mask_fraction": round(float(mask.mean()), 4)})
    (out / "planted.json").write_text(json.dumps(rows, indent=2))
    return rows
