"""`realness run` wall time per image, per stage and end to end, against the same work as separate commands.

    python eval/bench_pipeline.py                                  # tiny placeholder describer, CPU
    python eval/bench_pipeline.py --describer offline/small-describer   # the offline default describer
    python eval/bench_pipeline.py --clip_model ViT-B-32 --clip_pretrained ""   # real-size CLIP, random weights
    python eval/bench_pipeline.py --describer Qwen/Qwen2.5-VL-3B-Instruct --device cuda --n 256

Images: the first `--n` of `--images` (default: RAISE's training images when ../shared/data/raise-train
exists, else the bundled samples repeated). Run A is `realness run` (streaming, one process, every model
loaded once). Baseline B, in the same process and on the same images, is the three-command route a user
had before: `realness annotate --engine ...` (describer), then `score-core`, then `map`. Both include
model loading. Prints the per-stage table and the ratio B / A; writes --out (JSON).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from realness.argparsing import parse_dataclasses

RAISE = Path(__file__).resolve().parents[2] / "shared" / "data" / "raise-train" / "images"


def _images(src: Path, n: int, dst: Path) -> int:
    from realness.images import list_images

    paths = list_images(src)
    dst.mkdir(parents=True)
    for i in range(n):
        p = paths[i % len(paths)]
        (dst / f"{i:04d}_{p.name}").symlink_to(p.resolve())
    return n


@dataclass
class BenchPipelineConfig:
    """Options of `python eval/bench_pipeline.py` (the same parser as every `realness` command)."""

    images: str | None = field(default=None, metadata={
        "default_help": "RAISE training images, else the samples",
        "help": "Folder of images"})
    n: int = field(default=32, metadata={"help": "Images to run"})
    describer: str = field(default="tiny-qwen2vl", metadata={
        "default_help": "tiny-qwen2vl, the offline placeholder",
        "help": "Describer model"})
    adapter: str | None = field(default=None, metadata={
        "default_help": "none",
        "help": "Describer LoRA adapter folder"})
    engine: str = field(default="auto", metadata={"help": "Describer engine"})
    clip_model: str = field(default="tiny-clip", metadata={
        "help": "open_clip model, or tiny-clip for the offline placeholder"})
    clip_pretrained: str = field(default="openai", metadata={"help": "open_clip weights tag; '' for random init"})
    device: str = field(default="auto", metadata={"help": "auto, cpu or cuda"})
    chunk_size: int = field(default=16, metadata={"help": "realness run --chunk_size"})
    out: str = field(default="eval/out/bench_pipeline.json", metadata={"help": "JSON results"})


def main(argv=None) -> dict:
    (a,) = parse_dataclasses([BenchPipelineConfig], argv, prog="python eval/bench_pipeline.py", description=__doc__)

    from describe.annotate import AnnotateConfig, annotate
    from describe.tiny import tiny_describer
    from realness.dream.configuration import DreamConfig
    from realness.dream.run import MapConfig, map_folder
    from realness.dream.tiny import tiny_clip
    from realness.pipeline import RunConfig, _device, run
    from realness.samples import IMAGES_DIR
    from realness.scoring import ScoreCoreConfig, score_folder

    src = Path(a.images) if a.images else (RAISE if RAISE.is_dir() else IMAGES_DIR)
    clip = tiny_clip() if a.clip_model == "tiny-clip" else {"model": a.clip_model, "pretrained": a.clip_pretrained or None}
    dream = DreamConfig(**clip)
    describer = str(tiny_describer()) if a.describer == "tiny-qwen2vl" else a.describer
    device = _device(a.device)
    work = Path(tempfile.mkdtemp(prefix="bench_pipeline_"))
    try:
        n = _images(src, a.n, work / "images")
        _images(src, 2, work / "warm")  # imports, model files and kernels warmed up before either is timed
        run(RunConfig(images=str(work / "warm"), out=str(work / "warm-run"), describer=describer, engine=a.engine,
                      device=device, progress=False), dream)
        for f in (work / "images").iterdir():
            f.read_bytes()  # both routes read the images from the page cache
        start = time.perf_counter()
        s = run(RunConfig(images=str(work / "images"), out=str(work / "run"), describer=describer, adapter=a.adapter,
                          engine=a.engine,
                          device=device, chunk_size=a.chunk_size, progress=False), dream)
        pipeline_s = time.perf_counter() - start

        base = {}
        start = time.perf_counter()
        annotate(AnnotateConfig(images=str(work / "images"), out=str(work / "b" / "descriptions.jsonl"),
                                engine=s["models"]["describer"]["engine"], model=describer, adapter=a.adapter,
                                progress=False))
        base["describe (annotate)"] = time.perf_counter() - start
        start = time.perf_counter()
        core = s["models"]["core"]  # the model `--core auto` chose for the run
        descriptions = None if core["mode"] == "image" else str(work / "b" / "descriptions.jsonl")
        score_folder(ScoreCoreConfig(core=core["name"], images=str(work / "images"), descriptions=descriptions,
                                     out=str(work / "b" / "scores.csv"), device=device, progress=False))
        base["score (score-core)"] = time.perf_counter() - start
        start = time.perf_counter()
        map_folder(MapConfig(images=str(work / "images"), descriptions=str(work / "b" / "descriptions.jsonl"),
                             out=str(work / "b" / "maps"), device=device, progress=False), dream)
        base["map (map)"] = time.perf_counter() - start
    finally:
        shutil.rmtree(work, ignore_errors=True)
    baseline_s = sum(base.values())
    result = {
        "images": n, "source": str(src), "device": device, "models": s["models"], "failed": len(s["failed"]),
        "pipeline": {"end_to_end_s_per_image": pipeline_s / n, "model_load_s": s["seconds"]["model_load"],
                     "per_stage_s_per_image": {k: v["mean_s_per_image"] for k, v in s["seconds"]["per_stage"].items()}},
        "separate_commands": {k: v / n for k, v in base.items()} | {"end_to_end_s_per_image": baseline_s / n},
        "ratio_separate_over_pipeline": baseline_s / pipeline_s,
    }
    print(f"{n} images from {src} on {device}; describer {s['models']['describer']['name']}, "
          f"CORE {s['models']['core']['name']}, CLIP {s['models'].get('clip', {}).get('name')}")
    print("realness run, s per image:  " + "  ".join(
        f"{k} {v:.4f}" for k, v in result["pipeline"]["per_stage_s_per_image"].items())
          + f"  | end to end {pipeline_s / n:.4f} (model loading {sum(s['seconds']['model_load'].values()):.1f} s total)")
    print("separate commands, s per image:  " + "  ".join(f"{k} {v / n:.4f}" for k, v in base.items())
          + f"  | end to end {baseline_s / n:.4f}")
    print(f"ratio separate / run: {result['ratio_separate_over_pipeline']:.2f}x")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
