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

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pipeline import RAISE, _images  # noqa: E402


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", default=None, help="Folder of images (default: RAISE training images, else the samples)")
    p.add_argument("--n", type=int, default=32, help="Images per mode (default: 32)")
    p.add_argument("--describer", default="tiny-qwen2vl", help="Describer model (default: tiny-qwen2vl, the offline "
                                                               "placeholder)")
    p.add_argument("--ray", default="local", help="local (start Ray here) or a cluster address (default: local)")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="Actors per stage to time (default: 1 2)")
    p.add_argument("--gpus", type=float, nargs=3, default=[0.0, 0.0, 0.0], help="GPUs per actor: describe, score, map "
                                                                                "(default: 0 0 0)")
    p.add_argument("--cpus_per_actor", type=float, default=0.5, help="CPUs each actor reserves (default: 0.5)")
    p.add_argument("--chunk_size", type=int, default=8, help="Images per block/batch (default: 8)")
    p.add_argument("--out", default="eval/out/bench_ray.json", help="JSON results (default: eval/out/bench_ray.json)")
    a = p.parse_args(argv)

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
