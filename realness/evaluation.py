"""Evaluation reports: metrics with bootstrap intervals, mean +- std over runs, tables and plots."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from realness.data import DataError, read_table
from realness.metrics import METRICS, bootstrap_ci, correlations, mean_std
from realness.plots import scatter_plot


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


def out_of_fold(run_dir: str | Path) -> dict[str, float]:
    """A cross-validation run's held-out predicted z-score per image (`seed*/fold*/predictions.csv`), averaged
    over seeds: what the seeds' ensemble predicts for each image without having trained on it."""
    preds: dict[str, list[float]] = {}
    files = sorted(Path(run_dir).glob("seed*/fold*/predictions.csv"))
    if not files:
        raise FileNotFoundError(f"{run_dir}: no seed*/fold*/predictions.csv (not a cross-validation output folder)")
    for f in files:
        with f.open() as fh:
            for row in csv.DictReader(fh):
                preds.setdefault(row["filename"], []).append(float(row["pred_z"]))
    return {name: float(np.mean(v)) for name, v in preds.items()}


def _number(value, where: str, row: int, column: str, problems: list[str]) -> float | None:
    """`value` as a finite float; None when empty; a problem naming the row when it is not a number."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        problems.append(f"row {row}: {column} is not a number ({str(value)[:40]!r})")
        return None
    if not np.isfinite(number):
        problems.append(f"row {row}: {column} is {value!r}")
        return None
    return number


def _named_rows(path: Path, rows: list[dict], keys: tuple[str, ...], column: str) -> dict[str, float]:
    """`file name -> value of column` for rows with a value; one `DataError` names every bad row
    (missing column, no file name, duplicate file name, NaN or non-numeric value)."""

    if not rows:
        raise DataError(str(path), ["no rows"])
    key = next((k for k in keys if k in rows[0]), None)
    if key is None or column not in rows[0]:
        need = " or ".join(keys)
        raise DataError(str(path), [f"needs a {need} column and a {column} column; found {sorted(rows[0])}"])
    out: dict[str, float] = {}
    first: dict[str, int] = {}
    problems: list[str] = []
    for i, r in enumerate(rows, 1):
        name = Path(str(r.get(key) or "")).name
        if not name:
            problems.append(f"row {i}: no {key}")
            continue
        if name in first:
            problems.append(f"row {i} ({name}): duplicate file name, first in row {first[name]}")
            continue
        first[name] = i
        value = _number(r.get(column), str(path), i, column, problems)
        if value is not None:
            out[name] = value
    if problems:
        raise DataError(str(path), problems)
    return out


def read_truth(truth: str | Path) -> dict[str, float]:
    """File name -> MOS from a RAISE `ratings.csv` (`filename, MOS_Rating`) or a manifest (`image, mos`).

    Rows without a score are left out; a duplicate file name, a NaN or a non-numeric score is an error
    naming the file and the row.
    """

    path = Path(truth)
    rows = read_table(path)
    raise_format = bool(rows) and "MOS_Rating" in rows[0]
    return _named_rows(path, rows, ("filename",) if raise_format else ("image", "filename"),
                       "MOS_Rating" if raise_format else "mos")


@dataclass
class EvalConfig:
    """Options of `realness eval`."""

    scores: str = field(metadata={"help": "CSV from score-core or run (filename, score_z / score_mos)."})
    truth: str = field(metadata={"help": "RAISE ratings.csv or a manifest with image,mos."})
    out: str = field(default="eval", metadata={"help": "Folder for metrics.json, metrics.csv, scatter.png."})
    column: str | None = field(default=None, metadata={"help": "Score column to evaluate (none: score_mos if filled, "
                                                                "else score_z)."})
    n_boot: int = field(default=1000, metadata={"help": "Bootstrap resamples for the 95% intervals; 0: no intervals."})


def evaluate_file(cfg: EvalConfig) -> dict:
    """Join a scores CSV with ground truth by file name and write metrics.json/.csv and scatter.png.

    `truth` is a RAISE `ratings.csv` (`filename, MOS_Rating`) or a manifest (`image, mos`).
    """
    scores, truth, out, score_column, n_boot = cfg.scores, cfg.truth, cfg.out, cfg.column, cfg.n_boot

    mos_by_name = read_truth(truth)
    srows = read_table(Path(scores))
    column = score_column or ("score_mos" if srows and any(r.get("score_mos") for r in srows) else "score_z")
    scored = _named_rows(Path(scores), srows, ("filename", "image"), column)
    names = [Path(str(r.get("filename") or r.get("image"))).name for r in srows]
    unmatched = [n for n in names if n not in scored or n not in mos_by_name]
    pairs = [(scored[n], mos_by_name[n]) for n in names if n in scored and n in mos_by_name]
    if len(pairs) < 3:
        raise ValueError(f"{scores}: only {len(pairs)} of its {len(names)} file(s) have both a score ({column}) and "
                         f"a ground-truth score in {truth}; at least 3 are needed")
    pred, mos = map(np.array, zip(*pairs))
    if n_boot < 0:
        raise ValueError(f"--n-boot must be 0 (no intervals) or more, got {n_boot}")
    for values, what, where in ((pred, f"{column} values", scores), (mos, "ground-truth scores", truth)):
        if np.ptp(values) == 0:
            raise ValueError(f"{where}: all {len(values)} matched {what} are {values[0]:g}: correlations with a "
                             "constant are undefined")
    result = evaluate_scores(pred, mos, n_boot=n_boot)
    for key in ("srocc_ci95", "plcc_ci95"):  # no resamples: no interval (null in metrics.json, valid JSON)
        if any(np.isnan(result[key])):
            result[key] = None
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
