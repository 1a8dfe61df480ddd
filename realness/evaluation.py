"""Evaluation reports: metrics with bootstrap intervals, mean +- std over runs, tables and plots."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Sequence

import numpy as np

from realness.metrics import METRICS, bootstrap_ci, correlations, mean_std


def evaluate_scores(pred: Sequence[float], mos: Sequence[float], n_boot: int = 1000, seed: int = 0) -> dict:
    """Correlations of predictions with MOS plus 95% bootstrap intervals of SROCC and PLCC."""
    out = correlations(pred, mos)
    for metric in ("srocc", "plcc"):
        out[f"{metric}_ci95"] = list(bootstrap_ci(pred, mos, metric, n_boot=n_boot, seed=seed))
    return out


def format_table(rows: dict[str, dict[str, tuple[float, float]]]) -> str:
    """A plain-text table: one row per setting, `mean +- std` per metric."""
    header = f"{'setting':<24}" + "".join(f"{m:>18}" for m in METRICS)
    lines = [header, "-" * len(header)]
    for name, stats in rows.items():
        lines.append(f"{name:<24}" + "".join(f"{stats[m][0]:>10.4f} ±{stats[m][1]:<6.4f}" for m in METRICS))
    return "\n".join(lines)


def write_cv_report(out: str | Path, results: list[dict], name: str = "core") -> dict:
    """Summarise per-run results of a cross-validation into summary.json/.csv and scatter.png."""
    from realness.plots import scatter_plot

    out = Path(out)
    summary = mean_std([{m: r[m] for m in METRICS} for r in results])
    report = {"runs": results, "mean_std": {m: {"mean": v[0], "std": v[1]} for m, v in summary.items()},
              "n_runs": len(results)}
    (out / "summary.json").write_text(json.dumps(report, indent=2))
    with (out / "summary.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["seed", "fold", "best_epoch", "n_val", *METRICS])
        for r in results:
            w.writerow([r["seed"], r["fold"], r["best_epoch"], r["n_val"], *(f"{r[m]:.4f}" for m in METRICS)])
        w.writerow(["mean", "", "", "", *(f"{summary[m][0]:.4f}" for m in METRICS)])
        w.writerow(["std", "", "", "", *(f"{summary[m][1]:.4f}" for m in METRICS)])
    # Out-of-fold predictions of the first seed cover every image once: one honest scatter.
    first_seed = results[0]["seed"] if results else None
    pred, mos = [], []
    for r in results:
        if r["seed"] != first_seed:
            continue
        with (out / f"seed{r['seed']}" / f"fold{r['fold']}" / "predictions.csv").open() as fh:
            for row in csv.DictReader(fh):
                pred.append(float(row["pred_mos"]))
                mos.append(float(row["mos"]))
    if len(pred) >= 3 and np.ptp(pred) > 0:
        scatter_plot(pred, mos, out / "scatter.png", title=f"{name}: held-out predictions (seed {first_seed})",
                     xlabel="predicted MOS")
    print(format_table({name: summary}))
    return report


def read_truth(truth: str | Path) -> dict[str, float]:
    """File name -> MOS from a RAISE `ratings.csv` (`filename, MOS_Rating`) or a manifest (`image, mos`)."""
    with Path(truth).open(encoding="utf-8-sig", newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise ValueError(f"{truth}: no rows")
    key, col = ("filename", "MOS_Rating") if "MOS_Rating" in rows[0] else ("image", "mos")
    if key not in rows[0] or col not in rows[0]:
        raise ValueError(f"{truth}: needs columns filename,MOS_Rating or image,mos; found {sorted(rows[0])}")
    return {Path(r[key]).name: float(r[col]) for r in rows if r[col] not in ("", None)}


def evaluate_file(scores: str | Path, truth: str | Path, out: str | Path, score_column: str | None = None,
                  n_boot: int = 1000) -> dict:
    """Join a scores CSV with ground truth by file name and write metrics.json/.csv and scatter.png.

    `truth` is a RAISE `ratings.csv` (`filename, MOS_Rating`) or a manifest (`image, mos`).
    """
    from realness.plots import scatter_plot

    mos_by_name = read_truth(truth)
    with Path(scores).open(encoding="utf-8-sig", newline="") as fh:
        srows = list(csv.DictReader(fh))
    if not srows:
        raise ValueError(f"{scores}: no rows")
    column = score_column or ("score_mos" if srows[0].get("score_mos") else "score_z")
    if column not in srows[0]:
        raise ValueError(f"{scores}: no column {column!r}; found {sorted(srows[0])}")
    pairs, unmatched = [], []
    for r in srows:
        name = Path(r.get("filename") or r.get("image") or "").name
        if r.get(column) in ("", None) or name not in mos_by_name:
            unmatched.append(name)
            continue
        pairs.append((float(r[column]), mos_by_name[name]))
    if len(pairs) < 3:
        raise ValueError(f"{scores}: only {len(pairs)} scored file(s) match {truth}")
    pred, mos = map(np.array, zip(*pairs))
    result = evaluate_scores(pred, mos, n_boot=n_boot)
    result["unmatched"] = unmatched
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    with (out / "metrics.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["metric", "value"])
        for k in (*METRICS, "n"):
            w.writerow([k, result[k]])
    scatter_plot(pred, mos, out / "scatter.png", title=Path(scores).name, xlabel=column)
    return result
