"""CORE's inputs prepared off the caller's thread: `torch.utils.data.DataLoader` workers decode, downscale,
resize, normalise and tokenise while the model runs on the batch before (pinned memory on a GPU).

`predict_stream` is the one path every scorer takes (`CoreModel.predict`, `realness score-core`, the score
stage of `realness run`): items are file paths or PIL images with their descriptions; it yields, in input
order, `(index, z-score)` or `(index, error)` for an item that could not be prepared (an unreadable image, a
missing description), so a bad file fails alone and names itself. `num_workers=0` prepares in this process
with the same functions, so scores do not depend on it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from realness.images import PIXEL_BUDGET, ImageError, load_image


def default_num_workers(device: str | torch.device = "cpu") -> int:
    """Workers for CORE's preparation. On a GPU: one per CPU core beyond the driving one, at most 8, so decoding
    and resizing overlap the model. On a CPU: none, because the model's own threads already use every core and
    workers only compete with it (measured on 2 cores: 1 worker 0.83x, 2 workers 0.74x of preparing in-process)."""
    if torch.device(device).type != "cuda":
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(8, cores - 1))


class CoreInputs(Dataset):
    """Item `i`: its index, `pixel_values` (when the model reads images) and its description's text, or an
    `error` naming the file and the problem."""

    def __init__(self, processor, images: Sequence | None, descriptions: Sequence[str] | None,
                 max_pixels: int | None = PIXEL_BUDGET, names: Sequence[str] | None = None):
        self.processor, self.images, self.descriptions, self.max_pixels = processor, images, descriptions, max_pixels
        self.names = names
        self.n = len(images) if images is not None else len(descriptions or [])
        config = processor.config
        if config.uses_image and images is None:
            raise ValueError("this CORE model needs images")
        if config.uses_text and descriptions is None:
            raise ValueError("this CORE model needs descriptions")

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        config = self.processor.config
        item: dict = {"index": i}
        try:
            if config.uses_text:
                text = str(self.descriptions[i] or "")
                if not text.strip():
                    raise ValueError(f"{self._name(i)}: no description for this image")
                item["text"] = text
            if config.uses_image:
                image = self.images[i]
                if isinstance(image, (str, Path)):
                    image = load_image(image, self.max_pixels)
                item["pixel_values"] = self.processor.image_tensor(image)
        except (ImageError, ValueError) as err:
            return {"index": i, "error": str(err)}
        return item

    def _name(self, i: int) -> str:
        if self.names is not None:
            return str(self.names[i])
        image = self.images[i] if self.images is not None else None
        return str(image) if isinstance(image, (str, Path)) else f"item {i}"


class Collate:
    """Stacks a batch's images and tokenises its texts (padding to the batch's longest, as `CoreProcessor`
    does); items that failed travel as `(index, error)`."""

    def __init__(self, processor):
        self.processor = processor

    def __call__(self, items: list[dict]) -> dict:
        ok = [it for it in items if "error" not in it]
        batch: dict = {"index": [it["index"] for it in ok], "errors": [(it["index"], it["error"]) for it in items
                                                                       if "error" in it]}
        if ok and "pixel_values" in ok[0]:
            batch["pixel_values"] = torch.stack([it["pixel_values"] for it in ok])
        if ok and "text" in ok[0]:
            batch.update(self.processor.tokenize([it["text"] for it in ok]))
        return batch


def _one_thread(_worker: int) -> None:
    torch.set_num_threads(1)  # a worker resizes one image at a time; the model keeps the cores


def loader(processor, images, descriptions, batch_size: int, num_workers: int = 0, pin_memory: bool = False,
           max_pixels: int | None = PIXEL_BUDGET, names: Sequence[str] | None = None) -> DataLoader:
    """The DataLoader `predict_stream` iterates: in order, `prefetch_factor` 2 batches per worker ahead."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # tokenisers in forked workers
    return DataLoader(CoreInputs(processor, images, descriptions, max_pixels, names), batch_size=batch_size, shuffle=False,
                      num_workers=num_workers, collate_fn=Collate(processor), pin_memory=pin_memory,
                      worker_init_fn=_one_thread if num_workers else None,
                      persistent_workers=False, prefetch_factor=2 if num_workers else None,
                      # its own generator: a DataLoader draws a seed when it starts, and from torch's global one
                      # that would shift a training run's random stream every time it scores
                      generator=torch.Generator().manual_seed(0))


@torch.no_grad()
def predict_stream(model, images=None, descriptions=None, batch_size: int = 16, num_workers: int = 0,
                   max_pixels: int | None = PIXEL_BUDGET, fn=None, names: Sequence[str] | None = None
                   ) -> Iterator[tuple[int, object]]:
    """`(index, value)` per item in input order: the model's output (a z-score float, or the row of `fn`'s
    output) or, for an item that failed, an error string (naming the item by `names`, else its path). A batch
    whose forward pass raises is rerun item by item, so only the culprit fails."""
    fn = fn or model
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    pin = device.type == "cuda"
    try:
        for batch in loader(model.processor, images, descriptions, batch_size, num_workers, pin, max_pixels, names):
            results: dict[int, object] = dict(batch["errors"])
            inputs = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}
            if batch["index"]:
                try:
                    out = fn(**{k: v.to(device, non_blocking=pin) for k, v in inputs.items()}).float().cpu()
                    results.update(zip(batch["index"], out))
                except Exception as err:  # noqa: BLE001 - find the item that fails, keep the rest
                    if len(batch["index"]) == 1:
                        results[batch["index"][0]] = f"scoring failed: {err}"
                    else:
                        for row, index in enumerate(batch["index"]):
                            one = {k: v[row:row + 1] for k, v in inputs.items()}
                            try:
                                results[index] = fn(**{k: v.to(device) for k, v in one.items()}).float().cpu()[0]
                            except Exception as one_err:  # noqa: BLE001
                                results[index] = f"scoring failed: {one_err}"
            for index in sorted(results):
                value = results[index]
                yield index, (value.item() if isinstance(value, torch.Tensor) and value.dim() == 0 else value)
    finally:
        model.train(was_training)
