"""Score images with a trained CORE model: a folder (or list) in, one CSV row per image out."""

from __future__ import annotations

import csv
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from realness.images import PIXEL_BUDGET, ImageError, load_image, scan_folder, skipped_note, skipped_reasons

logger = logging.getLogger(__name__)
FIELDS = ("filename", "score_z", "score_mos", "description", "error")


@dataclass
class CoreScore:
    """One image's result; `error` is set (and the scores are None) when it could not be scored."""

    filename: str
    score_z: float | None
    score_mos: float | None
    description: str
    error: str = ""


def score_images(
    model,
    paths: Sequence[str | Path],
    descriptions: dict[str, str] | None = None,
    batch_size: int = 16,
    progress: bool = True,
    max_pixels: int | None = PIXEL_BUDGET,
) -> Iterator[CoreScore]:
    """Yield a `CoreScore` per image, in order; unreadable images or missing descriptions yield errors.

    Args:
        model: a `CoreModel`.
        paths: image files.
        descriptions: file name -> description (needed unless the model is image-only).
    """
    from tqdm.auto import tqdm

    descriptions = descriptions or {}
    needs_text = model.config.uses_text
    needs_image = model.config.uses_image
    bar = tqdm(total=len(paths), desc="scoring", unit="img", disable=not progress, file=sys.stderr)
    pending: list[tuple[str, object, str]] = []

    def flush() -> Iterator[CoreScore]:
        if not pending:
            return
        names, images, texts = zip(*pending)

        def predict(sl: slice) -> list[float]:
            return model.predict(list(images[sl]) if needs_image else None, list(texts[sl]) if needs_text else None,
                                 batch_size=batch_size).tolist()

        try:
            values = predict(slice(None))
        except Exception:  # noqa: BLE001 - find the image that fails, score the rest
            values = []
            for i in range(len(names)):
                try:
                    values.extend(predict(slice(i, i + 1)))
                except Exception as err:  # noqa: BLE001
                    logger.warning("%s: scoring failed: %s", names[i], err)
                    values.append(err)
        for name, text, value in zip(names, texts, values):
            if isinstance(value, Exception):
                yield CoreScore(name, None, None, text, f"scoring failed: {value}")
                continue
            mos = model.to_mos(value)
            yield CoreScore(name, value, None if mos is None else float(mos), text)
        bar.update(len(pending))
        pending.clear()

    for path in paths:
        path = Path(path)
        text = descriptions.get(path.name, "")
        try:
            if needs_text and not text.strip():
                raise ValueError(f"{path}: no description for this image")
            image = load_image(path, max_pixels) if needs_image else None
        except (ImageError, ValueError) as err:
            logger.warning("%s", err)
            bar.update(1)
            yield from flush()  # keep output in input order
            yield CoreScore(path.name, None, None, text, str(err))
            continue
        pending.append((path.name, image, text))
        if len(pending) >= batch_size:
            yield from flush()
    yield from flush()
    bar.close()


def write_scores(results: Iterable[CoreScore], out: str | Path) -> tuple[int, dict[str, str]]:
    """Write results to CSV (under a temporary name, renamed when complete); returns
    `(scored, {file name: error})`."""
    from realness.files import atomic_path

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
                        "" if r.score_mos is None else f"{r.score_mos:.4f}", r.description, r.error])
            if r.error:
                failed[r.filename] = r.error
            else:
                ok += 1
    return ok, failed


def default_batch_size(device: str) -> int:
    """2 on CPU (larger batches are slower there at 384x512: eval/bench_core.py), 16 on a GPU."""
    return 16 if str(device).startswith("cuda") else 2


def score_folder(model_dir: str | Path, images: str | Path, descriptions: str | Path | None, out: str | Path,
                 batch_size: int | None = None, device: str = "cpu", progress: bool = True,
                 max_pixels: int | None = PIXEL_BUDGET) -> dict:
    """`realness score-core`: score every image in a folder and write `out` (CSV).

    Returns `{"ok": n scored, "failed": {file name: reason}, "skipped_files": [names without an image
    extension]}`.
    """
    batch_size = batch_size or default_batch_size(device)
    from realness.core import CoreModel
    from realness.data import load_descriptions

    from realness.devices import resolve_device

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
    ok, failed = write_scores(score_images(model, paths, texts, batch_size, progress, max_pixels), out)
    return {"ok": ok, "failed": failed, "skipped_files": [p.name for p, _ in skipped],
            "skipped_reasons": skipped_reasons(skipped)}
