"""Image loading that turns every odd file into RGB or into one clear error naming the file.

Handles CMYK, 16-bit and 32-bit integer or float greyscale, palettes, alpha (composited on white so
transparent regions do not turn black), EXIF orientation, truncated and corrupt files, empty files and
decompression bombs.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")
# Larger than this many pixels is refused rather than decoded into tens of GiB of memory.
MAX_PIXELS = 16_000 * 16_000


class ImageError(ValueError):
    """An image that cannot be used; the message names the file and the problem."""


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly inside `folder`, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a folder of images")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # High bit depth greyscale: rescale its real range to 8 bits instead of clipping at 255.
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        img = Image.fromarray(arr.round().astype(np.uint8), mode="L")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGB", img.size, (255, 255, 255))
        background.paste(img.convert("RGBA"), mask=img.convert("RGBA").getchannel("A"))
        return background
    return img.convert("RGB")


def load_image(path: str | Path) -> Image.Image:
    """Open an image file as an RGB PIL image.

    Raises:
        ImageError: the file is missing, empty, not an image, truncated, corrupt or too large.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if img.width * img.height > MAX_PIXELS:
                    raise ImageError(f"{path}: too large ({img.width}x{img.height} pixels)")
                img.load()
                img = ImageOps.exif_transpose(img)
                return _to_rgb(img)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not a readable image") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageError(f"{path}: too large ({err})") from None
    except (OSError, SyntaxError, ValueError) as err:
        # PIL reports truncation and corrupt chunks as OSError/SyntaxError.
        raise ImageError(f"{path}: corrupt or truncated image ({err})") from None
