"""`realness run` single-process vs on Ray Data with 1 and 2 actors per stage: images/s, same images, one run.

    python eval/bench_ray.py                      # offline defaults, local Ray instance on this machine
    python eval/bench_ray.py --n 256 --ray auto   # on the cluster `ray start` / `ray up` made
    python eval/bench_ray.py --describer Qwen/Qwen2.5-VL-3B-Instruct --ray auto --gpus 1 0.25 0.25

Images: the first --n of --images (default: RAISE's training images when ../shared/data/raise-train
exists, else the bundled samples repeated). Each mode runs into a fresh output folder, models loaded
inside the timing (every mode pays its own loading). Ray's start-up overhead is `ray.init` plus the
first tiny task, timed apart. Prints images/s per mode and the ratios to single-process; writes --out (JSON).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pipeline import RAISE, _images  # noqa: E402

from realness.argparsing import parse_dataclasses


@dataclass
class BenchRayConfig:
    """Options of `python eval/bench_ray.py` (the same parser as every `realness` command)."""

    images: str | None = field(default=None, metadata={
        "default_help": "RAISE training images, else the samples",
        "help": "Folder of images"})
    n: int = field(default=32, metadata={"help": "Images per mode"})
    describer: str = field(default="tiny-qwen2vl", metadata={
        "default_help": "tiny-qwen2vl, the offline placeholder",
        "help": "Describer model"})
    ray: str = field(default="local", metadata={"help": "local (start Ray here) or a cluster address"})
    workers: list[int] = field(default_factory=lambda: [1, 2], metadata={"help": "Actors per stage to time"})
    gpus: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0], metadata={
        "default_help": "0 0 0",
        "help": "GPUs per actor: describe, score, map"})
    cpus_per_actor: float = field(default=0.5, metadata={"help": "CPUs each actor reserves"})
    chunk_size: int = field(default=8, metadata={"help": "Images per block/batch"})
    out: str = field(default="eval/out/bench_ray.json", metadata={"help": "JSON results"})


def main(argv=None) -> dict:
    (a,) = parse_dataclasses([BenchRayConfig], argv, prog="python eval/bench_ray.py", description=__doc__)

    import ray

    from describe.tiny import tiny_describer
    from realness.cluster import connect
    from realness.dream.configuration import DreamConfig
    from realness.dream.tiny import tiny_clip
    from realness.pipeline import RunConfig, run
    from realness.samples import IMAGES_DIR

    src = Path(a.images) if a.images else (RAISE if RAISE.is_dir() else IMAGES_DIR)
    describer = str(tiny_describer()) if a.describer == "tiny-qwen2vl" else a.describer
    dream = DreamConfig(**tiny_clip())
    work = Path(tempfile.mkdtemp(prefix="bench_ray_"))
    results: dict = {"images": a.n, "source": str(src), "modes": {}}

    def timed(name: str, **extra) -> float:
        start = time.perf_counter()
        s = run(RunConfig(images=str(work / "images"), out=str(work / name), describer=describer, progress=False,
                          chunk_size=a.chunk_size, **extra), dream)
        seconds = time.perf_counter() - start
        results["modes"][name] = {"seconds": seconds, "images_per_s": a.n / seconds, "failed": len(s["failed"])}
        return seconds

    try:
        _images(src, a.n, work / "images")
        _images(src, 2, work / "warm")
        run(RunConfig(images=str(work / "warm"), out=str(work / "warm-run"), describer=describer, progress=False), dream)
        timed("single-process")
        start = time.perf_counter()
        connect(a.ray)
        ray.get(ray.remote(lambda: 1).remote())
        results["ray_startup_s"] = time.perf_counter() - start
        for w in a.workers:
            timed(f"ray-{w}-per-stage", ray=a.ray, ray_actors=[w, w, w], ray_gpus=list(a.gpus),
                  ray_cpus_per_actor=a.cpus_per_actor)
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    base = results["modes"]["single-process"]["images_per_s"]
    for name, r in results["modes"].items():
        r["ratio_vs_single_process"] = r["images_per_s"] / base
        print(f"{name:18s} {r['images_per_s']:7.2f} images/s  ({r['ratio_vs_single_process']:.2f}x)  {r['seconds']:.1f} s")
    print(f"Ray start-up (ray.init + first task): {results['ray_startup_s']:.1f} s")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
