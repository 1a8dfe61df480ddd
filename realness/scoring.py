"""Score images with a trained CORE model: a folder (or list) in, one CSV row per image out."""

from __future__ import annotations

import csv
import logging
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from realness.core import CoreModel
from realness.core.loading import default_num_workers, predict_stream
from realness.data import load_descriptions
from realness.devices import resolve_device
from realness.files import atomic_path
from realness.images import PIXEL_BUDGET, scan_folder, skipped_note, skipped_reasons

logger = logging.getLogger(__name__)
FIELDS = ("filename", "score_z", "score_mos", "novelty", "warning", "description", "error")


@dataclass
class CoreScore:
    """One image's result; `error` is set (and the scores are None) when it could not be scored."""

    filename: str
    score_z: float | None
    score_mos: float | None
    description: str
    error: str = ""
    novelty: float | None = None  # percentile 0-100 of how unlike the model's training images it is
    warning: str = ""


@dataclass
class ScoreCoreConfig:
    """Options of `realness score-core`."""

    core: str = field(metadata={"help": "CORE model: a folder written by train-core (its best/ folder) or a bundled "
                                        "name (`realness models --kind core`).", "aliases": ("model",)})
    images: str = field(metadata={"help": "Folder of images to score."})
    descriptions: str | None = field(default=None, metadata={"help": "CSV/JSONL with filename,description; needed "
                                                                     "unless the model is image-only."})
    out: str = field(default="scores.csv", metadata={"help": "Output CSV."})
    batch_size: int | None = field(default=None, metadata={"help": "Images per forward pass (none: 2 on CPU, 16 on "
                                                                   "a GPU)."})
    device: str = field(default="auto", metadata={"help": "Torch device: auto (cuda when available), cpu, cuda."})
    progress: bool = field(default=True, metadata={"help": "Show a progress bar."})
    max_pixels: int = field(default=PIXEL_BUDGET, metadata={"help": "Images with more pixels are downscaled once on "
                                                                    "read; 0: never."})
    num_workers: int | None = field(default=None, metadata={"help": "DataLoader workers that decode, resize and "
                                                                    "tokenise while CORE scores; 0: in this process "
                                                                    "(none: on a GPU one per CPU core beyond the "
                                                                    "driving one, at most 8; on a CPU 0)."})


def score_images(
    model,
    paths: Sequence[str | Path],
    descriptions: dict[str, str] | None = None,
    batch_size: int = 16,
    progress: bool = True,
    max_pixels: int | None = PIXEL_BUDGET,
    num_workers: int | None = None,
) -> Iterator[CoreScore]:
    """Yield a `CoreScore` per image, in order; unreadable images or missing descriptions yield errors.

    Images are decoded, downscaled, resized and tokenised in `num_workers` DataLoader workers (default:
    `realness.core.loading.default_num_workers`: on a GPU one per CPU core beyond the driving one, on a CPU
    none) while the model scores the batch before; 0 prepares them in this process. The scores do not depend on it.

    Args:
        model: a `CoreModel`.
        paths: image files.
        descriptions: file name -> description (needed unless the model is image-only).
    """
    from tqdm.auto import tqdm

    descriptions = descriptions or {}
    paths = [Path(p) for p in paths]
    texts = [descriptions.get(p.name, "") for p in paths]
    workers = default_num_workers(next(model.parameters()).device) if num_workers is None else num_workers
    with tqdm(total=len(paths), desc="scoring", unit="img", disable=not progress, file=sys.stderr) as bar:
        for index, value in predict_stream(model, paths if model.config.uses_image else None,
                                           texts if model.config.uses_text else None, batch_size,
                                           min(workers, max(0, len(paths) // max(1, batch_size))), max_pixels,
                                           names=[str(p) for p in paths], fn=model.score_and_novelty):
            name, text = paths[index].name, texts[index]
            bar.update(1)
            if isinstance(value, str):
                logger.warning("%s", value if value.startswith(str(paths[index])) else f"{paths[index]}: {value}")
                yield CoreScore(name, None, None, text, value)
                continue
            z = float(value[0])
            mos = model.to_mos(z)
            novelty, warning = model.novelty_report(float(value[1]))
            yield CoreScore(name, z, None if mos is None else float(mos), text, novelty=novelty, warning=warning)


def write_scores(results: Iterable[CoreScore], out: str | Path) -> tuple[int, dict[str, str]]:
    """Write results to CSV (under a temporary name, renamed when complete); returns
    `(scored, {file name: error})`."""

    out = Path(out)
    if out.is_dir():
        raise ValueError(f"--out {out}: is a folder; give a CSV file name")
    out.parent.mkdir(parents=True, exist_ok=True)
    ok, failed = 0, {}
    with atomic_path(out) as tmp, tmp.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(FIELDS)
        for r in results:
            w.writerow([r.filename, "" if r.score_z is None else f"{r.score_z:.6f}",
                        "" if r.score_mos is None else f"{r.score_mos:.4f}",
                        "" if r.novelty is None else f"{r.novelty:.1f}", r.warning, r.description, r.error])
            if r.error:
                failed[r.filename] = r.error
            else:
                ok += 1
    return ok, failed


def default_batch_size(device: str) -> int:
    """2 on CPU (larger batches are slower there at 384x512: eval/bench_core.py), 16 on a GPU."""
    return 16 if str(device).startswith("cuda") else 2


def score_folder(cfg: ScoreCoreConfig) -> dict:
    """`realness score-core`: score every image in a folder and write `out` (CSV).

    Returns `{"ok": n scored, "failed": {file name: reason}, "skipped_files": [names without an image
    extension]}`.
    """
    model_dir, images, descriptions, out, batch_size = cfg.core, cfg.images, cfg.descriptions, cfg.out, cfg.batch_size
    device, progress, max_pixels, num_workers = cfg.device, cfg.progress, cfg.max_pixels or None, cfg.num_workers
    batch_size = batch_size or default_batch_size(device)

    device = resolve_device(device)
    paths, skipped = scan_folder(images)
    if skipped:
        logger.warning("%s: %s", images, skipped_note(skipped))
    if not paths:
        raise ValueError(f"{images}: no images found")
    texts = load_descriptions(descriptions) if descriptions else {}
    model = CoreModel.from_pretrained(model_dir, device=device)
    if model.config.uses_text and not descriptions:
        raise ValueError(f"{model_dir}: this CORE model reads descriptions; give --descriptions")
    ok, failed = write_scores(score_images(model, paths, texts, batch_size, progress, max_pixels, num_workers), out)
    return {"ok": ok, "failed": failed, "skipped_files": [p.name for p, _ in skipped],
            "skipped_reasons": skipped_reasons(skipped)}
