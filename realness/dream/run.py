"""Folder-level DREAM: map every image of a folder, and score maps against ground-truth masks."""

from __future__ import annotations

import csv
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from realness.data import load_descriptions
from realness.devices import resolve_device
from realness.dream.baselines import floor_maps
from realness.dream.configuration import DreamConfig
from realness.dream.evidence import EvidenceMapper
from realness.dream.localization import localization_metrics
from realness.dream.maps import DreamMapper, RealnessMap
from realness.files import output_name, save_image, write_text_atomic
from realness.hub import OFFLINE_HINT, hub_offline_if_unreachable, offline_miss, unreachable
from realness.images import (
    IMAGE_EXTENSIONS,
    PIXEL_BUDGET,
    ImageError,
    load_image,
    scan_folder,
    skipped_note,
    skipped_reasons,
)

logger = logging.getLogger(__name__)


def load_mapper(config: DreamConfig, device: str = "cpu", offline_fallback: bool = True):
    """`(mapper, info)` for `config.source`:

    - `clip`: DREAM's CLIP mapper; a CLIP that cannot load raises its error.
    - `evidence`: the artifact map sharpened by detected regions (`EvidenceMapper`), real weights that ship.
    - `auto` (default): CLIP; when the *default* CLIP cannot be downloaded (no network) and
      `offline_fallback` allows it, evidence maps instead, with one warning. No random model stands in.
    `info` names the source that ran (`info["source"]`).
    """

    if config.source == "evidence":
        mapper = EvidenceMapper(config, device=device)
        return mapper, {"name": config.artifact_model, **mapper.info()}
    default = DreamConfig()
    is_default = config.model == default.model and config.pretrained == default.pretrained
    try:
        mapper = DreamMapper(config, device=device)
    except Exception as err:
        if not (config.source == "auto" and offline_fallback and is_default and unreachable(err)):
            if offline_miss(err):
                raise OSError(f"CLIP {config.model}/{config.pretrained}: not in the local cache and the hub cannot be "
                              "reached; fetch its weights once where there is network, or draw evidence maps "
                              f"(--source evidence){OFFLINE_HINT if is_default else ''}") from err
            raise
        logger.warning("CLIP %s/%s cannot be downloaded (%s); maps come from the evidence instead: the artifact map "
                       "sharpened by detected faces, hands, people and text (--source evidence)", config.model,
                       config.pretrained, str(err).splitlines()[0][:120])
        mapper = EvidenceMapper(config, device=device)
        return mapper, {"name": config.artifact_model, **mapper.info(), "stands_in_for": f"{config.model}/{config.pretrained}"}
    used = mapper.config
    return mapper, {"name": f"{used.model}/{used.pretrained}", "source": "clip", "method": used.method, "placeholder": False}


def map_folder(cfg: MapConfig, config: DreamConfig | None = None) -> dict:
    """`realness map`: write `<name>.npz`, `<name>_heatmap.png` and `<name>_overlay.png` per image, where
    `<name>` is `realness.files.output_name(file name)` (the extension is kept: `c.png` and `c.jpg` differ).

    Images that cannot be read, have no description or fail to map are reported (one line each, and in
    `out/summary.json`) and skipped; the others are mapped. Every file is written under a temporary name
    and renamed, so none is ever left truncated.
    """
    images, descriptions, out, device, batch_size = cfg.images, cfg.descriptions, cfg.out, cfg.device, cfg.batch_size
    progress, offline_fallback, max_pixels = cfg.progress, cfg.offline_fallback, cfg.max_pixels or None
    overlay_size = cfg.overlay_size
    from tqdm.auto import tqdm


    device = resolve_device(device)
    config = config or DreamConfig()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: exists and is not a folder")
    texts = load_descriptions(descriptions)
    paths, skipped = scan_folder(images, outputs=out)
    if skipped:
        logger.warning("%s: %s", images, skipped_note(skipped))
    if not paths:
        raise ValueError(f"{images}: no images found")
    hub_offline_if_unreachable()
    mapper, info = load_mapper(config, device, offline_fallback)
    out.mkdir(parents=True, exist_ok=True)
    failed: dict[str, str] = {}
    flat, done = [], []
    bar = tqdm(total=len(paths), desc="maps", unit="img", disable=not progress, file=sys.stderr)
    batch: list[tuple[Path, object, str]] = []

    def save(path: Path, image, result) -> None:
        name = output_name(path.name)
        files = [out / f"{name}.npz", out / f"{name}_heatmap.png", out / f"{name}_overlay.png"]
        try:
            result.save(files[0])
            save_image(result.heatmap(config.colormap), files[1])
            save_image(result.overlay(image, config.colormap, config.alpha, max_side=overlay_size), files[2])
        except OSError:  # a full disk: none of this image's files stay to keep it full
            for f in files:
                f.unlink(missing_ok=True)
            raise

    def fail(path: Path, err: Exception) -> None:
        logger.warning("%s", err if str(err).startswith(str(path)) else f"{path}: {err}")
        failed[path.name] = str(err)

    def flush():
        if not batch:
            return
        try:
            results = mapper.map_batch([b[1] for b in batch], [b[2] for b in batch])
        except Exception:  # noqa: BLE001 - find the image that fails, map the rest
            results = []
            for path, image, text in batch:
                try:
                    results.extend(mapper.map_batch([image], [text]))
                except Exception as err:  # noqa: BLE001
                    fail(path, err)
                    results.append(None)
        for (path, image, _), result in zip(batch, results):
            if result is None:
                continue
            try:
                save(path, image, result)
                (flat if result.flat else done).append(path.name)
            except OSError as err:
                fail(path, f"cannot write its map: {err}")
        bar.update(len(batch))
        batch.clear()

    for path in paths:
        try:
            text = texts.get(path.name, "")
            if not text.strip():
                raise ValueError(f"{path}: no description for this image")
            batch.append((path, load_image(path, max_pixels), text))
        except (ImageError, ValueError) as err:
            fail(path, err)
            bar.update(1)
        if len(batch) >= batch_size:
            flush()
    flush()
    bar.close()
    if hasattr(mapper, "close"):
        mapper.close()
    summary = {"mapped": done, "flat": flat, "failed": failed, "skipped_files": [p.name for p, _ in skipped],
               "skipped_reasons": skipped_reasons(skipped),
               "maps": info, "config": config.to_dict(),
               "outputs": {p.name: output_name(p.name) for p in paths if p.name not in failed}}
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2))
    return summary


def load_mask(path: str | Path, shape: tuple[int, int]) -> np.ndarray:
    """A binary mask PNG (non-zero = unreal region), resized to `shape` (H, W) by nearest neighbour."""
    from PIL import Image

    img = load_image(path).convert("L")
    if img.size != (shape[1], shape[0]):
        img = img.resize((shape[1], shape[0]), Image.Resampling.NEAREST)
    return np.asarray(img) > 127


@dataclass
class MapConfig:
    """Options of `realness map` (DREAM's own options come from `DreamConfig`)."""

    images: str = field(metadata={"help": "Folder of images to map."})
    descriptions: str = field(metadata={"help": "CSV/JSONL with filename,description."})
    out: str = field(default="maps", metadata={"help": "Output folder: <name>.npz, _heatmap.png, _overlay.png, "
                                                       "summary.json."})
    device: str = field(default="auto", metadata={"help": "Torch device: auto (cuda when available), cpu, cuda."})
    batch_size: int = field(default=8, metadata={"help": "Images per batch."})
    progress: bool = field(default=True, metadata={"help": "Show a progress bar."})
    offline_fallback: bool = field(default=True, metadata={"help": "With --source auto: if the default CLIP cannot "
                                                                   "be downloaded, draw evidence maps (artifact "
                                                                   "map + detected regions) instead of stopping."})
    max_pixels: int = field(default=PIXEL_BUDGET, metadata={"help": "Images with more pixels are downscaled once "
                                                                    "on read; 0: never."})
    overlay_size: int = field(default=1024, metadata={"help": "Longer side in pixels of the overlay PNGs."})


@dataclass
class EvalMapsConfig:
    """Options of `realness eval-maps`."""

    maps: str = field(metadata={"help": "Folder of <name>.npz written by `realness map` or `realness run` (maps/)."})
    masks: str = field(metadata={"help": "Folder of <name>.png masks, non-zero = unreal region."})
    out: str | None = field(default=None, metadata={"help": "Folder for localization.json/.csv (none: print only)."})
    threshold: float = field(default=0.5, metadata={"help": "Map threshold for F1/IoU."})
    tolerance: int = field(default=0, metadata={"help": "Pointing-game tolerance in pixels."})
    images: str | None = field(default=None, metadata={"help": "Folder of the mapped images, for the local-texture "
                                                                "floor (none: that floor is left out)."})
    floors: bool = field(default=True, metadata={"help": "Measure the floors (centre prior, random, texture, detector "
                                                         "boxes) beside the maps."})


def evaluate_maps(cfg: EvalMapsConfig) -> dict:
    """`realness eval-maps`: metrics of every `<name>.npz` with a mask `<name>.png` in `masks`, and of the
    floors (`realness.dream.baselines`) on the same masks in the same run: centre prior and random always,
    local texture when `images` holds the images, detector boxes when the maps recorded regions."""
    maps, masks, out, threshold, tolerance = cfg.maps, cfg.masks, cfg.out, cfg.threshold, cfg.tolerance
    floors, images = cfg.floors, cfg.images
    from PIL import Image


    rows, missing = [], []
    floor_rows: dict[str, list[dict]] = {}
    # `realness map` records which image each output name belongs to; `c.png.npz` is c.png's map
    summary = Path(maps) / "summary.json"
    sources = {v: k for k, v in json.loads(summary.read_text()).get("outputs", {}).items()} if summary.is_file() else {}
    for npz in sorted(Path(maps).glob("*.npz")):
        image = sources.get(npz.stem, npz.stem)
        stems = [Path(image).stem] if Path(image).suffix.lower() in IMAGE_EXTENSIONS else [image]
        mask_path = next((p for stem in stems for p in (Path(masks) / f"{stem}{ext}" for ext in (".png", ".PNG"))
                          if p.is_file()), None)
        if mask_path is None:
            missing.append(image)
            continue
        rmap = RealnessMap.load(npz)
        mask = load_mask(mask_path, rmap.map.shape)
        rows.append({"image": image, **localization_metrics(rmap.map, mask, threshold, tolerance)})
        if floors:
            picture = None
            if images is not None and (Path(images) / image).is_file():
                picture = Image.open(Path(images) / image)
            size = rmap.image_size or rmap.map.shape[::-1]
            regions = rmap.regions if rmap.source == "evidence" else None
            for name, fmap in floor_maps(rmap.map.shape, picture, regions, size, seed=len(rows)).items():
                floor_rows.setdefault(name, []).append({"image": image, **localization_metrics(fmap, mask, threshold, tolerance)})
    if not rows:
        raise ValueError(f"no map in {maps} has a mask in {masks}")
    keys = [k for k in rows[0] if k != "image"]

    def mean_of(table: list[dict]) -> dict:
        return {k: float(np.nanmean([r[k] for r in table])) for k in keys}

    result = {"n": len(rows), "mean": mean_of(rows), "per_image": rows, "no_mask": missing,
              "floors": {name: {"n": len(t), "mean": mean_of(t)} for name, t in floor_rows.items()}}
    if out:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "localization.json").write_text(json.dumps(result, indent=2))
        with (out / "localization.csv").open("w", newline="") as fh:
            w = csv.DictWriter(fh, ["image", *keys])
            w.writeheader()
            w.writerows(rows)
    return result
