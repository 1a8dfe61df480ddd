"""What the gate's floors score on RAISE: k-fold, CORE trained on the other folds, never on the images it scores.

    python eval/gate_baselines.py --data ../shared/data/raise-train --out eval/out/gate-baselines

For each of `--folds` folds of the 510 RAISE training images, CORE offline (fusion, and image-only) is
trained on the other folds with its usual recipe (`training/configs/core_offline.yaml`), and the gate
(`realness.gate.evaluate_describer`) runs on the held-out fold with GPT-4.1's descriptions as the
reference and as the candidate, so every floor is measured against the reference: a constant sentence,
the reference shuffled across images, retrieval (the GPT-4.1 description of the nearest image of the
other folds under CORE's frozen image encoder) and image-only CORE. Writes `baselines.json` and
`baselines.md` (mean ± std over folds).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from realness.argparsing import parse_dataclasses


@dataclass
class GateBaselinesConfig:
    """Options of `python eval/gate_baselines.py` (the same parser as every `realness` command)."""

    data: str = field(default="../shared/data/raise-train", metadata={"help": "RAISE folder"})
    out: str = field(default="eval/out/gate-baselines", metadata={"help": "Output folder"})
    folds: int = field(default=5, metadata={"help": "k of the k-fold split"})
    n_boot: int = field(default=1000, metadata={"help": "Paired bootstrap resamples per fold"})


def main() -> None:
    (a,) = parse_dataclasses([GateBaselinesConfig], None, prog="python eval/gate_baselines.py", description=__doc__)

    from realness.core.training import CoreTrainConfig, train_core
    from realness.gate import GateConfig, evaluate_describer

    data, out = Path(a.data), Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    gpt = str(data / "descriptions_gpt41.csv")
    for mode in ("fusion", "image"):
        train_core(CoreTrainConfig.from_flat(data=str(data), output_dir=str(out / mode), preset="offline", mode=mode,
                                   freeze_image=True, freeze_text=True, folds=a.folds, seeds=[42], epochs=30,
                                   batch_size=16, lr=1e-3, augment=False, save_frozen=False, num_workers=0,
                                   progress=False, feature_cache=str(out / "feature_cache")))
    all_images = sorted(p.name for p in (data / "images").iterdir())
    folds = []
    for k in range(a.folds):
        run = out / "fusion" / "seed42" / f"fold{k}"
        with (run / "predictions.csv").open() as fh:
            held = [r["filename"] for r in csv.DictReader(fh)]
        folders = {}
        for name, names in (("held", held), ("train", sorted(set(all_images) - set(held)))):
            folders[name] = out / f"fold{k}" / name
            folders[name].mkdir(parents=True, exist_ok=True)
            for n in names:
                if not (folders[name] / n).exists():
                    (folders[name] / n).symlink_to((data / "images" / n).resolve())
        report = evaluate_describer(GateConfig(
            images=str(folders["held"]), truth=str(data / "ratings.csv"), reference=gpt, candidate=gpt,
            core=str(run / "best"), image_core=str(out / "image" / "seed42" / f"fold{k}" / "best"),
            train_images=str(folders["train"]), train_descriptions=gpt, n_boot=a.n_boot, seed=k,
            out=str(out / f"fold{k}")))
        folds.append(report)
        print(f"fold {k}: " + ", ".join(f"{n} {v['srocc']:.3f}" for n, v in report["scores"].items()))

    rows = ["reference", "constant", "shuffled", "retrieval", "image_only"]
    summary = {r: {m: [float(np.mean([f["scores"][r][m] for f in folds])), float(np.std([f["scores"][r][m] for f in folds], ddof=1))]
                   for m in ("srocc", "plcc")} for r in rows}
    (out / "baselines.json").write_text(json.dumps({"folds": a.folds, "per_fold": [f["scores"] for f in folds],
                                                    "summary": summary}, indent=2))
    lines = ["| CORE (trained on the other folds) scored with | SROCC | PLCC |", "|---|---|---|"]
    lines += [f"| {r} | {summary[r]['srocc'][0]:.3f} ± {summary[r]['srocc'][1]:.3f} | "
              f"{summary[r]['plcc'][0]:.3f} ± {summary[r]['plcc'][1]:.3f} |" for r in rows]
    (out / "baselines.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
