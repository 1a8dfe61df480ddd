"""Describer throughput: vLLM engine vs transformers engine, same model, adapter and images, same run.

    python eval/bench_describe.py --model MODEL_DIR [--adapter ADAPTER_DIR] --images 64
    python eval/bench_describe.py --model Qwen/Qwen2.5-VL-3B-Instruct --adapter runs/describer-raise/adapter
    python eval/bench_describe.py --model offline/small-describer --image_dir ../shared/data/raise-train/images

Without --model it builds the tiny random Qwen2-VL of the test suite (CPU smoke benchmark). Prints
images/s per engine, their ratio, and resident memory (this process and its children, e.g. vLLM's
workers) after each engine is loaded; writes --out (JSON).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import time
from pathlib import Path

import numpy as np
from PIL import Image


def _rss_gib() -> float:
    import psutil

    proc = psutil.Process()
    return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]) / 2**30


def _rate(engine, images, batch_size: int) -> float:
    engine.generate(images[:2], batch_size)  # warm-up
    start = time.perf_counter()
    engine.generate(images, batch_size)
    return len(images) / (time.perf_counter() - start)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="Base VLM id or folder (default: build the tiny test Qwen2-VL)")
    p.add_argument("--adapter", default=None, help="LoRA adapter folder (default: none)")
    p.add_argument("--images", type=int, default=32, help="Images per engine (default: 32)")
    p.add_argument("--image_dir", default=None, help="Take the images from this folder, e.g. RAISE's (default: random 512x384 noise)")
    p.add_argument("--batch-size", type=int, default=8, help="transformers batch size (default: 8)")
    p.add_argument("--max-new-tokens", type=int, default=48, help="Tokens generated per image (default: 48)")
    p.add_argument("--dtype", default="float32", help="vLLM dtype; transformers uses the matching one (default: float32)")
    p.add_argument("--out", default="eval/out/bench_describe.json", help="JSON results (default: eval/out/bench_describe.json)")
    a = p.parse_args(argv)
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("VLLM_HOST_IP", "127.0.0.1")
    model = a.model
    if model is None:
        from describe.tiny import build_tiny_qwen2vl

        model = str(build_tiny_qwen2vl(Path("eval/out/tiny-qwen2vl")))
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (384, 512, 3), dtype=np.uint8)) for _ in range(a.images)]
    if a.image_dir:
        from realness.images import list_images, load_image

        images = [load_image(f) for f in list_images(a.image_dir)[: a.images]]
    from describe.engines import create_engine

    hf_dtype = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}.get(a.dtype, "auto")
    result = {"model": model, "adapter": a.adapter, "images": a.images, "max_new_tokens": a.max_new_tokens}
    base_rss = _rss_gib()
    hf = create_engine("transformers", model, a.adapter, dtype=hf_dtype, max_new_tokens=a.max_new_tokens)
    result["transformers"] = {"images_per_s": _rate(hf, images, a.batch_size), "rss_gib": _rss_gib() - base_rss}
    del hf
    gc.collect()
    base_rss = _rss_gib()
    vl = create_engine("vllm", model, a.adapter, dtype=a.dtype, max_new_tokens=a.max_new_tokens,
                       max_model_len=4096 if a.model else 1024)
    result["vllm"] = {"images_per_s": _rate(vl, images, a.batch_size), "rss_gib": _rss_gib() - base_rss}
    result["ratio_vllm_over_transformers"] = result["vllm"]["images_per_s"] / result["transformers"]["images_per_s"]
    for name in ("transformers", "vllm"):
        r = result[name]
        print(f"{name:12s} {r['images_per_s']:8.2f} images/s   memory +{r['rss_gib']:.2f} GiB")
    print(f"vLLM / transformers: {result['ratio_vllm_over_transformers']:.2f}x")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
