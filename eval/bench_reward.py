"""Realness reward throughput (images/s): with and without gradients, per input size and batch size, each as a
ratio to `CoreModel.predict` on the same images (PIL in, no gradient) measured in the same run.

    python eval/bench_reward.py                                   # CPU: 256 and 512 square, batch 1 8 32
    python eval/bench_reward.py --device cuda --dtype bf16 --batch-sizes 1 8 32 128

Inputs are random B x 3 x S x S tensors in [0, 1]; the reward resizes them to CORE's input (448 x 597 for the
bundled models), so the cost barely depends on S. "with gradients" is a forward and a backward pass to the
pixels (what DRaFT-style fine-tuning pays per image); "no gradients" is `torch.no_grad()` scoring (best-of-n,
filtering, policy-gradient rewards). Writes --out (JSON).
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


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _timed(fn, n: int, device: str, repeats: int) -> float:
    fn()  # warm-up
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    _sync(device)
    return n * repeats / (time.perf_counter() - start)


@dataclass
class BenchRewardConfig:
    """Options of `python eval/bench_reward.py` (the same parser as every `realness` command)."""

    model: str = field(default="offline-image", metadata={"help": "CORE model"})
    sizes: list[int] = field(default_factory=lambda: [256, 512], metadata={"help": "Square input sides"})
    batch_sizes: list[int] = field(default_factory=lambda: [1, 8, 32], metadata={"help": "Batch sizes"})
    repeats: int = field(default=1, metadata={"help": "Timed repeats per cell after a warm-up"})
    device: str = field(default="cpu", metadata={"help": "cpu or cuda"})
    dtype: str = field(default="fp32", metadata={"help": "Autocast dtype", "choices": tuple(["fp32", "bf16", "fp16"])})
    out: str = field(default="eval/out/bench_reward.json", metadata={"help": "JSON results"})


def main(argv=None) -> dict:
    (a,) = parse_dataclasses([BenchRewardConfig], argv, prog="python eval/bench_reward.py", description=__doc__)
    from realness.reward import RealnessReward

    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[a.dtype]
    reward = RealnessReward(a.model, device=a.device, dtype=dtype)
    rng = np.random.default_rng(0)
    results = {"device": torch.cuda.get_device_name() if a.device.startswith("cuda") else "cpu", "dtype": a.dtype,
               "threads": torch.get_num_threads(), "model": a.model, "cells": []}
    for size in a.sizes:
        for bs in a.batch_sizes:
            x = torch.rand(bs, 3, size, size, generator=torch.Generator().manual_seed(size + bs)).to(a.device)
            pil = [Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)) for _ in range(bs)]

            def no_grad(x=x):
                with torch.no_grad():
                    reward(x)

            def with_grad(x=x):
                xs = x.clone().requires_grad_(True)
                reward(xs).sum().backward()

            base = _timed(lambda pil=pil, bs=bs: reward.core.predict(pil, batch_size=bs), bs, a.device, a.repeats)
            cell = {"size": size, "batch": bs, "predict": base, "no_grad": _timed(no_grad, bs, a.device, a.repeats),
                    "with_grad": _timed(with_grad, bs, a.device, a.repeats)}
            cell["no_grad_over_predict"] = cell["no_grad"] / base
            cell["with_grad_over_predict"] = cell["with_grad"] / base
            results["cells"].append(cell)
            print(f"{size}x{size} batch {bs:3d}: predict {base:7.2f}/s  reward no-grad {cell['no_grad']:7.2f}/s "
                  f"({cell['no_grad_over_predict']:.2f}x)  with gradients {cell['with_grad']:7.2f}/s "
                  f"({cell['with_grad_over_predict']:.2f}x)")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
