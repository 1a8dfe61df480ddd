"""Describer throughput: vLLM vs transformers `generate`, same model, adapter, images and output length, same run.

    python eval/bench_describe.py                                      # tiny random Qwen2-VL (CPU smoke)
    python eval/bench_describe.py --model realsize:qwen2.5-vl-3b --device cuda --dtype bfloat16 \\
        --images 64 --batch-sizes 1 8 32 64 --max-new-tokens 64       # the default describer's shapes
    python eval/bench_describe.py --model Qwen/Qwen2.5-VL-3B-Instruct --adapter runs/describer-raise/adapter

`realsize:<name>` builds the model from its published configuration with random weights
(`describe.realsize`; speed does not depend on the weights) into `eval/out/realsize/<name>` once.
Every request decodes exactly --max-new-tokens tokens (the end token is held back: `min_new_tokens` in
transformers, `min_tokens` in vLLM), so both engines do the same work. Prints images/s and tokens/s per
engine and batch size, the ratio vLLM / best transformers batch, peak memory (GPU: the allocator's peak;
CPU: resident memory of this process and its children), and for Qwen-family models the FLOPs per image
(linear layers: vision tower over its patches, language model over prompt + generated tokens, LM head
over generated tokens) against a bf16 matrix-product rate measured in the same run. Writes --out (JSON).
"""

from __future__ import annotations

import gc
import importlib.util
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from realness.argparsing import parse_dataclasses


def _rss_gib() -> float:
    import psutil

    proc = psutil.Process()
    return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]) / 2**30


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _peak_reset(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak_gib(device: str, base_rss: float) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**30
    return _rss_gib() - base_rss


def matmul_tflops(device: str, n: int = 8192, dtype=torch.bfloat16, repeats: int = 10) -> float:
    """A square bf16 matrix product's rate on `device`: the ceiling FLOPs per image are compared with."""
    if not device.startswith("cuda"):
        n, repeats = 2048, 3
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(device)
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e12


def flops_per_image(model_dir: str, image: Image.Image, new_tokens: int) -> dict | None:
    """Linear-layer FLOPs of describing one image with a Qwen-family VLM, from its shapes (meta device)."""
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    from describe.chat import generation_inputs

    config = AutoConfig.from_pretrained(model_dir)
    if not config.model_type.startswith("qwen2"):
        return None
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config)
    inputs = generation_inputs(AutoProcessor.from_pretrained(model_dir), [image])
    prompt, patches = inputs["input_ids"].shape[1], int(inputs["image_grid_thw"][0].prod())

    def linear(module) -> int:
        return sum(m.weight.numel() for m in module.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv3d)))

    visual, text = model.model.visual, model.model.language_model
    merge = config.vision_config.spatial_merge_size ** 2
    vision = 2 * (linear(visual.blocks) + linear(visual.patch_embed)) * patches + 2 * linear(visual.merger) * patches // merge
    language = 2 * linear(text) * (prompt + new_tokens) + 2 * model.lm_head.weight.numel() * new_tokens
    return {"prompt_tokens": prompt, "image_patches": patches, "vision_gflop": vision / 1e9,
            "language_gflop": language / 1e9, "total_gflop": (vision + language) / 1e9}


def _time(generate, images, device: str) -> float:
    generate(images[: min(2, len(images))])  # warm-up
    _sync(device)
    start = time.perf_counter()
    generate(images)
    _sync(device)
    return time.perf_counter() - start


@dataclass
class BenchDescribeConfig:
    """Options of `python eval/bench_describe.py` (the same parser as every `realness` command)."""

    model: str | None = field(default=None, metadata={
        "default_help": "build the tiny test Qwen2-VL",
        "help": "Base VLM id or folder, or realsize:qwen2.5-vl-3b"})
    adapter: str | None = field(default=None, metadata={"default_help": "none", "help": "LoRA adapter folder"})
    engines: list[str] = field(default_factory=lambda: ["transformers", "vllm"], metadata={
        "help": "Engines to time; vllm is skipped with a note when not installed"})
    images: int = field(default=32, metadata={"help": "Images per measurement"})
    image_size: list[int] = field(default_factory=lambda: [512, 384], metadata={"help": "Random images of this size"})
    image_dir: str | None = field(default=None, metadata={
        "default_help": "random noise of --image-size",
        "help": "Take the images from this folder, e.g. RAISE's"})
    batch_sizes: list[int] = field(default_factory=lambda: [8], metadata={
        "help": "transformers batch sizes, each timed on two batches (at least 8 images); vLLM gets all --images at "
                "once"})
    max_new_tokens: int = field(default=48, metadata={"help": "Tokens every request decodes, exactly"})
    dtype: str = field(default="float32", metadata={"help": "float32, bfloat16 or float16, for both engines"})
    device: str = field(default="cuda" if torch.cuda.is_available() else "cpu", metadata={
        "default_help": "cuda when present, else cpu",
        "help": "transformers device"})
    max_model_len: int | None = field(default=None, metadata={
        "default_help": "4096 for a given model, 1024 for the tiny one",
        "help": "vLLM context length"})
    out: str = field(default="eval/out/bench_describe.json", metadata={"help": "JSON results"})


def main(argv=None) -> dict:
    (a,) = parse_dataclasses([BenchDescribeConfig], argv, prog="python eval/bench_describe.py", description=__doc__)
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("VLLM_HOST_IP", "127.0.0.1")
    from describe.realsize import benchmark_model

    model = benchmark_model(a.model, a.device)
    rng = np.random.default_rng(0)
    w, h = a.image_size
    if a.image_dir:
        from realness.images import list_images, load_image

        images = [load_image(f) for f in list_images(a.image_dir)[: a.images]]
    else:
        images = [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for _ in range(a.images)]
    from describe.engines import create_engine

    hf_dtype = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}.get(a.dtype, "auto")
    tokens = a.max_new_tokens
    result = {"model": a.model or "tiny-qwen2vl", "adapter": a.adapter, "images": len(images), "image_size": [w, h],
              "max_new_tokens": tokens, "dtype": a.dtype, "device": a.device,
              "device_name": torch.cuda.get_device_name() if a.device.startswith("cuda") else "cpu",
              "torch_threads": torch.get_num_threads(), "engines": {}}
    flops = flops_per_image(model, images[0], tokens)
    if flops:
        result["flops"] = flops
        result["matmul_tflops"] = matmul_tflops(a.device)
    if "transformers" in a.engines:
        _peak_reset(a.device)
        base_rss = _rss_gib()
        hf = create_engine("transformers", model, a.adapter, dtype=hf_dtype, device=a.device, max_new_tokens=tokens,
                           min_new_tokens=tokens)
        rows = {}
        for bs in a.batch_sizes:
            subset = images[: max(2 * bs, 8)]  # two full batches (at least 8 images): small batches are slow
            seconds = _time(lambda ims, bs=bs: hf.generate(ims, bs), subset, a.device)
            rows[bs] = {"images": len(subset), "images_per_s": len(subset) / seconds,
                        "tokens_per_s": len(subset) * tokens / seconds}
        result["engines"]["transformers"] = {"batches": rows, "peak_gib": _peak_gib(a.device, base_rss)}
        del hf
        _peak_reset(a.device)
    if "vllm" in a.engines and importlib.util.find_spec("vllm") is None:
        result["engines"]["vllm"] = {"skipped": "vllm is not installed here"}
    elif "vllm" in a.engines:
        base_rss = _rss_gib()
        engine = create_engine("vllm", model, a.adapter, dtype=a.dtype, max_new_tokens=tokens, min_new_tokens=tokens,
                               max_model_len=a.max_model_len or (4096 if a.model else 1024))
        with engine:
            seconds = _time(engine.generate, images, a.device)
            peak = _rss_gib() - base_rss
            if a.device.startswith("cuda"):
                free, total = torch.cuda.mem_get_info()
                peak = (total - free) / 2**30  # vLLM's worker reserves its share of the card up front
        result["engines"]["vllm"] = {"images_per_s": len(images) / seconds,
                                     "tokens_per_s": len(images) * tokens / seconds, "peak_gib": peak}
    _report(result)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2))
    return result


def _report(result: dict) -> None:
    flops, ceiling = result.get("flops"), result.get("matmul_tflops")
    if flops:
        print(f"per image: {flops['prompt_tokens']} prompt tokens ({flops['image_patches']} patches), "
              f"{result['max_new_tokens']} generated, {flops['total_gflop']:.0f} GFLOP; "
              f"bf16 matrix product here: {ceiling:.1f} TFLOP/s -> ceiling {ceiling * 1e3 / flops['total_gflop']:.1f} images/s")

    def fraction(rate):
        return f"  ({rate * flops['total_gflop'] / (ceiling * 1e3):.1%} of the ceiling)" if flops else ""

    best = 0.0
    hf = result["engines"].get("transformers")
    if hf:
        for bs, r in hf["batches"].items():
            best = max(best, r["images_per_s"])
            print(f"transformers batch {bs:>3}: {r['images_per_s']:8.2f} images/s {r['tokens_per_s']:9.1f} tokens/s"
                  f"{fraction(r['images_per_s'])}")
        print(f"transformers peak memory {hf['peak_gib']:.2f} GiB")
    vl = result["engines"].get("vllm")
    if vl and "skipped" in vl:
        print(f"vllm: skipped ({vl['skipped']})")
    elif vl:
        print(f"vllm (all {result['images']} at once): {vl['images_per_s']:8.2f} images/s {vl['tokens_per_s']:9.1f} tokens/s"
              f"{fraction(vl['images_per_s'])}   memory {vl['peak_gib']:.2f} GiB")
        if best:
            result["ratio_vllm_over_transformers"] = vl["images_per_s"] / best
            print(f"vLLM / best transformers batch: {result['ratio_vllm_over_transformers']:.2f}x")


if __name__ == "__main__":
    main()
