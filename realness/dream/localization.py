"""Localization metrics of a realness map against a ground-truth mask of the unreal region.

Pixel AUROC (Mann-Whitney U over pixel scores, ties counted half), average precision (step-wise, as
scikit-learn's `average_precision_score`), F1 and IoU at a threshold and at the best threshold, and the
pointing game (does the map's maximum fall inside the mask, with an optional pixel tolerance).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage, stats


def _check(scores: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores, mask = np.asarray(scores, dtype=np.float64), np.asarray(mask).astype(bool)
    if scores.shape != mask.shape:
        raise ValueError(f"map shape {scores.shape} differs from mask shape {mask.shape}")
    return scores.ravel(), mask.ravel()


def pixel_auroc(scores, mask) -> float:
    """Probability that a random mask pixel scores above a random background pixel (NaN if one is empty)."""
    s, m = _check(scores, mask)
    pos, neg = int(m.sum()), int((~m).sum())
    if pos == 0 or neg == 0:
        return math.nan
    ranks = stats.rankdata(s)
    return float((ranks[m].sum() - pos * (pos + 1) / 2) / (pos * neg))


def average_precision(scores, mask) -> float:
    """Area under the precision-recall steps, thresholds at every distinct score (NaN if no positive)."""
    s, m = _check(scores, mask)
    if not m.any():
        return math.nan
    order = np.argsort(-s, kind="mergesort")
    s, m = s[order], m[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]
    tp = np.cumsum(m)[last_of_tie]
    precision = tp / (last_of_tie + 1)
    recall = tp / m.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def f1_iou(scores, mask, threshold: float) -> tuple[float, float]:
    """F1 and IoU of `scores >= threshold` against the mask."""
    s, m = _check(scores, mask)
    pred = s >= threshold
    tp, fp, fn = float((pred & m).sum()), float((pred & ~m).sum()), float((~pred & m).sum())
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else math.nan
    iou = tp / (tp + fp + fn) if tp + fp + fn else math.nan
    return f1, iou


def best_f1_iou(scores, mask) -> tuple[float, float, float]:
    """(best F1, IoU at that threshold, the threshold) over every distinct score."""
    s, m = _check(scores, mask)
    if not m.any():
        return math.nan, math.nan, math.nan
    order = np.argsort(-s, kind="mergesort")
    ss, mm = s[order], m[order]
    last = np.r_[np.flatnonzero(np.diff(ss)), ss.size - 1]
    tp = np.cumsum(mm)[last].astype(float)
    fp = (last + 1) - tp
    fn = m.sum() - tp
    f1 = 2 * tp / (2 * tp + fp + fn)
    k = int(np.argmax(f1))
    return float(f1[k]), float(tp[k] / (tp[k] + fp[k] + fn[k])), float(ss[last[k]])


def pointing_game(scores, mask, tolerance: int = 0) -> bool:
    """Whether the map's maximum lies in the mask (dilated by `tolerance` pixels)."""
    scores, mask = np.asarray(scores), np.asarray(mask).astype(bool)
    if scores.shape != mask.shape:
        raise ValueError(f"map shape {scores.shape} differs from mask shape {mask.shape}")
    if tolerance > 0:
        yy, xx = np.mgrid[-tolerance:tolerance + 1, -tolerance:tolerance + 1]
        mask = ndimage.binary_dilation(mask, structure=(yy ** 2 + xx ** 2) <= tolerance ** 2)
    y, x = np.unravel_index(int(np.argmax(scores)), scores.shape)
    return bool(mask[y, x])


def localization_metrics(scores, mask, threshold: float = 0.5, tolerance: int = 0) -> dict[str, float]:
    """Every metric above for one map and mask."""
    f1, iou = f1_iou(scores, mask, threshold)
    best_f1, best_iou, best_t = best_f1_iou(scores, mask)
    return {"auroc": pixel_auroc(scores, mask), "ap": average_precision(scores, mask),
            f"f1@{threshold:g}": f1, f"iou@{threshold:g}": iou, "best_f1": best_f1, "best_f1_iou": best_iou,
            "best_threshold": best_t, "pointing_hit": float(pointing_game(scores, mask, tolerance))}
