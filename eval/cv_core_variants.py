"""CORE variants through the same cross-validation (same folds, same seeds), one table.

    python eval/cv_core_variants.py --config training/configs/core_offline_v1.yaml --output_dir eval/out/core-variants
    python eval/cv_core_variants.py ... --variants baseline rank levels3   # a subset

Every variant is the config's recipe (fusion) with a few options changed (VARIANTS below); selection is
on each training fold's own selection split, the held-out fold is scored once. Frozen-backbone features
are cached once per feature setting and shared. Writes OUTPUT_DIR/variants.{json,md}: SROCC / PLCC
mean ± std over seeds x folds, the same for the three seeds' heads averaged (from their held-out
predictions, per fold), the paired SROCC difference from the baseline run by run, wall time on this machine
(the first variant of each feature setting
also computes and caches its features; later ones reuse them), and the size of what ships (the head, float32).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from realness.argparsing import parse_dataclasses

VARIANTS = {
    "baseline": {},
    "rank": {"loss": "mse+rank"},
    "plcc": {"loss": "mse+plcc"},
    "levels3": {"image_levels": 3, "image_pooling": "mean_std"},
    "levels3+rank": {"image_levels": 3, "image_pooling": "mean_std", "loss": "mse+rank"},
    "levels3-mean": {"image_levels": 3, "image_pooling": "mean"},
    "levels1-std": {"image_levels": 1, "image_pooling": "mean_std"},
    "heads3": {"n_heads": 3},
    "heads3+rank": {"n_heads": 3, "loss": "mse+rank"},
    "standardize": {"standardize_features": True},
    "standardize+rank": {"standardize_features": True, "loss": "mse+rank"},
    "levels3+standardize": {"image_levels": 3, "image_pooling": "mean_std", "standardize_features": True},
    "levels3-mean+standardize": {"image_levels": 3, "image_pooling": "mean", "standardize_features": True},
    "text-lora": {"text_lora_rank": 8, "text_lora_layers": 2},
    "text-lora+rank": {"text_lora_rank": 8, "text_lora_layers": 2, "loss": "mse+rank"},
    "text-lora-all-layers": {"text_lora_rank": 8, "text_lora_layers": 6},
    "flip": {"flip_tta": True},
    "flip+rank": {"flip_tta": True, "loss": "mse+rank"},
    "image-stages1": {"train_image_stages": 1},
    "image-stages2": {"train_image_stages": 2},
    "image-stages1+rank": {"train_image_stages": 1, "loss": "mse+rank"},
    # RAISE's images are 512x384: larger inputs only enlarge details for the frozen backbone's receptive fields
    "size448+rank": {"image_size": [448, 597], "loss": "mse+rank"},  # 1.36x the pixels: about the 1.5x speed budget
    # the bundled recipe with nine seeds instead of three: does a larger seed ensemble keep paying?
    "size448+rank+9seeds": {"image_size": [448, 597], "loss": "mse+rank", "seeds": list(range(42, 51))},
    "rank+9seeds": {"loss": "mse+rank", "seeds": list(range(42, 51))},  # the same nine seeds at 384x512
    "size512+rank": {"image_size": [512, 683], "loss": "mse+rank"},
    "size576+rank": {"image_size": [576, 768], "loss": "mse+rank"},
    "size768+rank": {"image_size": [768, 1024], "loss": "mse+rank"},
    # Larger EfficientNet-Lites (ImageNet top-1 75.1 % for Lite0, 76.7 % Lite1, 77.6 % Lite2, by the TensorFlow release), same input
    "lite1+rank": {"image_backbone": "offline/efficientnet_lite1", "loss": "mse+rank"},
    "lite2+rank": {"image_backbone": "offline/efficientnet_lite2", "loss": "mse+rank"},
    # The baseline's head fits its 414 rows within a few epochs (train loss 0.005 by epoch 13) and most
    # runs select epoch 1 or 2: regularised heads.
    "lr1e-4": {"lr": 1e-4},
    "dropout0.5": {"dropout": 0.5},
    "hidden64": {"head_hidden": 64},
    "linear": {"head_hidden": 0},
    "linear+standardize": {"head_hidden": 0, "standardize_features": True, "weight_decay": 0.1},
    "lr1e-4+dropout0.5": {"lr": 1e-4, "dropout": 0.5},
    "lr1e-4+dropout0.5+rank": {"lr": 1e-4, "dropout": 0.5, "loss": "mse+rank"},
    # text-lora selects epoch 1 like the baseline, before the adapter (lr 2e-4) has moved: a slower head
    # and a faster adapter
    "text-lora-fast": {"text_lora_rank": 8, "text_lora_layers": 2, "text_lr": 1e-3, "lr": 1e-4, "dropout": 0.5,
                       "loss": "mse+rank"},
}


def seed_ensemble(run_dir: Path) -> dict:
    """SROCC / PLCC of the seeds' heads averaged, per held-out fold (mean ± std over folds), from the runs'
    own held-out predictions: what shipping every seed's head and averaging them would score."""
    import csv
    from collections import defaultdict

    import numpy as np
    from scipy import stats

    folds: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    mos: dict[str, float] = {}
    for f in sorted(run_dir.glob("seed*/fold*/predictions.csv")):
        for row in csv.DictReader(f.open()):
            folds[f.parent.name][row["filename"]].append(float(row["pred_z"]))
            mos[row["filename"]] = float(row["mos"])
    sro, plc = [], []
    for preds in folds.values():
        names = sorted(preds)
        p, m = np.array([np.mean(preds[n]) for n in names]), np.array([mos[n] for n in names])
        sro.append(stats.spearmanr(p, m)[0])
        plc.append(stats.pearsonr(p, m)[0])
    return {"srocc": {"mean": float(np.mean(sro)), "std": float(np.std(sro))},
            "plcc": {"mean": float(np.mean(plc)), "std": float(np.std(plc))}, "n_folds": len(sro)}


def paired(run_dir: Path, base_dir: Path) -> dict | None:
    """Mean ± std of the SROCC difference from the baseline over the (seed, fold) runs both have, and in
    how many the variant scored higher."""
    import numpy as np

    diffs = []
    for result in sorted(run_dir.glob("seed*/fold*/result.json")):
        base = base_dir / result.relative_to(run_dir)
        if base.is_file():
            diffs.append(json.loads(result.read_text())["srocc"] - json.loads(base.read_text())["srocc"])
    if not diffs:
        return None
    return {"mean": float(np.mean(diffs)), "std": float(np.std(diffs)), "better": int(np.sum(np.array(diffs) > 0)),
            "n": len(diffs)}


def ships_bytes(model) -> int:
    """float32 bytes of what a saved model holds besides its frozen backbones: the heads and any adapter."""
    return 4 * sum(p.numel() for p in model.parameters() if p.requires_grad)


@dataclass
class CvCoreVariantsConfig:
    """Options of `python eval/cv_core_variants.py` (the same parser as every `realness` command)."""

    config: str = field(metadata={"flag": "recipe", "help": "CORE training YAML (the recipe every variant starts from)"})
    output_dir: str = field(default="eval/out/core-variants", metadata={"help": "Where runs and the table go"})
    variants: list[str] = field(default_factory=lambda: list(VARIANTS), metadata={
        "help": f"Which of {list(VARIANTS)} (default: all; none: only rewrite the table); "
                        "the table keeps variants measured by earlier calls", "choices": tuple(list(VARIANTS))})


def main(argv=None) -> dict:

    from realness.core import create_core
    from realness.core.training import CoreTrainConfig, train_core

    (a,) = parse_dataclasses([CvCoreVariantsConfig], argv, prog="python eval/cv_core_variants.py", description=__doc__)
    import yaml

    base = CoreTrainConfig.from_flat(**yaml.safe_load(Path(a.config).read_text()))
    out = Path(a.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    cache = str(out / "feature_cache")
    # Variants measured by earlier calls stay in the table (with the wall time they were measured with).
    table = json.loads((out / "variants.json").read_text()) if (out / "variants.json").is_file() else {}
    for name in a.variants:
        cfg = base.with_options(mode="fusion", output_dir=str(out / name), feature_cache=cache, progress=False,
                      **VARIANTS[name])
        start = time.perf_counter()
        report = train_core(cfg)
        seconds = time.perf_counter() - start
        model = create_core(cfg.preset, pretrained=False, pretrained_text=False, **cfg.model_overrides())
        table[name] = {"options": VARIANTS[name], "srocc": report["mean_std"]["srocc"], "plcc": report["mean_std"]["plcc"],
                       "n_runs": report["n_runs"], "wall_s": round(seconds, 1),
                       "seed_ensemble": seed_ensemble(out / name),
                       "ships_bytes": ships_bytes(model)}
        print(f"{name:14s} SROCC {table[name]['srocc']['mean']:.3f} ± {table[name]['srocc']['std']:.3f}  "
              f"PLCC {table[name]['plcc']['mean']:.3f} ± {table[name]['plcc']['std']:.3f}  {seconds:.0f} s", flush=True)
    for name in table:  # against the baseline as it stands now
        table[name]["paired"] = paired(out / name, out / "baseline") if name != "baseline" else None
    (out / "variants.json").write_text(json.dumps(table, indent=2))
    lines = ["| variant | options | SROCC | PLCC | paired SROCC vs baseline | 3-seed ensemble SROCC / PLCC | runs | "
             "wall time | ships |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, r in sorted(table.items(), key=lambda kv: list(VARIANTS).index(kv[0]) if kv[0] in VARIANTS else len(VARIANTS)):
        opts = ", ".join(f"{k}={v}" for k, v in r["options"].items()) or "today's recipe"
        e, d = r["seed_ensemble"], r.get("paired")
        pair = f"{d['mean']:+.3f} ± {d['std']:.3f}, {d['better']}/{d['n']}" if d else ""
        lines.append(f"| {name} | {opts} | {r['srocc']['mean']:.3f} ± {r['srocc']['std']:.3f} | "
                     f"{r['plcc']['mean']:.3f} ± {r['plcc']['std']:.3f} | {pair} | {e['srocc']['mean']:.3f} / {e['plcc']['mean']:.3f} | "
                     f"{r['n_runs']} | {r['wall_s']:.0f} s | {r['ships_bytes'] / 1e6:.1f} MB |")
    (out / "variants.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return table


if __name__ == "__main__":
    main()
