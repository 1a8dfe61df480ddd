"""Map stage speed: evidence maps (detectors + artifact map) against DREAM's dense CLIP map, same images, same run.

    python eval/bench_maps.py                     # CPU, the six sample images at 512x384, 3 rounds
    python eval/bench_maps.py --device cuda --rounds 10

Prints seconds per image for each part of the evidence map (the four detectors, the artifact map) and
for the dense CLIP ViT-B/32 map (random weights when the OpenAI ones cannot be fetched; speed does not
depend on them), and the ratio; writes --out (JSON).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from realness.argparsing import parse_dataclasses
from realness.dream import DreamConfig, DreamMapper
from realness.dream.artifact import ArtifactMapModel
from realness.dream.evidence import EvidenceMapper
from realness.dream.regions import LABELS, RegionDetector

SAMPLES = Path(__file__).resolve().parent.parent / "realness" / "samples" / "images"
DESC = "Yes, the face looks waxy and the hands are malformed; the background is blurry."


def _per_image(fn, images, rounds: int) -> float:
    fn(images[:1])  # warm-up (loads models)
    start = time.perf_counter()
    for _ in range(rounds):
        for im in images:
            fn([im])
    return (time.perf_counter() - start) / (rounds * len(images))


@dataclass
class BenchMapsConfig:
    """Options of `python eval/bench_maps.py` (the same parser as every `realness` command)."""

    device: str = field(default="cpu", metadata={"help": "cpu or cuda"})
    rounds: int = field(default=3, metadata={"help": "Passes over the six images"})
    out: str = field(default="eval/out/bench_maps.json", metadata={"help": "JSON results"})


def main(argv=None) -> dict:
    (a,) = parse_dataclasses([BenchMapsConfig], argv, prog="python eval/bench_maps.py", description=__doc__)
    images = [Image.open(f).convert("RGB").resize((512, 384)) for f in sorted(SAMPLES.glob("*.jpg"))]
    detector = RegionDetector()
    artifact = ArtifactMapModel.from_pretrained("offline/artifact-map", device=a.device)
    seconds = {}
    for label in LABELS:
        one = RegionDetector((label,))
        seconds[f"detector {label}"] = _per_image(lambda ims, one=one: one.detect_batch(ims), images, a.rounds)
    seconds["artifact map"] = _per_image(lambda ims: artifact.predict(ims), images, a.rounds)
    mapper = EvidenceMapper(DreamConfig(source="evidence"), device=a.device, artifact_model=artifact, detector=detector)
    seconds["evidence map (all)"] = _per_image(lambda ims: mapper.map_batch(ims, [DESC] * len(ims)), images, a.rounds)
    try:
        from realness.dream.clip import load_clip

        clip, tok = load_clip("ViT-B-32", "openai", device=a.device)
        weights = "openai"
    except Exception:  # noqa: BLE001 - no network: random weights, same speed
        from realness.dream.clip import load_clip

        clip, tok = load_clip("ViT-B-32", None, device=a.device)
        weights = "random init (OpenAI weights not reachable)"
    dense = DreamMapper(DreamConfig(method="dense"), device=a.device, clip=clip, tokenizer=tok)
    seconds["dense CLIP map"] = _per_image(lambda ims: dense.map_batch(ims, [DESC] * len(ims)), images, a.rounds)
    result = {"device": a.device, "image_size": [512, 384], "clip_weights": weights,
              "seconds_per_image": {k: round(v, 4) for k, v in seconds.items()},
              "evidence_over_dense_clip_time": round(seconds["evidence map (all)"] / seconds["dense CLIP map"], 3)}
    for k, v in seconds.items():
        print(f"{k:<22} {v:.3f} s/image")
    print(f"evidence map takes {result['evidence_over_dense_clip_time']:.2f}x the dense CLIP map's time")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
