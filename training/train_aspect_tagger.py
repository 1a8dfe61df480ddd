"""Train stage 1's aspect tagger (realness.dream.aspects) on RAISE-TD: what GPT-4.1's descriptions discuss.

    python training/train_aspect_tagger.py --out runs/aspect-tagger-val                    # validation run
    python training/train_aspect_tagger.py --val_fraction 0 --out realness/pretrained/aspect-tagger   # the shipped fit

Labels are the mention categories (`realness.mentions`) of each image's GPT-4.1 description; features are the
frozen EfficientNet-Lite0's pooled maps and the detector flags of stage 1 (`--regions_file`, the same JSONL the
grounded describer's training writes; resumable). The held-out images are the describer's (`split_by_image`
with the same `--val_fraction` and `--seed`), so a validation run's tagger never saw the images
`eval/eval_mentions.py` scores. The inverse L2 strength and the thresholds are chosen by 5-fold
cross-validation on the training images only, repeated over 5 shuffles (`--repeats`) and pooled. Writes the
tagger (`config.json`, `model.safetensors`) and `report.json` (cross-validated and, with held-out images,
held-out per-category F1) to `--out`.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from describe.data import split_by_image
from describe.grounding import find_regions
from realness.argparsing import parse_dataclasses
from realness.data import load_raise
from realness.dream.aspects import AspectConfig, AspectTagger, detector_flags, f1_report, fit_aspect_tagger
from realness.images import load_image
from realness.mentions import CATEGORIES, mentions

RAISE = os.environ.get("REALNESS_RAISE_DIR") or "../shared/data/raise-train"


@dataclass
class AspectTrainConfig:
    """Options of `python training/train_aspect_tagger.py`."""

    data: str = field(default=RAISE, metadata={"default_help": "$REALNESS_RAISE_DIR", "help": "RAISE folder (images, "
                                                                                            "descriptions)."})
    out: str = field(default="runs/aspect-tagger", metadata={"help": "Output folder."})
    regions_file: str = field(default="runs/raise-regions.jsonl", metadata={"help": "Stage-1 regions JSONL "
                                                                                   "(written if missing)."})
    val_fraction: float = field(default=0.2, metadata={"help": "Images held out (the describer's split); 0: fit "
                                                               "on all."})
    seed: int = field(default=42, metadata={"help": "Split and cross-validation seed."})
    folds: int = field(default=5, metadata={"help": "Cross-validation folds on the training images."})
    repeats: int = field(default=5, metadata={"help": "Cross-validation shuffles pooled for the thresholds."})
    cs: tuple[float, ...] = field(default=(0.0003, 0.001, 0.003, 0.01, 0.03),
                                  metadata={"help": "Inverse L2 strengths tried."})
    progress: bool = field(default=True, metadata={"help": "Show progress bars."})


def main(argv=None) -> dict:
    from tqdm.auto import tqdm

    (cfg,) = parse_dataclasses([AspectTrainConfig], argv, prog="python training/train_aspect_tagger.py",
                               description=__doc__)
    rows = load_raise(cfg.data).to_list()
    train, held = split_by_image(rows, cfg.val_fraction, cfg.seed)
    found = find_regions(sorted(r["image"] for r in rows), cfg.regions_file, progress=cfg.progress)
    reader = AspectTagger(AspectConfig())

    def arrays(part: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        feats = [reader.features([load_image(r["image"])])[0]
                 for r in tqdm(part, desc="aspect features", unit="img", disable=not cfg.progress, file=sys.stderr)]
        flags = detector_flags([found.get(Path(r["image"]).name, (None, []))[1] for r in part])
        labels = np.array([[c in mentions(r["description"]) for c in CATEGORIES] for r in part], bool)
        return np.stack(feats), flags, labels

    x, flags, labels = arrays(train)
    tagger, report = fit_aspect_tagger(x, flags, labels, AspectConfig(), cfg.cs, cfg.folds, cfg.seed,
                                       repeats=cfg.repeats)
    report["train_images"], report["held_out_images"] = len(train), len(held)
    if held:
        hx, hflags, hlabels = arrays(held)
        report["held_out"] = f1_report(hlabels, tagger.flag(hx, hflags))
    out = Path(cfg.out)
    tagger.save_pretrained(out, {"c": report["c"], "train_images": len(train)})
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    line = f"aspect tagger: C={report['c']}, cross-validated macro-F1 {report['cv_macro_f1']:.3f}"
    if held:
        line += f", held-out macro-F1 {report['held_out']['macro_f1']:.3f} on {len(held)} images"
    print(line)
    return report


if __name__ == "__main__":
    main()
