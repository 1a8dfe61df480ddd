"""Does CORE's score hold beyond the images it learned from? The generalization protocol, one table per feature setting.

    REALNESS_RAISE_DIR=... REALNESS_AGIQA3K_DIR=... python eval/eval_generalization.py --out eval/out/generalization
    python eval/eval_generalization.py --variants today crops2-levels8   # a subset; the table keeps earlier ones

Every variant is a frozen image backbone read one way (CORE config fields, VARIANTS below) and a ridge head fitted in
closed form (`realness.core.multiset`), its penalty chosen by closed-form leave-one-out inside the training rows. The
cells, each SROCC and PLCC with a 95 % bootstrap interval:

- **own CV**: 5-fold within each set, grouped (RAISE by image, AGIQA-3K by prompt: no prompt on both sides);
- **A -> B**: fitted on all of A, scored on all of B (RAISE -> AGIQA-3K and back);
- **both -> B**: fitted on B's training folds plus all of the other set, scores z-aligned within each set
  (`--align`), each set weighing alike (`--balance`), scored on B's held-out folds;
- **leave one generator out** (AGIQA-3K): for each generator G and prompt fold f, fitted on the other generators'
  images of the other prompts (with `--logo_with_raise`, and all of RAISE), scored on G's images of f's prompts;
  SROCC within G, and the mean over generators;
- **novelty** (`realness.core.novelty.Novelty`): fitted on one set's training folds, how well its
  percentile tells that set's held-out images from the other set's (AUROC), and the Spearman correlation of the
  percentile with the absolute error of the within-set predictions.

Features are computed once per variant and set (CORE's feature cache, `--feature_cache`). The `today` variant also
scores the bundled `offline-image-raise` (the `offline-image` shipped before, MLP heads trained on all of RAISE) on
the other sets. Writes
OUT/generalization.{json,md}.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from realness.argparsing import parse_dataclasses

logger = logging.getLogger("eval_generalization")

# Each variant: CORE config fields of a frozen image branch (the head is the ridge fitted here).
VARIANTS: dict[str, dict] = {
    # the bundled offline-image model's features: EfficientNet-Lite0, squashed to 448x597, last stage's mean
    "today": {"image_size": [448, 597]},
    "squash384-levels8": {"image_size": [384, 512], "image_levels": 8, "image_pooling": "mean_std"},
    # the shape kept: shorter side to 384, two 384x384 crops along the longer side, features averaged
    "crops2": {"image_views": "crops", "image_size": [384, 384], "n_views": 2},
    "crops2-levels8": {"image_views": "crops", "image_size": [384, 384], "n_views": 2, "image_levels": 8,
                       "image_pooling": "mean_std"},
    # native resolution: a 384x384 crop of the image as it is (upscaled only when smaller), two along the longer side
    "native2-levels8": {"image_views": "native", "image_size": [384, 384], "n_views": 2, "image_levels": 8,
                        "image_pooling": "mean_std"},
    # for users with a network (CLIP ViT-B/32's image tower, OpenAI weights): not measured here, no CLIP ships offline
    "clip-b32": {"image_backbone": "open_clip/ViT-B-32:openai", "image_views": "crops", "image_size": [224, 224],
                 "n_views": 2},
}


@dataclass
class GeneralizationConfig:
    """Options of `python eval/eval_generalization.py` (the same parser as every `realness` command)."""

    out: str = field(default="eval/out/generalization", metadata={"help": "Where the tables and JSON go"})
    feature_cache: str = field(default="runs/feature_cache", metadata={
        "help": "CORE's feature cache (shared with training/train_core_multiset.py)"})
    variants: list[str] = field(default_factory=lambda: ["today"], metadata={
        "help": f"Feature settings to measure, of {list(VARIANTS)}; the table keeps variants measured by earlier calls",
        "choices": tuple(VARIANTS)})
    sets: list[str] = field(default_factory=lambda: ["raise", "agiqa3k"], metadata={
        "help": "Rated sets (names found through $REALNESS_RAISE_DIR / $REALNESS_AGIQA3K_DIR, or manifests)"})
    align: str = field(default="z", metadata={"help": "How scores of several sets are put on one scale",
                                              "choices": ("z", "rank", "none")})
    balance: bool = field(default=True, metadata={"help": "In fits on several sets, every set weighs alike (each row "
                                                          "by 1 / its set's size)"})
    logo_with_raise: bool = field(default=True, metadata={"help": "Leave-one-generator-out fits also see all of RAISE"})
    folds: int = field(default=5, metadata={"help": "Folds of the within-set cross-validation"})
    n_boot: int = field(default=1000, metadata={"help": "Bootstrap resamples for the intervals"})
    batch_size: int = field(default=8, metadata={"help": "Images per backbone batch"})
    progress: bool = field(default=True, metadata={"help": "Show a progress bar while features are computed"})


def _cell(pred, mos, n_boot: int) -> dict:
    from realness.metrics import bootstrap_ci, plcc, srocc

    return {"srocc": srocc(pred, mos), "plcc": plcc(pred, mos), "n": int(len(mos)),
            "srocc_ci95": list(bootstrap_ci(pred, mos, "srocc", n_boot=n_boot)),
            "plcc_ci95": list(bootstrap_ci(pred, mos, "plcc", n_boot=n_boot))}


def _auroc(inside, outside) -> float:
    from scipy import stats

    ranks = stats.rankdata(np.concatenate([inside, outside]))
    n_in, n_out = len(inside), len(outside)
    return float((ranks[n_in:].sum() - n_out * (n_out + 1) / 2) / (n_in * n_out))


def evaluate(features: dict[str, np.ndarray], sets: dict[str, dict], align: str = "z", folds: int = 5,
             logo_with_raise: bool = True, n_boot: int = 1000, seed: int = 42, balance: bool = False) -> dict:
    """Every cell of the protocol for one feature setting. `sets[name]` holds `mos`, `groups` and `generator`
    arrays (rows in the order of `features[name]`)."""
    from scipy import stats

    from realness.core.multiset import DEFAULT_ALPHAS, align_scores, fit_ridge
    from realness.core.novelty import Novelty
    from realness.data import group_kfold

    names = list(sets)
    z = {n: align_scores(sets[n]["mos"], [n] * len(sets[n]["mos"]), align if align != "none" else "z") for n in names}
    target = {n: (z[n] if align != "none" else np.asarray(sets[n]["mos"], dtype=float)) for n in names}
    split = {n: group_kfold(sets[n]["groups"], folds, seed) for n in names}

    def fit(parts, alphas=DEFAULT_ALPHAS):  # parts: list of (set name, row indices)
        x = np.concatenate([features[n][i] for n, i in parts])
        y = np.concatenate([target[n][i] for n, i in parts])
        s = np.concatenate([[n] * len(i) for n, i in parts])
        return fit_ridge(x, y, alphas, sets=s, balance=balance)

    out: dict = {"own_cv": {}, "cross": {}, "both": {}, "logo": {}, "novelty": {}}
    oof_own = {}
    for n in names:
        pred = np.zeros(len(target[n]))
        for fold in split[n]:
            pred[fold.val] = fit([(n, fold.train)]).predict(features[n][fold.val])
        oof_own[n] = pred
        out["own_cv"][n] = _cell(pred, sets[n]["mos"], n_boot)
    for a in names:
        head = fit([(a, np.arange(len(target[a])))])
        for b in names:
            if b != a:
                out["cross"][f"{a}->{b}"] = _cell(head.predict(features[b]), sets[b]["mos"], n_boot)
    if len(names) > 1:
        for b in names:
            pred = np.zeros(len(target[b]))
            others = [(o, np.arange(len(target[o]))) for o in names if o != b]
            for fold in split[b]:
                pred[fold.val] = fit([(b, fold.train), *others]).predict(features[b][fold.val])
            out["both"][b] = _cell(pred, sets[b]["mos"], n_boot)
    for n in names:
        gens = np.asarray(sets[n]["generator"])
        if len({g for g in gens if g and g != "real"}) < 3:
            continue
        extra = [(o, np.arange(len(target[o]))) for o in names if o != n and logo_with_raise]
        per = {}
        for g in sorted(set(gens)):
            pred, rows = np.full(len(gens), np.nan), gens == g
            # one penalty for this generator's folds, chosen by CV on the other generators' rows alone
            alpha = fit([(n, np.flatnonzero(~rows)), *extra]).alpha
            for fold in split[n]:
                held = np.zeros(len(gens), dtype=bool)
                held[fold.val] = True  # the fold's prompts: group_kfold keeps every row of a prompt in one fold
                train = np.flatnonzero(~rows & ~held)
                test = np.flatnonzero(rows & held)
                if len(test):
                    pred[test] = fit([(n, train), *extra], [alpha]).predict(features[n][test])
            per[g] = _cell(pred[rows], np.asarray(sets[n]["mos"])[rows], n_boot)
        out["logo"][n] = {"per_generator": per, "mean_srocc": float(np.mean([c["srocc"] for c in per.values()])),
                          "with": [o for o in names if o != n] if logo_with_raise else []}
    for n in names:
        fold = split[n][0]
        fam = Novelty.fit(features[n][fold.train])
        inside = fam(features[n][fold.val]).numpy()
        entry = {"n_train": int(len(fold.train))}
        for o in names:
            if o != n:
                outside = fam(features[o]).numpy()
                entry[f"auroc_vs_{o}"] = _auroc(inside, outside)
                entry[f"median_pct_{o}"] = float(np.median(outside))
        entry["median_pct_heldout"] = float(np.median(inside))
        entry["share_warned_heldout"] = float(np.mean(inside > fam.warn_at))
        err = np.abs(oof_own[n][fold.val] - target[n][fold.val])
        entry["spearman_pct_abs_error"] = float(stats.spearmanr(inside, err)[0])
        out["novelty"][n] = entry
    return out


def _features(variant: str, datasets: list, cache: str, batch_size: int, progress: bool) -> list[np.ndarray]:
    """Frozen features of each set under one variant (its backbone built once), from CORE's feature cache
    (`realness.core.features`, keyed by the variant's options and every file), shared with
    `training/train_core_multiset.py`."""
    from realness.core import create_core
    from realness.core.features import cached_features

    model = create_core("offline", mode="image", freeze_image=True, **VARIANTS[variant]).eval()
    return [cached_features(model, [{"image": p} for p in ds["image"]], cache, batch_size, progress, text=False).numpy()
            for ds in datasets]


def _bundled(feats: dict, meta: dict, n_boot: int) -> dict:
    """The bundled `offline-image-raise` (the `offline-image` shipped before issue #42: MLP heads trained on all of
    RAISE) on every other set, from the `today` features it reads."""
    import torch

    from realness.core import CoreModel

    core = CoreModel.from_pretrained("offline-image-raise")
    with torch.no_grad():
        return {n: _cell(core.score_features(torch.as_tensor(x)).numpy(), meta[n]["mos"], n_boot)
                for n, x in feats.items() if n != "raise"}


def _fmt(c: dict) -> str:
    lo, hi = c["srocc_ci95"]
    return f"{c['srocc']:.3f} [{lo:.2f}, {hi:.2f}] / {c['plcc']:.3f}"


def table(results: dict) -> str:
    """The markdown table of every measured variant: one row per variant, one column per cell."""
    cols: list[tuple[str, callable]] = []
    first = next(iter(results.values()))["cells"]
    for n in first["own_cv"]:
        cols.append((f"{n} CV", lambda r, n=n: _fmt(r["own_cv"][n])))
    for k in first["cross"]:
        cols.append((k.replace("->", " → "), lambda r, k=k: _fmt(r["cross"][k])))
    for n in first["both"]:
        cols.append((f"both → {n}", lambda r, n=n: _fmt(r["both"][n])))
    for n in first["logo"]:
        cols.append((f"{n} leave-one-generator-out (mean SROCC)", lambda r, n=n: f"{r['logo'][n]['mean_srocc']:.3f}"))
    lines = ["| variant | " + " | ".join(c for c, _ in cols) + " |", "|---|" + "---|" * len(cols)]
    for name, r in results.items():
        lines.append(f"| {name} | " + " | ".join(f(r["cells"]) for _, f in cols) + " |")
    for r in results.values():
        for n, c in (r.get("bundled") or {}).items():
            lines += ["", f"The RAISE-only `offline-image-raise` (MLP heads on all of RAISE) on {n}: {_fmt(c)}."]
    lines += ["", "Cells: SROCC [95 % bootstrap interval] / PLCC. Leave-one-generator-out, per generator:", "",
              "| variant | " + " | ".join(next(iter(first["logo"].values()), {}).get("per_generator", {})) + " |",
              "|---|" + "---|" * len(next(iter(first["logo"].values()), {}).get("per_generator", {}))]
    for name, r in results.items():
        for logo in r["cells"]["logo"].values():
            lines.append(f"| {name} | " + " | ".join(f"{c['srocc']:.3f}" for c in logo["per_generator"].values()) + " |")
    lines += ["", "Novelty (fitted on one set's training folds):", "",
              "| variant | fitted on | AUROC held-out vs other set | median percentile: held-out / other set | "
              "held-out warned | Spearman(percentile, abs. error) |", "|---|---|---|---|---|---|"]
    for name, r in results.items():
        for n, f in r["cells"]["novelty"].items():
            other = next((k[len("auroc_vs_"):] for k in f if k.startswith("auroc_vs_")), None)
            if other:
                lines.append(f"| {name} | {n} | {f[f'auroc_vs_{other}']:.3f} | {f['median_pct_heldout']:.0f} / "
                             f"{f[f'median_pct_{other}']:.0f} | {100 * f['share_warned_heldout']:.1f} % | "
                             f"{f['spearman_pct_abs_error']:+.3f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    from realness.data import load_rated

    (a,) = parse_dataclasses([GeneralizationConfig], argv, prog="python eval/eval_generalization.py",
                             description=__doc__)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    loaded = {}
    for name in a.sets:
        spec, ds = load_rated(name)
        loaded[spec.name] = (spec, ds)
    results = json.loads((out / "generalization.json").read_text()) if (out / "generalization.json").is_file() else {}
    for variant in a.variants:
        start = time.perf_counter()
        feats = dict(zip(loaded, _features(variant, [ds for _, ds in loaded.values()], a.feature_cache, a.batch_size,
                                           a.progress)))
        seconds = time.perf_counter() - start
        meta = {n: {"mos": np.asarray(ds["mos"], dtype=float), "groups": np.asarray(ds[spec.group_by]),
                    "generator": np.asarray(ds["generator"])} for n, (spec, ds) in loaded.items()}
        cells = evaluate(feats, meta, a.align, a.folds, a.logo_with_raise, a.n_boot, balance=a.balance)
        results[variant] = {"options": VARIANTS[variant], "align": a.align, "balance": a.balance, "cells": cells,
                            "features_s": round(seconds, 1)}
        if variant == "today":  # the bundled model as shipped reads these very features: its own transfer
            results[variant]["bundled"] = _bundled(feats, meta, a.n_boot)
        logger.info("%s done", variant)
        print(f"{variant}: " + ", ".join(f"{k} {v['srocc']:.3f}" for k, v in
                                         {**cells["own_cv"], **cells["cross"]}.items()), flush=True)
    (out / "generalization.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "generalization.md").write_text(table(results))
    print(table(results))
    return results


if __name__ == "__main__":
    main()
