"""DREAM speed: maps per second, dense (one pass) vs the paper's sliding window, same images, same run.

    python eval/bench_dream.py                          # CPU, ViT-B-32, 512x384 images
    python eval/bench_dream.py --device cuda --images 32

Uses the OpenAI weights when they can be loaded and random weights otherwise (speed does not depend
on the weights). Prints one line per method and the ratio; writes --out (JSON).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from realness.argparsing import parse_dataclasses
from realness.dream import DreamConfig, DreamMapper

DESC = "Yes, the hat looks warped on the dog's head; the fur around the hat is blurry."


def _time(mapper: DreamMapper, images, batch: int, device: str) -> float:
    mapper.map_batch(images[:1], [DESC])  # warm-up
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for i in range(0, len(images), batch):
        mapper.map_batch(images[i:i + batch], [DESC] * len(images[i:i + batch]))
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return len(images) / (time.perf_counter() - start)


@dataclass
class BenchDreamConfig:
    """Options of `python eval/bench_dream.py` (the same parser as every `realness` command)."""

    images: int = field(default=4, metadata={"help": "Images per method"})
    device: str = field(default="cpu", metadata={"help": "cpu or cuda"})
    model: str = field(default="ViT-B-32", metadata={"help": "open_clip architecture"})
    stride: int = field(default=16, metadata={"default_help": "16, the issue's default", "help": "Window stride in px"})
    out: str = field(default="eval/out/bench_dream.json", metadata={"help": "JSON results"})


def main(argv=None) -> dict:
    (a,) = parse_dataclasses([BenchDreamConfig], argv, prog="python eval/bench_dream.py", description=__doc__)
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (384, 512, 3), dtype=np.uint8)) for _ in range(a.images)]
    try:
        from realness.dream.clip import load_clip

        clip, tok = load_clip(a.model, "openai", device=a.device)
        weights = "openai"
    except Exception:
        clip, tok = load_clip(a.model, None, device=a.device)
        weights = "random init (OpenAI weights not reachable)"
    rates = {}
    for method in ("window", "dense"):
        mapper = DreamMapper(DreamConfig(model=a.model, method=method, stride=a.stride), device=a.device, clip=clip,
                             tokenizer=tok)
        rates[method] = _time(mapper, images, batch=8, device=a.device)
        print(f"{method:6s} {a.device}: {rates[method]:8.3f} maps/s")
    ratio = rates["dense"] / rates["window"]
    print(f"dense / window: {ratio:.1f}x  ({a.model}, {weights}, 512x384, window 64 px stride {a.stride})")
    result = {"device": a.device, "model": a.model, "weights": weights, "maps_per_s": rates, "ratio": ratio,
              "torch_threads": torch.get_num_threads()}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
