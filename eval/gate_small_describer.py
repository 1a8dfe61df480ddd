"""The small offline describer through the distillation gate, on RAISE images it never trained on.

    python eval/gate_small_describer.py --run runs/describer-small --out eval/out/gate-small

`--run` is a `train_describer` output folder: its `split.json` names the held-out images and `adapter/`
holds what was trained (`--model` is the base folder it started from). On the held-out images only:

1. the describer writes a description per image (transformers engine, greedy), timed, peak memory noted;
2. CORE offline is trained on the *describer's training images only* (the bundled CORE saw every RAISE
   image with its GPT-4.1 text, so scoring held-out images with it would flatter the GPT-4.1 reference),
   once fusion and once image-only (the score a user gets with no describer at all);
3. `realness.gate.evaluate_describer` (the gate of `realness eval-describer`) with those two heads:
   CORE fusion reads GPT-4.1's text (reference), the describer's, a constant sentence, the reference
   shuffled across images, and the GPT-4.1 text of the nearest training image (retrieval); the image-only
   head reads none. SROCC / PLCC against MOS, paired bootstrap intervals, verdict agreement vs the
   majority class, quadratic-weighted kappa, confusion matrix, ROUGE-L, embedding similarity, pass/fail;
4. plus contract violations, verdict counts, distinct descriptions and speed.

Writes `gate.json` and `gate.md` in `--out`; `--ship DIR` also writes the short `gate.json` that
`realness run` shows for the bundled describer.
"""

from __future__ import annotations

import csv
import json
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from realness.argparsing import parse_dataclasses

CONSTANT = "Somewhat. Some details of the image look slightly unnatural."
VERDICT_ORDER = ("no", "somewhat", "yes")


def _describe(model: str, adapter: str, paths: list[Path], batch_size: int, max_new_tokens: int,
              verdict_guide: str, regions_file: str,
              aspect_model: str = "offline/aspect-tagger") -> tuple[list[str], dict]:
    from describe.engines.transformers import Describer
    from describe.grounding import find_regions
    from realness.dream.configuration import DreamConfig
    from realness.images import load_image

    start = time.perf_counter()
    describer = Describer(model, adapter, device="cpu", max_new_tokens=max_new_tokens, verdict_guide=verdict_guide)
    load_s = time.perf_counter() - start
    stage1_s, regions = 0.0, None
    if describer.uses_regions:  # stage 1 first, timed on its own (read from regions_file where it ran already)
        start = time.perf_counter()
        found = find_regions(paths, regions_file,
                             DreamConfig(aspect_model=aspect_model), aspects=describer.regions.aspects)
        regions, stage1_s = [found[p.name][1] for p in paths], time.perf_counter() - start
    start, texts = time.perf_counter(), []
    for i in tqdm(range(0, len(paths), batch_size), desc="describing", unit="batch", file=sys.stderr):
        texts += describer.generate([load_image(p) for p in paths[i:i + batch_size]], batch_size,
                                    regions[i:i + batch_size] if regions is not None else None)
    wall = time.perf_counter() - start
    return texts, {"load_s": round(load_s, 1), "images": len(paths), "batch_size": batch_size,
                   "images_per_s": round(len(paths) / wall, 3), "stage1_s": round(stage1_s, 1),
                   "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}


def _train_core(manifest: Path, out: Path, mode: str, recipe: str, folds: int = 0) -> Path:
    """The bundled CORE recipe (`recipe`'s YAML: every seed, their heads merged) trained on `manifest`'s rows
    alone; `folds` > 1 cross-validates instead. Returns the model (or the CV folder); reuses a finished one."""
    from realness.cli import main

    model = out / "ensemble" if folds == 0 else out
    if not (model / ("config.json" if folds == 0 else "summary.json")).is_file():
        main(["train-core", "--config", recipe, "--data", str(manifest), "--out", str(out), "--model.mode", mode,
              "--folds", str(folds), "--feature_cache", str(out.parent / "feature_cache")])
    return model


@dataclass
class GateSmallDescriberConfig:
    """Options of `python eval/gate_small_describer.py` (the same parser as every `realness` command)."""

    run: str = field(default="runs/describer-small", metadata={"help": "train_describer output folder"})
    model: str = field(default="runs/small-base", metadata={"help": "Base folder the run started from"})
    adapter: str | None = field(default=None, metadata={"default_help": "RUN/adapter", "help": "Adapter folder"})
    data: str = field(default="../shared/data/raise-train", metadata={"help": "RAISE folder"})
    out: str = field(default="eval/out/gate-small", metadata={"help": "Output folder"})
    core_dir: str = field(default="eval/out/gate-core", metadata={
        "help": "Where the two CORE heads for this split are trained, or found when already trained"})
    batch_size: int = field(default=8, metadata={"help": "Images per generate call"})
    max_new_tokens: int = field(default=64, metadata={"help": "Answer length cap"})
    recipe: str = field(default="training/configs/core_offline.yaml", metadata={
        "default_help": "the bundled one, training/configs/core_offline.yaml",
        "help": "CORE recipe the gate's heads are trained with"})
    verdict_guide: str = field(default="none", metadata={
        "choices": tuple(("none", "fit")),
        "help": "'fit': image-only CORE sets the describer's verdicts (describe.verdict), its thresholds fitted on a "
                "cross-validation of the training images only; 'none': the describer's own"})
    regions_file: str | None = field(default=None, metadata={
        "default_help": "OUT/regions.jsonl",
        "help": "For a describer trained with regions: stage 1's JSONL (describe.grounding.find_regions; written if "
                "missing). Its time is reported apart from the describer's (stage1_s)"})
    aspect_model: str = field(default="offline/aspect-tagger", metadata={
        "help": "For a describer trained with aspects: the aspect tagger (for held-out images, one fitted without "
                "them: training/train_aspect_tagger.py's validation run)"})
    ship: str | None = field(default=None, metadata={
        "default_help": "none",
        "help": "Also write the short gate.json the run report shows into this folder"})


def main() -> None:
    (a,) = parse_dataclasses([GateSmallDescriberConfig], None, prog="python eval/gate_small_describer.py", description=__doc__)

    from realness.answers import parse_answer
    from realness.data import load_descriptions
    from realness.evaluation import read_truth
    from realness.gate import GateConfig, evaluate_describer, format_gate

    out, data = Path(a.out), Path(a.data)
    out.mkdir(parents=True, exist_ok=True)
    split = json.loads((Path(a.run) / "split.json").read_text())
    held, train = split["held_out"], split["train"]
    mos, gpt = read_truth(str(data / "ratings.csv")), load_descriptions(data / "descriptions_gpt41.csv")
    paths = [data / "images" / n for n in held]
    folders = {}
    for name, names in (("held_out_images", held), ("train_images", train)):  # the split as two folders
        folders[name] = out / name
        folders[name].mkdir(exist_ok=True)
        for n in names:
            link = folders[name] / n
            if not link.exists():
                link.symlink_to((data / "images" / n).resolve())

    core_dir = Path(a.core_dir)
    core_dir.mkdir(parents=True, exist_ok=True)
    manifest = core_dir / "core_manifest.csv"  # the describer's training images only
    with manifest.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "mos", "description"])
        for n in train:
            w.writerow([str((data / "images" / n).resolve()), mos[n], gpt[n]])
    fusion = _train_core(manifest, core_dir / "fusion", "fusion", a.recipe)
    image_only = _train_core(manifest, core_dir / "image", "image", a.recipe)
    guide = "none"
    if a.verdict_guide == "fit":
        from describe.verdict import fit_guide

        cv = _train_core(manifest, core_dir / "image-cv", "image", a.recipe, folds=5)
        fitted, fit_report = fit_guide(cv, data / "descriptions_gpt41.csv", str(image_only), train)
        guide = str(fitted.save(out))
        print(f"verdict guide {fitted.thresholds}: on the training images' held-out predictions agreement "
              f"{fit_report['agreement']:.3f}, kappa {fit_report['kappa_quadratic']:.3f}")

    cand_file = out / "candidate.csv"
    if cand_file.is_file():
        cand = load_descriptions(cand_file)
        speed = json.loads((out / "speed.json").read_text())
    else:
        texts, speed = _describe(a.model, a.adapter or str(Path(a.run) / "adapter"), paths, a.batch_size,
                                 a.max_new_tokens, guide, a.regions_file or str(out / "regions.jsonl"), a.aspect_model)
        with cand_file.open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["filename", "description"])
            w.writerows(zip(held, texts))
        (out / "speed.json").write_text(json.dumps(speed, indent=2))
        cand = dict(zip(held, texts))

    gate = evaluate_describer(GateConfig(
        images=str(folders["held_out_images"]), truth=str(data / "ratings.csv"),
        reference=str(data / "descriptions_gpt41.csv"), candidate=str(cand_file), core=str(fusion),
        image_core=str(image_only), train_images=str(folders["train_images"]),
        train_descriptions=str(data / "descriptions_gpt41.csv"), out=str(out)))
    answers = [parse_answer(cand[n]) for n in held]
    extra = {"contract_violation_share": float(np.mean([not ans.ok for ans in answers])),
             "mean_words": float(np.mean([len(cand[n].split()) for n in held])),
             "distinct_descriptions": len(set(cand.values())),
             "describer_verdicts": {v: [ans.verdict for ans in answers].count(v) for v in ("no", "somewhat", "yes", "")},
             "speed_2_cpu_cores": speed,
             "split": "RAISE-train, 20 % of images held out by image (train_describer seed 42); CORE heads "
                      f"trained on the other 80 % ({a.recipe})", "verdict_guide": a.verdict_guide}
    report = {**gate, **extra}
    (out / "gate.json").write_text(json.dumps(report, indent=2))
    text = (f"{format_gate(gate)}\ncontract violations {extra['contract_violation_share']:.1%}, "
            f"ROUGE-L {gate['text']['rouge_l']:.3f}, embedding similarity {gate['text']['embedding_similarity']:.3f}, "
            f"{extra['distinct_descriptions']} distinct descriptions for {len(held)} images, verdicts "
            f"{extra['describer_verdicts']}; {speed['images_per_s']} images/s, peak RSS {speed['peak_rss_gib']} GiB")
    (out / "gate.md").write_text(text + "\n")
    print(text)
    core = gate["scores"]
    mine, ref = core["candidate"]["srocc"], core["reference"]["srocc"]
    verdicts = gate["verdicts"]
    if a.ship:
        const, image = core["constant"]["srocc"], core["image_only"]["srocc"]
        worth = "It passes the gate." if gate["passed"] else "It fails the gate: " + "; ".join(gate["reasons"]) + "."
        guided = "; its verdicts set by image-only CORE" if a.verdict_guide == "fit" else ""
        summary = (f"On {len(held)} held-out RAISE images (same recipe, trained without them{guided}): verdict agreement "
                   f"with GPT-4.1 {verdicts['agreement']:.0%} "
                   f"(majority class {verdicts['majority_baseline']:.0%}, kappa {verdicts['kappa_quadratic']:.2f}); CORE SROCC "
                   f"{mine:.3f} with its text vs {ref:.3f} with GPT-4.1's, "
                   f"{const:.3f} with a constant sentence and {image:.3f} with no text (image-only CORE). {worth}")
        (Path(a.ship) / "gate.json").write_text(json.dumps(
            {"summary": summary, "images": len(held), "srocc": {k: round(v["srocc"], 4) for k, v in core.items()},
             "verdict_agreement": round(verdicts["agreement"], 4),
             "majority_baseline": round(verdicts["majority_baseline"], 4),
             "kappa_quadratic": round(verdicts["kappa_quadratic"], 4),
             "passed": gate["passed"], "reasons": gate["reasons"],
             "text_value_retained": round(gate["text_value_retained"], 4),
             "images_per_s_2_cpu_cores": speed["images_per_s"]}, indent=2) + "\n")


if __name__ == "__main__":
    main()
