"""Measure evidence maps on data no model here trained on: planted edits on held-out photographs, per kind and
leave-one-kind-out, and real artifacts of RAISE's AI-generated images weakly labelled by GPT-4.1 + detectors.

    REALNESS_RAISE_DIR=/path/to/raise-train python eval/eval_artifact_map.py \
        --model runs/artifact-map --holdout warp=runs/artifact-map-no-warp smear=runs/artifact-map-no-smear

1. **Planted**: a fresh planted set (seed `--seed`, 4 edits per photo, every kind) from the photos the training
   run held out (its `validation.json` names them: RAISE `r*` files and the packaged scikit-image /
   scikit-learn photographs). `realness map --source evidence` with a description that names nothing
   locatable, then `realness eval-maps` with its floors (centre prior, random, local texture, detector boxes),
   per kind. Each `--holdout KIND=FOLDER` model (trained without KIND) is scored on the same images: its
   KIND row is the leave-one-kind-out number.
2. **RAISE, weakly labelled**: RAISE's AI-generated images (`f*`, never used to train the artifact map) whose
   GPT-4.1 description names a face, hand, body or text where a detector finds one: how often the map's
   peak falls inside a detected box of the named kind, for the artifact map alone, the evidence map with the
   GPT-4.1 description (grounded: inside by construction when a claim names the kind), and the floors.
Writes `--out/artifact_map_eval.json` and prints the tables (markdown).
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from realness.argparsing import parse_dataclasses
from realness.dream import DreamConfig
from realness.dream.artifact import ArtifactMapModel
from realness.dream.baselines import floor_maps
from realness.dream.corruptions import packaged_photos, planted_set
from realness.dream.evidence import EvidenceMapper, named_labels
from realness.dream.localization import pointing_game
from realness.dream.regions import RegionDetector

GENERIC = "Somewhat. Part of this image looks edited or inconsistent with the rest."


def planted(args, detector) -> dict:
    from realness.dream.artifact_training import ArtifactTrainConfig, expand_photos, map_scores, summarise

    report = json.loads((Path(args.model) / "validation.json").read_text())
    pack = packaged_photos()
    files = {Path(f).stem: Path(f) for f in report["split"].get("val_files", [])}
    if not files:  # older runs name their validation photos only: find them among the run's photo patterns
        files = {p.stem: p for p in expand_photos(report["train"]["photos"] or ArtifactTrainConfig().photos)}
    photos = []
    for name in report["split"]["val"]:
        if name in pack:
            photos.append((name, pack[name]))
        elif name in files:
            photos.append((name, Image.open(files[name]).convert("RGB")))
        else:
            print(f"skipping validation photo {name}: not found (set REALNESS_RAISE_DIR)")
    folder = Path(args.out) / "planted"
    rows = planted_set(photos, folder, per_image=args.per_image, seed=args.seed)
    models = {"artifact map": args.model, **{f"without {k}": v for k, v in (h.split("=", 1) for h in args.holdout)}}
    per = {name: [] for name in [*models, "centre", "random", "texture", "boxes"]}
    loaded = {name: ArtifactMapModel.from_pretrained(path) for name, path in models.items()}
    for row in rows:
        image = Image.open(folder / "images" / row["image"]).convert("RGB")
        mask = np.asarray(Image.open(folder / "masks" / row["image"])) > 127
        regions = [r.to_dict() for r in detector.detect(image)]
        for name, model in loaded.items():
            (prob,) = model.predict([image], sizes=[image.size])
            per[name].append({"kind": row["kind"], **map_scores(prob, mask)})
        for name, fmap in floor_maps(mask.shape, image, regions, image.size, seed=len(per["centre"])).items():
            per[name].append({"kind": row["kind"], **map_scores(fmap, mask)})
    kinds = sorted({r["kind"] for r in rows})
    table = {}
    for name, v in per.items():
        s = summarise(v)
        table[name] = {"all": {k: s[k] for k in ("auroc", "ap", "pointing")}, **s["by_kind"]}
    return {"n": len(rows), "photos": len(photos), "kinds": kinds, "table": table}


def raise_weak(args, detector) -> dict:
    raise_dir = Path(os.environ["REALNESS_RAISE_DIR"])
    with (raise_dir / "descriptions_gpt41.csv").open() as fh:
        texts = {r["filename"]: r["description"] for r in csv.DictReader(fh)}
    artifact = ArtifactMapModel.from_pretrained(args.model)
    mapper = EvidenceMapper(DreamConfig(source="evidence", artifact_model=args.model), artifact_model=artifact, detector=detector)
    names = sorted(n for n in texts if n.startswith("f"))[: args.raise_limit or None]
    hits = {k: [] for k in ("artifact map", "evidence (GPT-4.1 text)", "centre", "random", "texture")}
    used, area = 0, []
    for name in names:
        labels = named_labels(texts[name])
        if not labels:
            continue
        image = Image.open(raise_dir / "images" / name).convert("RGB")
        m = mapper.map(image, texts[name])
        boxes = [r for r in m.regions if r["label"] in labels]
        if not boxes:
            continue
        used += 1
        shape = m.map.shape
        sx, sy = shape[1] / image.width, shape[0] / image.height
        inside = np.zeros(shape, bool)
        for r in boxes:
            x0, y0, x1, y1 = r["box"]
            inside[int(y0 * sy):int(np.ceil(y1 * sy)), int(x0 * sx):int(np.ceil(x1 * sx))] = True
        maps = {"artifact map": m.artifact.astype(np.float32), "evidence (GPT-4.1 text)": m.map,
                **{k: v for k, v in floor_maps(shape, image, seed=used).items()}}
        for key in hits:
            hits[key].append(float(pointing_game(maps[key], inside)))
        area.append(float(inside.mean()))
    return {"images": used, "mean_box_area": float(np.mean(area)) if area else None,
            "peak_inside": {k: float(np.mean(v)) for k, v in hits.items() if v}}


@dataclass
class EvalArtifactMapConfig:
    """Options of `python eval/eval_artifact_map.py` (the same parser as every `realness` command)."""

    model: str = field(default="runs/artifact-map", metadata={"help": "Artifact map folder with its validation.json"})
    holdout: list[str] = field(default_factory=lambda: [], metadata={
        "default_help": "none",
        "help": "KIND=FOLDER models trained without KIND"})
    per_image: int = field(default=4, metadata={"help": "Planted edits per held-out photo"})
    seed: int = field(default=100, metadata={
        "default_help": "100; training validated on seed+1 of its own",
        "help": "Seed of the fresh planted set"})
    raise_limit: int = field(default=0, metadata={
        "default_help": "0, all; -1: skip RAISE",
        "help": "At most this many RAISE f* images"})
    out: str = field(default="eval/out/artifact-map", metadata={"help": "Output folder"})


def main(argv=None) -> dict:
    (a,) = parse_dataclasses([EvalArtifactMapConfig], argv, prog="python eval/eval_artifact_map.py", description=__doc__)
    Path(a.out).mkdir(parents=True, exist_ok=True)
    detector = RegionDetector()
    result = {"planted": planted(a, detector)}
    (Path(a.out) / "artifact_map_eval.json").write_text(json.dumps(result, indent=2))
    t = result["planted"]["table"]
    print(f"planted: {result['planted']['n']} images from {result['planted']['photos']} held-out photos")
    print("| map | " + " | ".join(["all", *result["planted"]["kinds"]]) + " |")
    for name, row in t.items():
        kinds = ["all", *result["planted"]["kinds"]]
        print(f"| {name} | " + " | ".join(f"{row[k]['auroc']:.3f} / {row[k]['pointing']:.2f}" for k in kinds) + " |")
    if os.environ.get("REALNESS_RAISE_DIR") and a.raise_limit >= 0:
        result["raise_weak"] = raise_weak(a, detector)
        (Path(a.out) / "artifact_map_eval.json").write_text(json.dumps(result, indent=2))
        print(f"RAISE f* weakly labelled: {result['raise_weak']['images']} images (boxes cover "
              f"{result['raise_weak']['mean_box_area']:.1%} of the image on average); peak inside a named region's box:")
        for k, v in result["raise_weak"]["peak_inside"].items():
            print(f"  {k:<26} {v:.3f}")
    return result


if __name__ == "__main__":
    main()
