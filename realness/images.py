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
# Larger than this is downscaled once, on read, for every stage (`--max_pixels`): no model reads more than
# 448-512 px, and full-size copies of a 100-megapixel photo would cost GiBs per stage.
PIXEL_BUDGET = 4096 * 4096
# One pixel rule, ours: Pillow's own decompression-bomb guard (a warning from 89.5 megapixels, an error from
# 179) would refuse photos that MAX_PIXELS accepts and PIXEL_BUDGET downscales; it now starts where ours stops.
Image.MAX_IMAGE_PIXELS = max(Image.MAX_IMAGE_PIXELS or 0, MAX_PIXELS)


class ImageError(ValueError):
    """An image that cannot be used; the message names the file and the problem."""


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly inside `folder`, sorted by name."""
    return scan_folder(folder)[0]


def _why_not(entry: Path) -> str:
    """Why a folder entry with an image extension is not read as an image ("" when it is a regular file)."""
    import errno
    import os
    import stat

    try:
        mode = entry.stat().st_mode  # follows links
    except FileNotFoundError:
        return "a broken symbolic link (its target does not exist)"
    except OSError as err:
        if err.errno == errno.ELOOP:
            return "a symbolic link loop"
        return f"cannot be inspected ({os.strerror(err.errno) if err.errno else err})"
    if stat.S_ISREG(mode):
        return ""
    if stat.S_ISDIR(mode):
        return "a folder, not a file (images in subfolders are not read: give the subfolder itself)"
    kind = {stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a device",
            stat.S_IFBLK: "a device"}.get(stat.S_IFMT(mode), "not a regular file")
    return f"{kind}, not a regular file"


def scan_folder(folder: str | Path, outputs: str | Path | None = None) -> tuple[list[Path], list[tuple[Path, str]]]:
    """`(images, skipped)`: regular files directly inside `folder` with an image extension, sorted by name,
    and `(entry, reason)` for every other entry (hidden ones aside), so a caller can say what it left out
    and why: files without an image extension, subfolders, FIFOs, sockets, broken links, link loops.

    `outputs` is a run's output folder: it may sit inside `folder` (it is then not listed), but must not be
    `folder` itself, or the run's own pictures would be read as images the next time."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a folder of images")
    if outputs is not None and Path(outputs).resolve() == folder.resolve():
        raise ValueError(f"--out {outputs} is the images folder {folder}: choose another output folder (the run's own "
                         "outputs would be read as images on the next run)")
    own = Path(outputs).resolve() if outputs is not None else None
    own_name = own.name if own is not None and own.parent == folder.resolve() else None
    images, skipped = [], []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or entry.name == own_name:
            continue
        if entry.suffix.lower() not in IMAGE_EXTENSIONS:
            is_dir = entry.is_dir()
            skipped.append((entry, "a folder (images in subfolders are not read: give the subfolder itself)" if is_dir
                            else "no image extension"))
            continue
        why = _why_not(entry)
        if why:
            skipped.append((entry, why))
        else:
            images.append(entry)
    return images, skipped


def skipped_reasons(skipped: list[tuple[Path, str]]) -> dict[str, str]:
    """`{entry name: why it was left out}`, as summaries record it."""
    return {p.name: why for p, why in skipped}


def skipped_note(skipped: list[tuple[Path, str]]) -> str:
    """One line naming the entries a folder scan left out and why ("" when none)."""
    if not skipped:
        return ""
    shown = "; ".join(f"{p.name} ({why})" for p, why in skipped[:10])
    return f"left out {len(skipped)} entr{'y' if len(skipped) == 1 else 'ies'} that are not image files: {shown}" + (
        f" and {len(skipped) - 10} more" if len(skipped) > 10 else "")


def fit_pixels(img: Image.Image, max_pixels: int | None) -> Image.Image:
    """`img` downscaled (aspect kept) so it has at most `max_pixels` pixels; unchanged when it fits."""
    if not max_pixels or img.width * img.height <= max_pixels:
        return img
    scale = (max_pixels / (img.width * img.height)) ** 0.5
    size = (max(1, int(img.width * scale)), max(1, int(img.height * scale)))
    return img.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


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
        rgba = img if img.mode == "RGBA" else img.convert("RGBA")
        background = Image.new("RGB", img.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return img.convert("RGB")


def load_image(path: str | Path, max_pixels: int | None = PIXEL_BUDGET) -> Image.Image:
    """Open an image file as an RGB PIL image, downscaled to at most `max_pixels` pixels (None: never).

    A JPEG larger than the budget is decoded at reduced size directly (PIL's draft mode), so its full
    size never sits in memory.

    Raises:
        ImageError: the file is missing, empty, not an image, truncated, corrupt or too large.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: {_why_not(path) or 'file not found'}" if path.exists() or path.is_symlink()
                         else f"{path}: file not found")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if img.width * img.height > MAX_PIXELS:
                    raise ImageError(f"{path}: too large ({img.width}x{img.height} pixels)")
                if max_pixels and img.width * img.height > max_pixels and img.format == "JPEG":
                    scale = (max_pixels / (img.width * img.height)) ** 0.5
                    img.draft("RGB", (int(img.width * scale) + 1, int(img.height * scale) + 1))
                img.load()
                ImageOps.exif_transpose(img, in_place=True)
                if img.mode in ("RGB", "RGBA", "L", "LA", "CMYK", "I", "F"):
                    img = fit_pixels(img, max_pixels)  # before any conversion copies the full size
                return fit_pixels(_to_rgb(img), max_pixels)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not a readable image") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageError(f"{path}: too large ({err})") from None
    except PermissionError:
        raise ImageError(f"{path}: cannot be read (permission denied): check the file's permissions") from None
    except (OSError, SyntaxError, ValueError) as err:
        # PIL reports truncation and corrupt chunks as OSError/SyntaxError.
        raise ImageError(f"{path}: corrupt or truncated image ({err})") from None
