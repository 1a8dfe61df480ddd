"""The small offline describer through the distillation gate, on RAISE images it never trained on.

    python eval/gate_small_describer.py --run runs/describer-small --out eval/out/gate-small

`--run` is a `train_describer` output folder: its `split.json` names the held-out images and `adapter/`
holds what was trained (`--model` is the base folder it started from). On the held-out images only:

1. the describer writes a description per image (transformers engine, greedy), timed, peak memory noted;
2. CORE offline is trained on the *describer's training images only* (the bundled CORE saw every RAISE
   image with its GPT-4.1 text, so scoring held-out images with it would flatter the GPT-4.1 reference),
   once fusion and once image-only (the score a user gets with no describer at all);
3. CORE fusion scores the held-out images with GPT-4.1's text (reference), the describer's, and a
   content-free constant sentence; the image-only head scores them with no text. SROCC / PLCC against
   MOS, with a paired bootstrap (same resamples for every row) of describer minus each floor;
4. text: verdict agreement with GPT-4.1 vs the majority-class baseline (the training images' most common
   verdict), quadratic-weighted Cohen's kappa, the 3x3 confusion matrix, ROUGE-L, embedding similarity,
   contract violations.

Writes `gate.json` and `gate.md` in `--out`; `--ship DIR` also writes the short `gate.json` that
`realness run` shows for the bundled describer.
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import time
from pathlib import Path

import numpy as np

CONSTANT = "Somewhat. Some details of the image look slightly unnatural."
VERDICT_ORDER = ("no", "somewhat", "yes")


def _describe(model: str, adapter: str, paths: list[Path], batch_size: int, max_new_tokens: int) -> tuple[list[str], dict]:
    from describe.describer import Describer
    from realness.images import load_image

    start = time.perf_counter()
    describer = Describer(model, adapter, device="cpu", max_new_tokens=max_new_tokens)
    load_s = time.perf_counter() - start
    start = time.perf_counter()
    texts = describer.generate([load_image(p) for p in paths], batch_size)
    wall = time.perf_counter() - start
    return texts, {"load_s": round(load_s, 1), "images": len(paths), "batch_size": batch_size,
                   "images_per_s": round(len(paths) / wall, 3),
                   "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}


def _train_core(manifest: Path, out: Path, mode: str) -> Path:
    from realness.core.training import CoreTrainConfig, train_core

    cfg = CoreTrainConfig(data=str(manifest), output_dir=str(out), preset="offline", mode=mode, freeze_image=True,
                          freeze_text=True, folds=1, seeds=[42], epochs=30, batch_size=16, lr=1e-3, augment=False,
                          save_frozen=False, num_workers=0, progress=False)
    train_core(cfg)
    return out / "seed42" / "fold0" / "best"


def _paired_bootstrap(mos, a, b, n=1000, seed=0) -> dict:
    """SROCC(a) - SROCC(b) over the same resampled images: mean and 95 % interval."""
    from scipy.stats import spearmanr

    rng = np.random.default_rng(seed)
    mos, a, b = map(np.asarray, (mos, a, b))
    diffs = []
    for _ in range(n):
        i = rng.integers(0, len(mos), len(mos))
        diffs.append(spearmanr(a[i], mos[i])[0] - spearmanr(b[i], mos[i])[0])
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return {"mean": float(np.mean(diffs)), "ci95": [float(lo), float(hi)], "share_above_0": float(np.mean(np.array(diffs) > 0))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default="runs/describer-small", help="train_describer output folder (default: runs/describer-small)")
    p.add_argument("--model", default="runs/small-base", help="Base folder the run started from (default: runs/small-base)")
    p.add_argument("--adapter", default=None, help="Adapter folder (default: RUN/adapter)")
    p.add_argument("--data", default="../shared/data/raise-train", help="RAISE folder (default: ../shared/data/raise-train)")
    p.add_argument("--out", default="eval/out/gate-small", help="Output folder (default: eval/out/gate-small)")
    p.add_argument("--core_dir", default="eval/out/gate-core", help="Where the two CORE heads for this split are trained, "
                   "or found when already trained (default: eval/out/gate-core)")
    p.add_argument("--batch_size", type=int, default=8, help="Images per generate call (default: 8)")
    p.add_argument("--max_new_tokens", type=int, default=64, help="Answer length cap (default: 64)")
    p.add_argument("--ship", default=None, help="Also write the short gate.json the run report shows into this folder (default: none)")
    a = p.parse_args()

    from sklearn.metrics import cohen_kappa_score, confusion_matrix

    from describe.prompt import parse_answer, parse_verdict
    from realness.core import CoreModel
    from realness.data import load_descriptions
    from realness.distill import embedding_similarity, rouge_l
    from realness.evaluation import read_truth
    from realness.metrics import plcc, srocc
    from realness.scoring import score_images

    out, data = Path(a.out), Path(a.data)
    out.mkdir(parents=True, exist_ok=True)
    split = json.loads((Path(a.run) / "split.json").read_text())
    held, train = split["held_out"], split["train"]
    mos, gpt = read_truth(str(data / "ratings.csv")), load_descriptions(data / "descriptions_gpt41.csv")
    paths = [data / "images" / n for n in held]

    cand_file = out / "candidate.csv"
    if cand_file.is_file():
        cand = load_descriptions(cand_file)
        speed = json.loads((out / "speed.json").read_text())
    else:
        texts, speed = _describe(a.model, a.adapter or str(Path(a.run) / "adapter"), paths, a.batch_size,
                                 a.max_new_tokens)
        with cand_file.open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["filename", "description"])
            w.writerows(zip(held, texts))
        (out / "speed.json").write_text(json.dumps(speed, indent=2))
        cand = dict(zip(held, texts))

    core_dir = Path(a.core_dir)
    core_dir.mkdir(parents=True, exist_ok=True)
    manifest = core_dir / "core_manifest.csv"
    with manifest.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "mos", "description", "split"])
        for n in train + held:
            w.writerow([str((data / "images" / n).resolve()), mos[n], gpt[n], "train" if n in set(train) else "val"])
    fusion = CoreModel.from_pretrained(_train_core(manifest, core_dir / "fusion", "fusion"))
    image_only = CoreModel.from_pretrained(_train_core(manifest, core_dir / "image", "image"))

    def scores(model, texts):
        return [r.score_z for r in score_images(model, paths, texts, progress=False)]

    y = [mos[n] for n in held]
    rows = {"GPT-4.1 text (reference)": scores(fusion, gpt), "small describer text": scores(fusion, cand),
            "constant sentence (content-free)": scores(fusion, {n: CONSTANT for n in held}),
            "image-only CORE (no text)": scores(image_only, None)}
    core = {k: {"srocc": srocc(v, y), "plcc": plcc(v, y)} for k, v in rows.items()}
    cand_scores = rows["small describer text"]
    paired = {f"describer - {k}": _paired_bootstrap(y, cand_scores, v) for k, v in rows.items()
              if k != "small describer text"}

    ref_v = [parse_verdict(gpt[n])[0] for n in held]
    answers = [parse_answer(cand[n]) for n in held]
    cand_v = [ans.verdict for ans in answers]
    majority = max(VERDICT_ORDER, key=[parse_verdict(gpt[n])[0] for n in train].count)
    parsed = [i for i, v in enumerate(cand_v) if v]
    code = {v: i for i, v in enumerate(VERDICT_ORDER)}
    text = {
        "verdict_agreement": float(np.mean([r == c for r, c in zip(ref_v, cand_v)])),
        "majority_class": majority, "majority_baseline": float(np.mean([r == majority for r in ref_v])),
        "kappa_quadratic": float(cohen_kappa_score([code[ref_v[i]] for i in parsed], [code[cand_v[i]] for i in parsed],
                                                   weights="quadratic")) if parsed else float("nan"),
        "confusion_gpt_rows_describer_cols": {"order": list(VERDICT_ORDER), "matrix": confusion_matrix(
            [ref_v[i] for i in parsed], [cand_v[i] for i in parsed], labels=list(VERDICT_ORDER)).tolist()},
        "describer_verdicts": {v: cand_v.count(v) for v in (*VERDICT_ORDER, "")},
        "no_verdict_share": 1 - len(parsed) / len(held),
        "contract_violation_share": float(np.mean([not ans.ok for ans in answers])),
        "rouge_l": float(np.mean([rouge_l(gpt[n], cand[n]) for n in held])),
        "embedding_similarity": embedding_similarity([gpt[n] for n in held], [cand[n] for n in held]),
        "mean_words": float(np.mean([len(cand[n].split()) for n in held])),
        "distinct_descriptions": len(set(cand.values())),
    }
    ref = core["GPT-4.1 text (reference)"]["srocc"]
    best_floor = max(core["constant sentence (content-free)"]["srocc"], core["image-only CORE (no text)"]["srocc"])
    mine = core["small describer text"]["srocc"]
    report = {"images": len(held), "split": "RAISE-train, 20 % of images held out by image (train_describer seed 42)",
              "core": core, "srocc_ratio_to_reference": mine / ref,
              "text_value_retained": (mine - best_floor) / (ref - best_floor) if ref != best_floor else float("nan"),
              "paired_bootstrap_srocc": paired, "text": text, "speed_2_cpu_cores": speed, "constant": CONSTANT}
    (out / "gate.json").write_text(json.dumps(report, indent=2))

    lines = ["| CORE (trained on the describer's training images) scored with | SROCC | PLCC |", "|---|---|---|"]
    lines += [f"| {k} | {v['srocc']:.3f} | {v['plcc']:.3f} |" for k, v in core.items()]
    lines += ["", "| paired bootstrap, SROCC difference | mean | 95 % interval |", "|---|---|---|"]
    lines += [f"| {k} | {v['mean']:+.3f} | [{v['ci95'][0]:+.3f}, {v['ci95'][1]:+.3f}] |" for k, v in paired.items()]
    lines += ["", f"verdict agreement {text['verdict_agreement']:.1%} (majority class '{majority}': "
              f"{text['majority_baseline']:.1%}), quadratic kappa {text['kappa_quadratic']:.3f}, no verdict "
              f"{text['no_verdict_share']:.1%}, contract violations {text['contract_violation_share']:.1%}, ROUGE-L "
              f"{text['rouge_l']:.3f}, embedding similarity {text['embedding_similarity']:.3f}, "
              f"{text['distinct_descriptions']} distinct descriptions for {len(held)} images; "
              f"{speed['images_per_s']} images/s, peak RSS {speed['peak_rss_gib']} GiB (2 CPU cores)"]
    (out / "gate.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if a.ship:
        summary = (f"On {len(held)} held-out RAISE images: verdict agreement with GPT-4.1 {text['verdict_agreement']:.0%} "
                   f"(majority class {text['majority_baseline']:.0%}, kappa {text['kappa_quadratic']:.2f}); CORE SROCC "
                   f"{mine:.3f} with its text vs {ref:.3f} with GPT-4.1's, "
                   f"{core['constant sentence (content-free)']['srocc']:.3f} with a constant sentence and "
                   f"{core['image-only CORE (no text)']['srocc']:.3f} with no text (image-only CORE).")
        (Path(a.ship) / "gate.json").write_text(json.dumps(
            {"summary": summary, "images": len(held), "srocc": {k: round(v["srocc"], 4) for k, v in core.items()},
             "verdict_agreement": round(text["verdict_agreement"], 4),
             "majority_baseline": round(text["majority_baseline"], 4),
             "kappa_quadratic": round(text["kappa_quadratic"], 4),
             "images_per_s_2_cpu_cores": speed["images_per_s"]}, indent=2) + "\n")


if __name__ == "__main__":
    main()
