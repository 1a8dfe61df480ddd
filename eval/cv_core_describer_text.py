"""Should CORE train on the describer's own text? (#10 item 6), measured with cross-fitted descriptions.

    python eval/cv_core_describer_text.py --out eval/out/describer-text

CORE is trained on GPT-4.1's RAISE-TD descriptions, but in `realness run` it reads the small offline
describer's. Training it on the describer's text instead could keep it calibrated for what it will read,
or teach it to trust a guess. To measure that honestly every image needs a description written by a
describer that never trained on it:

1. **Cross-fitted descriptions.** The 510 RAISE training images are split into `--parts` parts (by image,
   seeded); for each part the small describer is trained from `--base` on the other parts' GPT-4.1
   descriptions (the `describer_small.yaml` recipe, nothing held out) and describes that part (greedy,
   transformers engine). Written to `OUT/describer_text.csv`; each part resumes where it stopped.
2. **CORE, 5 folds x 3 seeds** (the folds and seeds of README's CORE tables, `--config`'s recipe), read
   four ways on each held-out fold:
   - `gpt -> gpt`: trained and scored on GPT-4.1's text (the reference; no describer needed);
   - `gpt -> describer`: the same heads scoring the describer's text (what `realness run` does today);
   - `describer -> describer`: trained and scored on the describer's text (item 6);
   - `gpt -> constant`: the same heads reading one content-free sentence (a floor);
   - `image only`: no text at all (the other floor).
   Paired differences are over the same (seed, fold) runs; the 3-seed ensemble averages the seeds' held-out
   predictions.

Writes `OUT/table.md` and `OUT/results.json`. The describer trained for one part saw the GPT-4.1 text of
images in CORE's held-out folds when it described CORE's training images: a second-order leak that 5
describer trainings aligned with CORE's folds would remove, at 5 times the cost.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from realness.argparsing import parse_dataclasses

CONSTANT = "Somewhat. Some details of the image look slightly unnatural."


def part_of(names: list[str], parts: int, seed: int) -> dict[str, int]:
    """Each image name's part, balanced and seeded."""
    order = np.random.default_rng(seed).permutation(sorted(names))
    return {str(n): i % parts for i, n in enumerate(order)}


def crossfit_descriptions(data: Path, out: Path, parts: int, seed: int, base: str, recipe: Path,
                          batch_size: int, max_new_tokens: int) -> Path:
    """Every image's description by a describer trained without it; returns the descriptions CSV."""
    import yaml

    from describe.engines.transformers import Describer
    from describe.training import DescriberTrainConfig, train_describer
    from realness.data import load_descriptions
    from realness.images import load_image

    gpt = load_descriptions(data / "descriptions_gpt41.csv")
    names = sorted(n for n in gpt if (data / "images" / n).is_file())
    part = part_of(names, parts, seed)
    if not Path(base).is_dir():
        from describe.small import build_small_describer

        build_small_describer(base)
    texts: dict[str, str] = {}
    for k in range(parts):
        folder = out / "describers" / f"part{k}"
        done = folder / "descriptions.csv"
        if done.is_file():
            texts.update(load_descriptions(done))
            continue
        folder.mkdir(parents=True, exist_ok=True)
        adapter = folder / "adapter"
        if not adapter.is_dir():
            manifest = folder / "train_manifest.csv"
            with manifest.open("w", newline="", encoding="utf-8") as fh:
                w = csv.writer(fh)
                w.writerow(["image", "description", "source"])
                w.writerows([str((data / "images" / n).resolve()), gpt[n], "gpt"] for n in names if part[n] != k)
            cfg = yaml.safe_load(recipe.read_text())
            cfg.update(data=str(manifest), model_id=base, output_dir=str(folder), val_fraction=0.0, select_best=False)
            start = time.perf_counter()
            adapter = train_describer(DescriberTrainConfig.from_flat(**cfg))
            (folder / "train_seconds.txt").write_text(f"{time.perf_counter() - start:.0f}\n")
        mine = [n for n in names if part[n] == k]
        describer = Describer(base, str(adapter), device="cpu", max_new_tokens=max_new_tokens)
        start = time.perf_counter()
        written = describer.generate([load_image(data / "images" / n) for n in mine], batch_size)
        print(f"part {k}: {len(mine)} images described in {time.perf_counter() - start:.0f} s", flush=True)
        tmp = done.with_suffix(".tmp")
        with tmp.open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["filename", "description"])
            w.writerows(zip(mine, written))
        tmp.replace(done)
        texts.update(zip(mine, written))
    path = out / "describer_text.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["filename", "description", "part"])
        w.writerows([n, texts[n], part[n]] for n in names)
    return path


def rescore(run_dir: Path, dest: Path, records: list[dict], texts: dict[str, str], cache: Path) -> None:
    """The held-out predictions of every run in `run_dir` with its images' descriptions replaced by
    `texts`, written to `dest` in the same layout (predictions.csv, result.json)."""
    import torch

    from realness.core import CoreModel
    from realness.core.features import cached_features
    from realness.core.modeling import join_features
    from realness.core.training import write_predictions
    from realness.metrics import correlations

    swapped = [{**r, "description": texts[Path(r["image"]).name]} for r in records]
    index = {Path(r["image"]).name: i for i, r in enumerate(records)}
    features = None  # every run shares the frozen backbones: their features are read once
    for pred_file in sorted(run_dir.glob("seed*/fold*/predictions.csv")):
        target = dest / pred_file.parent.relative_to(run_dir)
        if (target / "result.json").is_file():
            continue
        model = CoreModel.from_pretrained(pred_file.parent / "best")
        if features is None:
            features = (cached_features(model, records, cache, progress=False, text=False),
                        cached_features(model, swapped, cache, progress=False, image=False))
        image, text = features
        rows = list(csv.DictReader(pred_file.open()))
        idx = torch.tensor([index[r["filename"]] for r in rows])
        model.eval()
        with torch.no_grad():
            z = model.score_features(join_features(image[idx], text[idx])).numpy()
        mos = np.array([float(r["mos"]) for r in rows])
        target.mkdir(parents=True, exist_ok=True)
        write_predictions(target / "predictions.csv", rows, z, model)
        (target / "result.json").write_text(json.dumps({k: v for k, v in correlations(z, mos).items() if k != "n"}, indent=2))


def summary(run_dir: Path, against: Path | None) -> dict:
    from cv_core_variants import paired, seed_ensemble

    results = [json.loads(p.read_text()) for p in sorted(run_dir.glob("seed*/fold*/result.json"))]
    stat = {k: {"mean": float(np.mean([r[k] for r in results])), "std": float(np.std([r[k] for r in results]))}
            for k in ("srocc", "plcc")}
    return {**stat, "n_runs": len(results), "seed_ensemble": seed_ensemble(run_dir),
            "paired": paired(run_dir, against) if against is not None else None}


@dataclass
class CvCoreDescriberTextConfig:
    """Options of `python eval/cv_core_describer_text.py` (the same parser as every `realness` command)."""

    data: str = field(default="../shared/data/raise-train", metadata={"help": "RAISE folder"})
    out: str = field(default="eval/out/describer-text", metadata={"help": "Output folder"})
    config: str = field(default="training/configs/core_offline.yaml", metadata={"flag": "recipe",
        "default_help": "training/configs/core_offline.yaml, the bundled one",
        "help": "CORE recipe every row trains with"})
    describer_config: str = field(default="training/configs/describer_small.yaml", metadata={
        "help": "Describer recipe for the cross-fit"})
    base: str = field(default="runs/small-base", metadata={
        "help": "Untrained small-describer folder, built when missing"})
    parts: int = field(default=2, metadata={"help": "Cross-fitting parts: describer trainings"})
    seed: int = field(default=0, metadata={"help": "Seed of the split into parts"})
    batch_size: int = field(default=8, metadata={"help": "Images per generate call"})
    max_new_tokens: int = field(default=64, metadata={"help": "Answer length cap"})
    feature_cache: str | None = field(default=None, metadata={
        "default_help": "OUT/feature_cache",
        "help": "CORE feature cache"})


def main(argv=None) -> dict:
    (a,) = parse_dataclasses([CvCoreDescriberTextConfig], argv, prog="python eval/cv_core_describer_text.py", description=__doc__)
    import yaml

    from realness.core.training import CoreTrainConfig, load_training_data, train_core
    from realness.data import load_descriptions

    out, data = Path(a.out), Path(a.data)
    out.mkdir(parents=True, exist_ok=True)
    described = crossfit_descriptions(data, out, a.parts, a.seed, a.base, Path(a.describer_config), a.batch_size,
                                      a.max_new_tokens)
    cache = Path(a.feature_cache or out / "feature_cache")
    base = CoreTrainConfig.from_flat(**yaml.safe_load(Path(a.config).read_text()))
    base = base.with_options(data=str(data), mode="fusion", feature_cache=str(cache), progress=False, save_dtype="float32")
    runs = out / "core"
    train_core(base.with_options(output_dir=str(runs / "gpt-gpt")))
    train_core(base.with_options(output_dir=str(runs / "describer-describer"), descriptions=str(described)))
    train_core(base.with_options(output_dir=str(runs / "image-only"), mode="image"))
    records, _ = load_training_data(base, needs_text=True)
    texts = load_descriptions(described)
    rescore(runs / "gpt-gpt", runs / "gpt-describer", records, texts, cache)
    rescore(runs / "gpt-gpt", runs / "gpt-constant", records, {n: CONSTANT for n in texts}, cache)

    rows = [("gpt-gpt", "trained on GPT-4.1 text, reads GPT-4.1 text (reference)"),
            ("gpt-describer", "trained on GPT-4.1 text, reads the describer's (today's `realness run`)"),
            ("describer-describer", "trained on the describer's text, reads the describer's (item 6)"),
            ("gpt-constant", "trained on GPT-4.1 text, reads a constant sentence"),
            ("image-only", "image only, no text")]
    table = {name: {"what": what, **summary(runs / name, runs / "gpt-describer" if name != "gpt-describer" else None)}
             for name, what in rows}
    lines = ["| CORE | SROCC | PLCC | paired SROCC vs gpt -> describer | 3-seed ensemble SROCC / PLCC |", "|---|---|---|---|---|"]
    for _name, r in table.items():
        d, e = r["paired"], r["seed_ensemble"]
        pair = f"{d['mean']:+.3f} ± {d['std']:.3f}, {d['better']}/{d['n']}" if d else ""
        lines.append(f"| {r['what']} | {r['srocc']['mean']:.3f} ± {r['srocc']['std']:.3f} | "
                     f"{r['plcc']['mean']:.3f} ± {r['plcc']['std']:.3f} | {pair} | "
                     f"{e['srocc']['mean']:.3f} / {e['plcc']['mean']:.3f} |")
    (out / "results.json").write_text(json.dumps(table, indent=2))
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return table


if __name__ == "__main__":
    main()
