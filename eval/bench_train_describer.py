"""Describer training: bf16 LoRA vs 4-bit QLoRA, samples/s and peak memory, through `train_describer`, same run.

    python eval/bench_train_describer.py                                   # tiny random Qwen2-VL (CPU smoke)
    python eval/bench_train_describer.py --model realsize:qwen2.5-vl-3b --steps 10 --batch-size 4
    python eval/bench_train_describer.py --model realsize:qwen2.5-vl-3b --steps 3 --batch-size 1 \\
        --image-size 256 192                                              # what 2 CPU cores can take

Each mode trains in its own process (so its peak memory is its own) with the options of
`training/train_describer.py`: LoRA r=16 on every language-model projection, gradient checkpointing on,
base weights in bf16 (`lora`) or 4-bit NF4 with bf16 compute (`qlora`). Samples are synthetic images of
--image-size with a 40-word description. Samples/s is timed from the end of the warm-up steps to the last
step; peak memory is the CUDA allocator's peak on a GPU, and on CPU the largest resident memory sampled every
5 ms during training, after the C allocator has returned the pages loading freed (`malloc_trim` at the start of
training); the process's own peak, also reported, includes loading: QLoRA reads the bf16 weights before
quantizing them. `--modes lora-before qlora-before` run the recipe before the memory work (logits over the whole
vocabulary at every position, PEFT's float32 casts) in the same run.
Prints both modes and the ratios QLoRA / LoRA; writes --out (JSON).
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from realness.argparsing import parse_dataclasses

DESCRIPTION = ("Yes, the hands look merged and the fingers blend into the cup, the lighting on the face does not match "
               "the window behind, the text on the sign is garbled and the reflections in the glass are missing.")


def synthetic_manifest(folder: Path, n: int, size: tuple[int, int]) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    with (folder / "manifest.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "description", "source"])
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(folder / f"s{i}.png")
            w.writerow([f"s{i}.png", DESCRIPTION, "gpt"])
    return folder / "manifest.csv"


def child(a) -> dict:
    """One training run in this process; prints and returns its timings and peak memory."""
    import resource

    from transformers import TrainerCallback

    from describe.training import DescriberTrainConfig, train_describer

    class Clock(TrainerCallback):
        def __init__(self):
            self.times: list[float] = []

        def on_train_begin(self, args, state, control, **kwargs):
            # hand the allocator's free pages back (loading, and QLoRA's bf16 copy before quantizing), then sample
            # the resident memory every 5 ms: the peak inside a step (logits, activations) is freed by its end
            import ctypes
            import threading

            import psutil

            try:
                ctypes.CDLL("libc.so.6").malloc_trim(0)
            except OSError:
                pass
            me = psutil.Process()

            def sample():
                while not self.done:
                    self.rss = max(getattr(self, "rss", 0), me.memory_info().rss)
                    time.sleep(0.005)

            self.done = False
            threading.Thread(target=sample, daemon=True).start()

        def on_train_end(self, args, state, control, **kwargs):
            self.done = True

        def on_step_end(self, args, state, control, **kwargs):
            import psutil

            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.times.append(time.perf_counter())
            self.rss = max(getattr(self, "rss", 0), psutil.Process().memory_info().rss)

    before = a.child.endswith("-before")  # the recipe before the memory work: full-vocabulary loss, float32 casts
    cfg = DescriberTrainConfig(data=a.manifest, model_id=a.model_dir, output_dir=a.run_dir,
                               quantize_4bit=a.child.startswith("qlora"), answer_only_loss=not before, kbit_upcast=before,
                               dtype="bf16", max_steps=a.steps, batch_size=a.batch_size, grad_accum=1, val_fraction=0,
                               save_steps=10**6, logging_steps=10**6, num_workers=0, warmup_ratio=0.0, resume=False)
    clock = Clock()
    train_describer(cfg, callbacks=(clock,))
    t = clock.times
    warm = min(a.warmup, len(t) - 2)
    rate = a.batch_size * (len(t) - 1 - warm) / (t[-1] - t[warm])
    process_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    if torch.cuda.is_available():
        peak = torch.cuda.max_memory_allocated() / 2**30
    else:  # resident memory while training: the process peak also holds the bf16 copy QLoRA quantizes on load
        peak = clock.rss / 2**30
    result = {"mode": a.child, "samples_per_s": rate, "peak_gib": peak, "process_peak_gib": process_peak,
              "steps_timed": len(t) - 1 - warm}
    print("RESULT " + json.dumps(result))
    return result


@dataclass
class BenchTrainDescriberConfig:
    """Options of `python eval/bench_train_describer.py` (the same parser as every `realness` command)."""

    model: str | None = field(default=None, metadata={
        "default_help": "the tiny test Qwen2-VL",
        "help": "Base VLM id or folder, or realsize:qwen2.5-vl-3b"})
    modes: list[str] = field(default_factory=lambda: ["lora", "qlora"], metadata={
        "help": "lora (bf16 base) and/or qlora (4-bit NF4 base); lora-before / qlora-before: the recipe before the "
                "memory work (logits over the whole vocabulary at every position, PEFT's float32 casts)"})
    steps: int = field(default=6, metadata={"help": "Optimizer steps per mode"})
    warmup: int = field(default=2, metadata={"help": "Steps left out of the timing"})
    batch_size: int = field(default=2, metadata={"help": "Samples per step"})
    image_size: list[int] = field(default_factory=lambda: [512, 384], metadata={"help": "Synthetic image size"})
    out: str = field(default="eval/out/bench_train_describer.json", metadata={"help": "JSON results"})
    child: str | None = field(default=None, metadata={"help": argparse.SUPPRESS})
    model_dir: str | None = field(default=None, metadata={"help": argparse.SUPPRESS})
    manifest: str | None = field(default=None, metadata={"help": argparse.SUPPRESS})
    run_dir: str | None = field(default=None, metadata={"help": argparse.SUPPRESS})


def main(argv=None) -> dict:
    (a,) = parse_dataclasses([BenchTrainDescriberConfig], argv, prog="python eval/bench_train_describer.py", description=__doc__)
    if a.child:
        return child(a)
    from describe.realsize import benchmark_model

    model_dir = benchmark_model(a.model)
    work = Path("eval/out/bench_train_describer")
    manifest = synthetic_manifest(work / "data", a.batch_size * (a.steps + 1), tuple(a.image_size))
    result = {"model": a.model or "tiny-qwen2vl", "steps": a.steps, "batch_size": a.batch_size, "image_size": a.image_size,
              "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu", "modes": {}}
    for mode in a.modes:
        cmd = [sys.executable, __file__, "--child", mode, "--model_dir", model_dir, "--manifest", str(manifest),
               "--run_dir", str(work / f"run-{mode}"), "--steps", str(a.steps), "--warmup", str(a.warmup),
               "--batch-size", str(a.batch_size)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
        if proc.returncode or not lines:
            result["modes"][mode] = {"error": (proc.stderr or proc.stdout).strip().splitlines()[-1:]}
            print(f"{mode}: failed: {result['modes'][mode]['error']}")
            continue
        result["modes"][mode] = r = json.loads(lines[-1][7:])
        print(f"{mode:12s} {r['samples_per_s']:7.3f} samples/s   peak memory {r['peak_gib']:6.2f} GiB")
    lora, qlora = result["modes"].get("lora", {}), result["modes"].get("qlora", {})
    if "peak_gib" in lora and "peak_gib" in qlora:
        result["qlora_over_lora_memory"] = qlora["peak_gib"] / lora["peak_gib"]
        result["qlora_over_lora_speed"] = qlora["samples_per_s"] / lora["samples_per_s"]
        print(f"QLoRA / LoRA: peak memory {result['qlora_over_lora_memory']:.2f}x, speed {result['qlora_over_lora_speed']:.2f}x")
    old_lora, old_qlora = result["modes"].get("lora-before", {}), result["modes"].get("qlora-before", {})
    if "peak_gib" in old_lora and "peak_gib" in qlora:
        result["qlora_over_lora_before_memory"] = qlora["peak_gib"] / old_lora["peak_gib"]
        print(f"QLoRA now / LoRA before: peak memory {result['qlora_over_lora_before_memory']:.2f}x")
    if "peak_gib" in old_qlora and "peak_gib" in old_lora:
        result["before_qlora_over_lora_memory"] = old_qlora["peak_gib"] / old_lora["peak_gib"]
        print(f"before: QLoRA / LoRA peak memory {result['before_qlora_over_lora_memory']:.2f}x")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
