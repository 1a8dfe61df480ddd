"""Rebuild the bundled sample images: `python -m realness.samples.generate`.

Sources, all free to redistribute: Grace Hopper's portrait (U.S. Navy photograph, public domain, as
shipped in matplotlib's sample data) and procedurally drawn scenes. Four variants plant the kind of
flaws generators make (a warped face, plastic over-smoothed skin, a cloned patch, flat synthetic
rendering); each comes with a description in the RAISE-TD style, written for this project.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

HERE = Path(__file__).parent
WIDTH = 384

DESCRIPTIONS = {
    "portrait.jpg": "No, nothing looks unrealistic; the lighting, uniform and facial features are consistent with a "
                    "real photograph.",
    "portrait_warped_face.jpg": "Yes, the face is distorted: the eyes and mouth are twisted and the skin swirls "
                                "unnaturally around the nose.",
    "portrait_plastic_skin.jpg": "Somewhat. The skin and uniform look overly smooth and plastic, with detail missing "
                                 "in the hair and fabric.",
    "portrait_cloned_patch.jpg": "Yes, part of the background is repeated on the uniform, and the transition between "
                                 "the patch and the jacket is not smooth.",
    "landscape_flat.jpg": "Yes, the hills, sky and trees look like flat computer graphics with perfectly smooth "
                          "gradients and identical repeated trees.",
    "landscape_textured.jpg": "Somewhat. The grass texture looks natural but the trees are repeated and the lighting "
                              "on the hills is inconsistent.",
}


def _portrait() -> Image.Image:
    import matplotlib.cbook as cbook

    with Image.open(cbook.get_sample_data("grace_hopper.jpg")) as img:
        img = img.convert("RGB")
    return img.resize((WIDTH, round(img.height * WIDTH / img.width)), Image.Resampling.LANCZOS)


def _swirl(img: Image.Image, cx: float, cy: float, radius: float, strength: float) -> Image.Image:
    a = np.asarray(img).astype(np.float32)
    h, w = a.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    dx, dy = xx - cx, yy - cy
    r = np.hypot(dx, dy)
    theta = np.arctan2(dy, dx) + strength * np.exp(-r / (radius / 3)) * (r < radius)
    sx = np.clip(cx + r * np.cos(theta), 0, w - 1).round().astype(int)
    sy = np.clip(cy + r * np.sin(theta), 0, h - 1).round().astype(int)
    return Image.fromarray(a[sy, sx].astype(np.uint8))


def _landscape(seed: int, textured: bool) -> Image.Image:
    rng = np.random.default_rng(seed)
    h = 288
    sky = np.linspace([90, 150, 230], [200, 225, 250], h)[:, None, :].repeat(WIDTH, 1)
    img = Image.fromarray(sky.astype(np.uint8))
    d = ImageDraw.Draw(img)
    for i, colour in enumerate([(70, 140, 60), (50, 120, 45)]):
        base = 170 + 40 * i
        pts = [(x, base + 25 * np.sin(x / (60 + 20 * i) + i)) for x in range(0, WIDTH + 8, 8)]
        d.polygon([(0, h)] + pts + [(WIDTH, h)], fill=colour)
    for x in range(30, WIDTH, 70):  # identical trees: a generator's repetition
        d.rectangle([x - 3, 180, x + 3, 210], fill=(90, 60, 30))
        d.ellipse([x - 18, 140, x + 18, 188], fill=(30, 100, 35))
    if textured:
        a = np.asarray(img).astype(np.int16)
        noise = rng.normal(0, 14, a.shape[:2])[..., None]
        a[150:] = np.clip(a[150:] + noise[150:], 0, 255)
        img = Image.fromarray(a.astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.6))
    return img


def build(folder: Path = HERE) -> None:
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    portrait = _portrait()
    face = (portrait.width * 0.47, portrait.height * 0.33)
    cloned = portrait.copy()
    cloned.paste(portrait.crop((10, 10, 130, 110)), (150, 330))
    out = {
        "portrait.jpg": portrait,
        "portrait_warped_face.jpg": _swirl(portrait, *face, radius=90, strength=2.5),
        "portrait_plastic_skin.jpg": portrait.filter(ImageFilter.MedianFilter(9)).filter(ImageFilter.SMOOTH_MORE),
        "portrait_cloned_patch.jpg": cloned,
        "landscape_flat.jpg": _landscape(0, textured=False),
        "landscape_textured.jpg": _landscape(1, textured=True),
    }
    for name, img in out.items():
        img.save(images / name, quality=88)
    with (folder / "descriptions.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["filename", "description"])
        w.writerows(DESCRIPTIONS.items())


if __name__ == "__main__":
    build()
