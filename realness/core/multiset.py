"""CORE's image head fitted across rated sets: scores put on one scale, a ridge head in closed form, and a measure of
how unlike the training images an image is.

Why closed form: with frozen backbones the head is all that trains, and a ridge regression on standardised
features is exact, takes milliseconds for thousands of rows, and has one knob (its penalty) chosen by grouped
cross-validation on the training rows alone. It loads into `CoreHead` (linear, standardised) unchanged, so a
model fitted here is an ordinary `CoreModel`.

Scales are never mixed: each rated set's MOS is turned into z-scores within that set (`align_scores`) before the
sets are pooled, so RAISE's 0-100 realness and AGIQA-3K's 0-5 quality meet as "how far above this set's average".
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

logger = logging.getLogger(__name__)

ALIGNMENTS = ("z", "rank", "none")
DEFAULT_ALPHAS = tuple(float(a) for a in np.logspace(0, 5, 11))


def align_scores(mos: Sequence[float], sets: Sequence[str], method: str = "z") -> np.ndarray:
    """Scores on one scale across rated sets: `z` standardises within each set, `rank` maps each set's scores to
    normal quantiles of their within-set rank, `none` leaves them (what a broken alignment does: the sets' scales
    then decide the target)."""
    if method not in ALIGNMENTS:
        raise ValueError(f"alignment must be one of {ALIGNMENTS}, got {method!r}")
    mos, sets = np.asarray(mos, dtype=np.float64), np.asarray(sets)
    out = mos.copy()
    if method == "none":
        return out
    from scipy import stats

    for name in np.unique(sets):
        rows = sets == name
        if method == "z":
            std = mos[rows].std()
            out[rows] = (mos[rows] - mos[rows].mean()) / (std if std > 0 else 1.0)
        else:
            out[rows] = stats.norm.ppf((stats.rankdata(mos[rows]) - 0.5) / rows.sum())
    return out


@dataclass
class RidgeHead:
    """A linear head on standardised features: `((x - mean) / std) @ weight + bias`."""

    mean: np.ndarray
    std: np.ndarray
    weight: np.ndarray
    bias: float
    alpha: float

    def predict(self, features: np.ndarray) -> np.ndarray:
        return ((np.asarray(features, dtype=np.float64) - self.mean) / self.std) @ self.weight + self.bias

    def load_into(self, head: nn.Module) -> None:
        """Write this head into a `CoreHead` built with `head_hidden=0`, `standardize=True` and one member."""
        linear = head.members[0][-1]
        if not isinstance(linear, nn.Linear) or len(head.members) != 1 or not head.standardize:
            raise ValueError("a ridge head loads into a linear, standardised CoreHead with one member")
        with torch.no_grad():
            head.feature_mean.copy_(torch.as_tensor(self.mean, dtype=torch.float32))
            head.feature_std.copy_(torch.as_tensor(self.std, dtype=torch.float32))
            linear.weight.copy_(torch.as_tensor(self.weight, dtype=torch.float32)[None])
            linear.bias.fill_(float(self.bias))


def _standardise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(0)
    std = x.std(0)
    return mean, np.where(std > 1e-6, std, 1.0)


def _ridge_path(x: np.ndarray, y: np.ndarray, alphas: Sequence[float]) -> tuple[np.ndarray, np.ndarray, float]:
    """Ridge weights for every alpha at once (columns), by one SVD of the centred design."""
    y_mean = y.mean()
    u, s, vt = np.linalg.svd(x, full_matrices=False)
    uty = u.T @ (y - y_mean)
    shrink = s[:, None] / (s[:, None] ** 2 + np.asarray(alphas)[None, :])
    return vt.T @ (shrink * uty[:, None]), y_mean, 0.0


def fit_ridge(features: np.ndarray, target: np.ndarray, groups: Sequence[str] | None = None,
              alphas: Sequence[float] = DEFAULT_ALPHAS, folds: int = 5, seed: int = 0,
              sets: Sequence[str] | None = None) -> RidgeHead:
    """A ridge head whose penalty is chosen by grouped k-fold cross-validation on these rows alone (the mean
    within-set SROCC of the out-of-fold predictions, so a set's scale cannot pick it), then refitted on all."""
    from realness.data import group_kfold
    from realness.metrics import srocc

    x, y = np.asarray(features, dtype=np.float64), np.asarray(target, dtype=np.float64)
    groups = np.asarray(groups if groups is not None else np.arange(len(y)).astype(str))
    sets = np.asarray(sets if sets is not None else np.zeros(len(y), dtype=int).astype(str))
    alphas = list(alphas)
    if len(alphas) > 1:
        oof = np.zeros((len(y), len(alphas)))
        for fold in group_kfold(groups, min(folds, len(np.unique(groups))), seed):
            mean, std = _standardise(x[fold.train])
            weights, y_mean, _ = _ridge_path((x[fold.train] - mean) / std, y[fold.train], alphas)
            oof[fold.val] = ((x[fold.val] - mean) / std) @ weights + y_mean
        score = [np.mean([srocc(oof[sets == s, j], y[sets == s]) for s in np.unique(sets)]) for j in range(len(alphas))]
        best = int(np.nanargmax(score))
        if best in (0, len(alphas) - 1):
            logger.info("ridge penalty %.3g is at the edge of the grid", alphas[best])
    else:
        best = 0
    mean, std = _standardise(x)
    weights, y_mean, _ = _ridge_path((x - mean) / std, y, [alphas[best]])
    return RidgeHead(mean, std, weights[:, 0], float(y_mean), float(alphas[best]))


@dataclass
class RatedRows:
    """One rated set's rows for fitting: image paths, scores on its own scale and the groups no split may cut."""

    name: str
    images: list[str]
    mos: np.ndarray
    groups: np.ndarray
    mos_range: tuple[float, float] | None = None


def fit_on_sets(config, sets: Sequence[RatedRows], cache_dir, align: str = "z", scale: str | None = None,
                alphas: Sequence[float] = DEFAULT_ALPHAS, novelty_components: int = 64, progress: bool = True,
                batch_size: int = 8):
    """An image-only CORE (`config`'s frozen image branch) whose linear head is a ridge regression on every set's
    rows, their scores aligned within each set (`align`); it keeps the training images' features for novelty.

    `scale` names the set whose MOS scale `score_mos` reports (default: the first). Returns the model and a
    report (rows per set, the chosen penalty).
    """
    from dataclasses import replace

    from realness.core.features import cached_features
    from realness.core.modeling import CoreModel

    config = replace(config, mode="image", freeze_image=True, head_hidden=0, n_heads=1, standardize_features=True,
                     dropout=0.0, novelty_rows=0)
    core = CoreModel(config).eval()
    feats, target, groups, names = [], [], [], []
    for s in sets:
        records = [{"image": str(p)} for p in s.images]
        feats.append(cached_features(core, records, cache_dir, batch_size, progress, text=False).numpy())
        target.append(align_scores(s.mos, [s.name] * len(s.mos), align))
        groups.append(np.char.add(f"{s.name}:", np.asarray(s.groups).astype(str)))
        names += [s.name] * len(s.mos)
    x = np.concatenate(feats)
    head = fit_ridge(x, np.concatenate(target), np.concatenate(groups), alphas, sets=names)
    head.load_into(core.head)
    core.set_novelty(torch.as_tensor(x), novelty_components)
    ref = next((s for s in sets if s.name == scale), sets[0]) if scale else sets[0]
    core.config.mos_mean, core.config.mos_std = float(np.mean(ref.mos)), float(np.std(ref.mos))
    core.config.mos_range = ref.mos_range
    return core, {"rows": {s.name: len(s.mos) for s in sets}, "alpha": head.alpha, "align": align,
                  "scale": ref.name}
