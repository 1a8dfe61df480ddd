"""Fit CORE's image-only model on several rated sets at once: frozen image features, a ridge head in closed form on
scores z-aligned within each set, and the training images' features kept for the novelty warning.

    REALNESS_RAISE_DIR=... REALNESS_AGIQA3K_DIR=... python training/train_core_multiset.py \
        --config training/configs/core_multiset.yaml --out runs/core-multiset

What it is worth beyond RAISE is measured by `eval/eval_generalization.py` with the same features (eval/README.md,
"Generalization"). Writes OUT/ (a CORE model folder: `CoreModel.from_pretrained(OUT)`) and OUT/fit.json.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from realness.argparsing import parse_dataclasses
from realness.core.configuration import PRESETS, CoreConfig


@dataclass
class MultisetTrainConfig:
    """Options of `python training/train_core_multiset.py`."""

    sets: list[str] = field(default_factory=lambda: ["raise", "agiqa3k"], metadata={
        "help": "Rated sets: names found through $REALNESS_RAISE_DIR / $REALNESS_AGIQA3K_DIR, or manifests "
                "(filename, mos[, generator, prompt])"})
    out: str = field(default="runs/core-multiset", metadata={"help": "Folder of the fitted model"})
    model: CoreConfig | None = field(default=None, metadata={
        "prefix": "model", "defaults": lambda values: CoreConfig(**PRESETS["offline"]),
        "help": "The image branch (`CoreConfig`, from the offline preset); YAML: a `model:` mapping"})
    align: str = field(default="z", metadata={"help": "How the sets' scores meet on one scale",
                                              "choices": ("z", "rank")})
    balance: bool = field(default=True, metadata={"help": "Every set weighs alike in the fit (each row by 1 / its "
                                                          "set's size)"})
    scale: str = field(default="raise", metadata={"help": "The set whose MOS scale score_mos reports"})
    novelty_components: int = field(default=64, metadata={"help": "Principal components kept for novelty"})
    feature_cache: str = field(default="runs/feature_cache", metadata={"help": "Where frozen features are cached"})
    save_dtype: str = field(default="float16", metadata={"help": "Stored weight type", "choices": ("float16", "float32")})
    progress: bool = field(default=True, metadata={"help": "Show progress bars"})


def main(argv=None) -> dict:
    import torch

    from realness.core.multiset import RatedRows, fit_on_sets
    from realness.data import load_rated

    (cfg,) = parse_dataclasses([MultisetTrainConfig], argv, description=__doc__, prog="train_core_multiset.py")
    sets = []
    for name in cfg.sets:
        spec, ds = load_rated(name)
        sets.append(RatedRows(spec.name, list(ds["image"]), np.asarray(ds["mos"], dtype=float), spec.mos_range))
    core, report = fit_on_sets(cfg.model, sets, cfg.feature_cache, cfg.align, cfg.scale,
                               novelty_components=cfg.novelty_components, progress=cfg.progress, balance=cfg.balance)
    out = Path(cfg.out)
    core.save_pretrained(out, include_frozen=False, dtype=torch.float16 if cfg.save_dtype == "float16" else None)
    report["options"] = {**asdict(cfg), "model": asdict(cfg.model)}
    (out / "fit.json").write_text(json.dumps(report, indent=2) + "\n")
    logging.getLogger("train_core_multiset").info("wrote %s (ridge alpha %.3g)", out, report["alpha"])
    return report


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    main()
