"""Folder-level DREAM: map every image of a folder, and score maps against ground-truth masks."""

from __future__ import annotations

import csv
import json
import logging
import sys
from pathlib import Path

import numpy as np

from realness.dream.configuration import DreamConfig
from realness.images import ImageError, list_images, load_image

logger = logging.getLogger(__name__)


def map_folder(images: str | Path, descriptions: str | Path, out: str | Path, config: DreamConfig | None = None,
               device: str = "cpu", batch_size: int = 8, progress: bool = True) -> dict:
    """`realness map`: write `<name>.npz`, `<name>_heatmap.png` and `<name>_overlay.png` per image.

    Images that cannot be read or have no description are reported (one line each, and in
    `out/summary.json`) and skipped; the others are mapped.
    """
    from tqdm.auto import tqdm

    from realness.data import load_descriptions
    from realness.dream.maps import DreamMapper

    config = config or DreamConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    texts = load_descriptions(descriptions)
    paths = list_images(images)
    mapper = DreamMapper(config, device=device)
    failed: dict[str, str] = {}
    flat, done = [], []
    bar = tqdm(total=len(paths), desc="maps", unit="img", disable=not progress, file=sys.stderr)
    batch: list[tuple[Path, object, str]] = []

    def flush():
        if not batch:
            return
        for (path, image, _), result in zip(batch, mapper.map_batch([b[1] for b in batch], [b[2] for b in batch])):
            result.save(out / f"{path.stem}.npz")
            result.heatmap(config.colormap).save(out / f"{path.stem}_heatmap.png")
            result.overlay(image, config.colormap, config.alpha).save(out / f"{path.stem}_overlay.png")
            (flat if result.flat else done).append(path.name)
        bar.update(len(batch))
        batch.clear()

    for path in paths:
        try:
            text = texts.get(path.name, "")
            if not text.strip():
                raise ValueError(f"{path}: no description for this image")
            batch.append((path, load_image(path), text))
        except (ImageError, ValueError) as err:
            logger.warning("%s", err)
            failed[path.name] = str(err)
            bar.update(1)
        if len(batch) >= batch_size:
            flush()
    flush()
    bar.close()
    summary = {"mapped": done, "flat": flat, "failed": failed, "config": config.to_dict()}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def load_mask(path: str | Path, shape: tuple[int, int]) -> np.ndarray:
    """A binary mask PNG (non-zero = unreal region), resized to `shape` (H, W) by nearest neighbour."""
    from PIL import Image

    img = load_image(path).convert("L")
    if img.size != (shape[1], shape[0]):
        img = img.resize((shape[1], shape[0]), Image.Resampling.NEAREST)
    return np.asarray(img) > 127


def evaluate_maps(maps: str | Path, masks: str | Path, out: str | Path | None = None, threshold: float = 0.5,
                  tolerance: int = 0) -> dict:
    """`realness eval-maps`: metrics of every `<name>.npz` with a mask `<name>.png` in `masks`."""
    from realness.dream.localization import localization_metrics
    from realness.dream.maps import RealnessMap

    rows, missing = [], []
    for npz in sorted(Path(maps).glob("*.npz")):
        mask_path = next((p for p in (Path(masks) / f"{npz.stem}{ext}" for ext in (".png", ".PNG")) if p.is_file()), None)
        if mask_path is None:
            missing.append(npz.stem)
            continue
        rmap = RealnessMap.load(npz)
        rows.append({"image": npz.stem, **localization_metrics(rmap.map, load_mask(mask_path, rmap.map.shape),
                                                                threshold, tolerance)})
    if not rows:
        raise ValueError(f"no map in {maps} has a mask in {masks}")
    keys = [k for k in rows[0] if k != "image"]
    mean = {k: float(np.nanmean([r[k] for r in rows])) for k in keys}
    result = {"n": len(rows), "mean": mean, "per_image": rows, "no_mask": missing}
    if out:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "localization.json").write_text(json.dumps(result, indent=2))
        with (out / "localization.csv").open("w", newline="") as fh:
            w = csv.DictWriter(fh, ["image", *keys])
            w.writeheader()
            w.writerows(rows)
    return result
