"""Train the artifact map on real photographs with self-made local corruptions.

    accelerate launch training/train_artifact_map.py --config training/configs/artifact_map.yaml
    realness train-maps --config training/configs/artifact_map.yaml          # the same, one process

Photos are split by file (`val_fraction` of them, chosen by `seed`, never trained on). Every training
sample is a random crop of a training photo, corrupted on the fly (`corrupt`, new corruptions each
step); the validation set is planted once from the validation photos (`planted_set`: one corruption
kind per image, cycling through the kinds) and scored every `eval_every` steps by pixel AUROC and the
pointing game. The checkpoint with the best validation AUROC + pointing is kept.
"""

from __future__ import annotations

import glob
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from realness.dream.artifact import ArtifactConfig, ArtifactMapModel
from realness.dream.corruptions import CorruptionConfig, corrupt, packaged_photos, planted_set, to_array
from realness.dream.localization import average_precision, pixel_auroc, pointing_game
from realness.images import IMAGE_EXTENSIONS

logger = logging.getLogger(__name__)


@dataclass
class ArtifactTrainConfig:
    """Training of the artifact map (with ArtifactConfig for the model and CorruptionConfig for the data)."""

    photos: list[str] = field(default_factory=lambda: ["$REALNESS_RAISE_DIR/images/r*.png"],
                              metadata={"help": "Real photographs: files, folders or globs ($VAR expanded). Never "
                                                "AI-generated images."})
    packaged_photos: bool = field(default=False, metadata={"help": "Add the photographs scikit-image and scikit-learn "
                                                                   "ship (to the validation side)."})
    output_dir: str = field(default="runs/artifact-map", metadata={
        "flag": "out", "aliases": ("output_dir",),
        "help": "Where the trained model, log and validation report go."})
    val_fraction: float = field(default=0.2, metadata={"help": "Share of the photos held out for validation (by file)."})
    val_per_image: int = field(default=4, metadata={"help": "Planted validation images per validation photo."})
    steps: int = field(default=1500, metadata={"help": "Optimiser steps."})
    batch_size: int = field(default=8, metadata={"help": "Training crops per step."})
    crop: int = field(default=320, metadata={"help": "Training crop side in pixels (of photos read with the longer "
                                                     "side at ArtifactConfig.long_side)."})
    lr: float = field(default=2e-3, metadata={"help": "AdamW learning rate (cosine decay after a short warm-up)."})
    weight_decay: float = field(default=1e-4, metadata={"help": "AdamW weight decay."})
    pos_weight: float = field(default=2.0, metadata={"help": "BCE weight of corrupted cells (they are the minority)."})
    eval_every: int = field(default=250, metadata={"help": "Validate (and keep the best checkpoint) every this many "
                                                           "steps."})
    num_workers: int = field(default=1, metadata={"help": "DataLoader workers generating corrupted crops."})
    seed: int = field(default=0, metadata={"help": "Seed of the split, the corruptions and the head's initialisation."})
    progress: bool = field(default=True, metadata={"help": "Show a progress bar."})


def expand_photos(patterns: list[str]) -> list[Path]:
    """Image files from files, folders and globs (`$VAR` expanded), sorted and de-duplicated."""
    import os

    if "MVTB_IMAGES" not in os.environ:  # the photographs the `mvtb-data` package ships
        try:
            import importlib.util

            spec = importlib.util.find_spec("mvtbdata")
            if spec and spec.origin:
                os.environ["MVTB_IMAGES"] = str(Path(spec.origin).parent / "images")
        except ImportError:
            pass
    found: list[Path] = []
    for pattern in patterns:
        text = os.path.expandvars(pattern)
        if "$" in text:
            raise ValueError(f"{pattern}: environment variable not set (e.g. REALNESS_RAISE_DIR=/path/to/raise-train)")
        path = Path(text)
        if path.is_dir():
            found += [p for p in sorted(path.iterdir()) if p.suffix.lower() in IMAGE_EXTENSIONS]
        else:
            found += [Path(p) for p in sorted(glob.glob(text)) if Path(p).suffix.lower() in IMAGE_EXTENSIONS]
    unique = sorted(dict.fromkeys(found))
    if not unique:
        raise ValueError(f"no photographs found in {patterns}")
    return unique


def split_photos(paths: list[Path], val_fraction: float, seed: int) -> tuple[list[Path], list[Path]]:
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(paths))
    n_val = max(1, int(round(len(paths) * val_fraction))) if val_fraction > 0 else 0
    val = sorted(paths[i] for i in order[:n_val])
    return sorted(paths[i] for i in order[n_val:]), val


class CorruptedCrops(torch.utils.data.IterableDataset):
    """Endless random crops of the photos, each corrupted anew: (3, crop, crop) in [0, 1] and its mask."""

    def __init__(self, arrays: list[np.ndarray], crop: int, corruption: CorruptionConfig, seed: int):
        self.arrays, self.crop, self.corruption, self.seed = arrays, crop, corruption, seed

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        rng = np.random.default_rng([self.seed, info.id if info else 0])
        while True:
            img = self._crop(self.arrays[rng.integers(len(self.arrays))], rng)
            donor = self._crop(self.arrays[rng.integers(len(self.arrays))], rng)
            out, mask, _ = corrupt(img, rng, self.corruption, donor=donor)
            yield torch.from_numpy(np.ascontiguousarray(out)).permute(2, 0, 1), torch.from_numpy(mask.astype(np.float32))[None]

    def _crop(self, arr: np.ndarray, rng) -> np.ndarray:
        c = self.crop
        h, w = arr.shape[:2]
        if h < c or w < c:
            scale = c / min(h, w)
            arr = np.asarray(Image.fromarray((arr * 255).astype(np.uint8)).resize((max(c, round(w * scale)), max(c, round(h * scale))),
                                                                              Image.Resampling.BICUBIC), np.float32) / 255
            h, w = arr.shape[:2]
        y, x = int(rng.integers(0, h - c + 1)), int(rng.integers(0, w - c + 1))
        out = arr[y:y + c, x:x + c]
        return out[:, ::-1] if rng.random() < 0.5 else out


def cell_targets(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A pixel mask (B, 1, H, W) as the share of each output cell that is corrupted."""
    return F.adaptive_avg_pool2d(mask, size)


def artifact_loss(logits: torch.Tensor, mask: torch.Tensor, pos_weight: float) -> torch.Tensor:
    target = cell_targets(mask, logits.shape[-2:])
    weight = 1 + (pos_weight - 1) * target
    return F.binary_cross_entropy_with_logits(logits.float(), target, weight=weight)


def map_scores(prob: np.ndarray, mask: np.ndarray) -> dict:
    """Pixel AUROC, AP and the pointing game of one map (the three numbers validation keeps)."""

    return {"auroc": pixel_auroc(prob, mask), "ap": average_precision(prob, mask), "pointing": float(pointing_game(prob, mask))}


def validate(model: ArtifactMapModel, folder: Path, rows: list[dict]) -> dict:
    """Mean pixel AUROC, AP and pointing game of the model's maps on the planted set, overall and per kind."""
    model.eval()
    per = []
    for row in rows:
        image = Image.open(folder / "images" / row["image"]).convert("RGB")
        mask = np.asarray(Image.open(folder / "masks" / row["image"])) > 127
        (prob,) = model.predict([image], sizes=[image.size])
        per.append({"kind": row["kind"], **map_scores(prob, mask)})
    return summarise(per)


def summarise(per: list[dict]) -> dict:
    """`{"n", "auroc", "ap", "pointing", "by_kind": {kind: {...}}}`: means over per-image `map_scores` rows."""
    keys = ("auroc", "ap", "pointing")
    mean = {k: float(np.nanmean([p[k] for p in per])) for k in keys}
    kinds = sorted({p["kind"] for p in per})
    by_kind = {kind: {k: float(np.nanmean([p[k] for p in per if p["kind"] == kind])) for k in keys} for kind in kinds}
    return {"n": len(per), **mean, "by_kind": by_kind}


def train_artifact_map(cfg: ArtifactTrainConfig, model_cfg: ArtifactConfig | None = None,
                       corruption: CorruptionConfig | None = None, photos: list[np.ndarray] | None = None) -> dict:
    """Train, validate, save the best checkpoint to `cfg.output_dir`; returns the validation report.

    `photos` (arrays) replaces `cfg.photos` (used by the tests' synthetic data); validation then uses
    the last `val_fraction` of them.
    """
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    model_cfg, corruption = model_cfg or ArtifactConfig(), corruption or CorruptionConfig()
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    if photos is None:
        train_paths, val_paths = split_photos(expand_photos(cfg.photos), cfg.val_fraction, cfg.seed)
        train_arrays = [to_array(Image.open(p), model_cfg.long_side) for p in train_paths]
        val_items = [(p.stem, Image.open(p).convert("RGB")) for p in val_paths]
        if cfg.packaged_photos:
            val_items += sorted(packaged_photos().items())
        split = {"train": [str(p) for p in train_paths], "val": [name for name, _ in val_items],
                 "val_files": [str(p) for p in val_paths]}
    else:
        n_val = max(1, int(round(len(photos) * cfg.val_fraction)))
        train_arrays = photos[:-n_val]
        val_items = [(f"val{i}", Image.fromarray((a * 255).astype(np.uint8))) for i, a in enumerate(photos[-n_val:])]
        split = {"train": len(train_arrays), "val": n_val}
    accelerator = Accelerator()
    planted = out / "validation-set"
    # one process writes and scores the validation set; with several, the others train on
    rows = planted_set(val_items, planted, per_image=cfg.val_per_image, seed=cfg.seed + 1, config=corruption,
                       long_side=model_cfg.long_side) if accelerator.is_main_process else []
    model = ArtifactMapModel(model_cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    warm = max(1, cfg.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / max(1, cfg.steps)))))
    loader = torch.utils.data.DataLoader(CorruptedCrops(train_arrays, cfg.crop, corruption, cfg.seed + accelerator.process_index),
                                         batch_size=cfg.batch_size, num_workers=cfg.num_workers,
                                         persistent_workers=cfg.num_workers > 0)
    model, opt, loader, sched = accelerator.prepare(model, opt, loader, sched)
    log_path = out / "train_log.jsonl"
    log = log_path.open("w")
    best, best_score, start = None, -1.0, time.perf_counter()
    bar = tqdm(total=cfg.steps, desc="artifact map", unit="step", disable=not cfg.progress)
    running = None
    for step, (x, mask) in enumerate(loader, start=1):
        model.train()
        loss = artifact_loss(model(x), mask, cfg.pos_weight)
        accelerator.backward(loss)
        opt.step()
        sched.step()
        opt.zero_grad()
        running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
        bar.update(1)
        bar.set_postfix(loss=f"{running:.4f}")
        if (step % cfg.eval_every == 0 or step == cfg.steps) and accelerator.is_main_process:
            report = validate(accelerator.unwrap_model(model), planted, rows)
            score = report["auroc"] + report["pointing"]
            entry = {"step": step, "loss": running, "val_auroc": report["auroc"], "val_ap": report["ap"],
                     "val_pointing": report["pointing"], "seconds": round(time.perf_counter() - start, 1)}
            log.write(json.dumps(entry) + "\n")
            log.flush()
            logger.info("step %d: loss %.4f, validation AUROC %.3f AP %.3f pointing %.3f", step, running,
                        report["auroc"], report["ap"], report["pointing"])
            if score > best_score:
                best_score, best = score, {**report, "step": step}
                accelerator.unwrap_model(model).save_pretrained(out, metadata={"step": step, "val_auroc": round(report["auroc"], 4)})
        if step >= cfg.steps:
            break
    bar.close()
    log.close()
    accelerator.wait_for_everyone()
    result = {"best": best, "split": split, "train": asdict(cfg), "model": asdict(model_cfg), "corruption": asdict(corruption),
              "seconds": round(time.perf_counter() - start, 1)}
    if accelerator.is_main_process:
        (out / "validation.json").write_text(json.dumps(result, indent=2))
    return result
