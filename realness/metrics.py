"""Agreement between predicted scores and human opinion scores, as reported in quality assessment.

SROCC, KRCC and PLCC follow scipy. "PLCC after logistic fit" maps predictions through the monotonic
4- or 5-parameter logistic of VQEG / Sheikh et al. (2006) fitted to the MOS before Pearson's r, which is
what most IQA papers report as PLCC. Bootstrap confidence intervals resample image pairs.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterable, Sequence

import numpy as np
from scipy import optimize, stats

logger = logging.getLogger(__name__)
METRICS = ("srocc", "krcc", "plcc", "plcc_logistic", "rmse", "rmse_logistic")


def _clean(pred: Sequence[float], mos: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    p, m = np.asarray(pred, dtype=np.float64).ravel(), np.asarray(mos, dtype=np.float64).ravel()
    if p.shape != m.shape:
        raise ValueError(f"predictions ({p.size}) and scores ({m.size}) differ in length")
    if not (np.isfinite(p).all() and np.isfinite(m).all()):
        raise ValueError("predictions and scores must be finite (drop NaN rows first)")
    if p.size < 3:
        raise ValueError(f"need at least 3 pairs, got {p.size}")
    return p, m


def logistic4(x: np.ndarray, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    """(b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2."""
    return (b1 - b2) / (1.0 + np.exp(-(x - b3) / (abs(b4) + 1e-12))) + b2


def logistic5(x: np.ndarray, b1: float, b2: float, b3: float, b4: float, b5: float) -> np.ndarray:
    """b1 * (1/2 - 1 / (1 + exp(b2 (x - b3)))) + b4 x + b5."""
    return b1 * (0.5 - 1.0 / (1.0 + np.exp(np.clip(b2 * (x - b3), -60, 60)))) + b4 * x + b5


LINEAR_FALLBACK = "linear (logistic did not converge)"


def fit_logistic(pred: Sequence[float], mos: Sequence[float], params: int = 5, return_fit: bool = False):
    """Predictions mapped onto the MOS scale by a fitted 4- or 5-parameter logistic.

    Falls back to a linear fit when the logistic does not converge (e.g. nearly constant predictions);
    with `return_fit=True` returns `(fitted, fit)` where `fit` says which: "logistic5", "logistic4" or
    `LINEAR_FALLBACK`, so no report shows a PLCC without saying which fit produced it.
    """
    p, m = _clean(pred, mos)
    if params not in (4, 5):
        raise ValueError(f"params must be 4 or 5, got {params}")
    spread = float(np.std(p)) or 1.0
    try:
        if p.size <= params:
            raise ValueError("too few points for a logistic fit")
        if np.ptp(p) == 0:
            raise ValueError("constant predictions: no logistic to fit")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if params == 4:
                p0 = [m.max(), m.min(), float(np.mean(p)), spread]
                coef, _ = optimize.curve_fit(logistic4, p, m, p0=p0, maxfev=20000)
                fitted = logistic4(p, *coef)
            else:
                p0 = [float(np.ptp(m)) or 1.0, 1.0 / spread, float(np.mean(p)), 0.0, float(np.mean(m))]
                coef, _ = optimize.curve_fit(logistic5, p, m, p0=p0, maxfev=20000)
                fitted = logistic5(p, *coef)
        if np.isfinite(fitted).all():
            return (fitted, f"logistic{params}") if return_fit else fitted
    except (RuntimeError, ValueError, optimize.OptimizeWarning):
        pass
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant predictions make the linear fit rank-deficient: it is flat
        slope, intercept = np.polyfit(p, m, 1)
    fitted = slope * p + intercept
    return (fitted, LINEAR_FALLBACK) if return_fit else fitted


def srocc(pred, mos) -> float:
    return float(stats.spearmanr(*_clean(pred, mos)).statistic)


def krcc(pred, mos) -> float:
    return float(stats.kendalltau(*_clean(pred, mos)).statistic)


def plcc(pred, mos) -> float:
    return float(stats.pearsonr(*_clean(pred, mos)).statistic)


def rmse(pred, mos) -> float:
    p, m = _clean(pred, mos)
    return float(np.sqrt(np.mean((p - m) ** 2)))


def correlations(pred: Sequence[float], mos: Sequence[float], logistic_params: int = 5) -> dict[str, float]:
    """All of `METRICS` for one set of predictions; `rmse` compares on the raw scale."""
    p, m = _clean(pred, mos)
    fitted, fit = fit_logistic(p, m, logistic_params, return_fit=True)
    if fit == LINEAR_FALLBACK:
        logger.warning("the %d-parameter logistic did not converge; plcc_logistic and rmse_logistic come from a "
                       "linear fit", logistic_params)
    out = {"srocc": srocc(p, m), "krcc": krcc(p, m), "plcc": plcc(p, m)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a constant fit makes Pearson undefined: report NaN
        out["plcc_logistic"] = float(stats.pearsonr(fitted, m).statistic) if np.std(fitted) > 0 else math.nan
    out["rmse"] = rmse(p, m)
    out["rmse_logistic"] = rmse(fitted, m)
    out["n"] = int(p.size)
    out["fit"] = fit
    return out


def bootstrap_ci(
    pred: Sequence[float],
    mos: Sequence[float],
    metric: str = "srocc",
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of one metric, resampling (prediction, MOS) pairs; NaNs when
    no resample has both sides varying (`n_boot=0`, or too few distinct values)."""
    fns = {"srocc": srocc, "krcc": krcc, "plcc": plcc, "rmse": rmse}
    if metric not in fns:
        raise ValueError(f"bootstrap supports {sorted(fns)}, got {metric!r}")
    p, m = _clean(pred, mos)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_boot):
        idx = rng.integers(0, p.size, p.size)
        if np.ptp(p[idx]) == 0 or np.ptp(m[idx]) == 0:
            continue
        values.append(fns[metric](p[idx], m[idx]))
    if not values:
        return math.nan, math.nan
    alpha = (1 - level) / 2
    return float(np.quantile(values, alpha)), float(np.quantile(values, 1 - alpha))


def mean_std(runs: Iterable[dict[str, float]]) -> dict[str, tuple[float, float]]:
    """Per metric, mean and sample standard deviation over runs (seeds or folds)."""
    runs = list(runs)
    keys = [k for k, v in runs[0].items() if k != "n" and not isinstance(v, str)] if runs else []
    out = {}
    for k in keys:
        vals = np.array([r[k] for r in runs], dtype=np.float64)
        out[k] = (float(np.nanmean(vals)), float(np.nanstd(vals, ddof=1)) if len(vals) > 1 else 0.0)
    return out
