"""CORE's image head fitted across rated sets: scores put on one scale, a ridge head in closed form, and a measure of
how unlike the training images an image is.

Why closed form: with frozen backbones the head is all that trains, and a ridge regression on standardised
features is exact, takes seconds for thousands of rows, and has one knob (its penalty) chosen by closed-form
leave-one-out on the training rows alone. It loads into `CoreHead` (linear, standardised) unchanged, so a
model fitted here is an ordinary `CoreModel`.

Scales are never mixed: each rated set's MOS is turned into z-scores within that set (`align_scores`) before the
sets are pooled, so RAISE's 0-100 realness and AGIQA-3K's 0-5 quality meet as "how far above this set's average".
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from realness.core.features import cached_features
from realness.core.modeling import CoreModel

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


def _decompose(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """`x` (standardised) as `u`, the squared singular values `s2` and `vt`: by one SVD when it has more rows than
    columns, else by one eigendecomposition of its Gram matrix (`vt` None: the dual form, where thousands of
    multi-stage features cost what the row count costs)."""
    if x.shape[0] >= x.shape[1]:
        u, s, vt = np.linalg.svd(x, full_matrices=False)
        return u, s ** 2, vt
    s2, u = np.linalg.eigh(x @ x.T)
    return u, np.clip(s2, 0.0, None), None


def fit_ridge(features: np.ndarray, target: np.ndarray, alphas: Sequence[float] = DEFAULT_ALPHAS,
              sets: Sequence[str] | None = None, balance: bool = False) -> RidgeHead:
    """A ridge head on standardised features whose penalty is chosen on these rows alone: the closed-form
    leave-one-out predictions of every penalty, scored by their squared error averaged within each set first (so
    the larger set does not pick it alone); one decomposition of the design for the whole grid and the final fit.
    With `balance`, every set weighs as much as every other in the fit (each row by 1 / its set's size)."""
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(target, dtype=np.float64)
    sets = np.asarray(sets if sets is not None else np.zeros(len(y), dtype=int).astype(str))
    names, inverse, counts = np.unique(sets, return_inverse=True, return_counts=True)
    w = (len(y) / (len(names) * counts))[inverse] if balance else np.ones(len(y))
    mean = np.average(x, axis=0, weights=w)
    std = np.sqrt(np.average((x - mean) ** 2, axis=0, weights=w))
    std = np.where(std > 1e-6, std, 1.0)
    root = np.sqrt(w)[:, None]
    x = (x - mean) / std * root
    y_mean = float(np.average(y, weights=w))
    yc = (y - y_mean) * root[:, 0]
    u, s2, vt = _decompose(x)
    uty = u.T @ yc
    alphas = list(alphas)
    best = 0
    if len(alphas) > 1:
        score = []
        for alpha in alphas:
            shrink = s2 / (s2 + alpha)
            fitted = u @ (shrink * uty)
            leverage = np.clip((u ** 2) @ shrink, None, 1 - 1e-9)
            residual = (yc - fitted) / (1 - leverage) / root[:, 0]  # leave-one-out, on the target's own scale
            score.append(np.mean([np.mean(residual[sets == name] ** 2) for name in names]))
        best = int(np.nanargmin(score))
        if best in (0, len(alphas) - 1):
            logger.info("ridge penalty %.3g is at the edge of the grid", alphas[best])
    alpha = alphas[best]
    if vt is not None:
        weight = vt.T @ (np.sqrt(s2) / (s2 + alpha) * uty)
    else:
        weight = x.T @ (u @ (uty / (s2 + alpha)))
    return RidgeHead(mean, std, weight, y_mean, float(alpha))


@dataclass
class RatedRows:
    """One rated set's rows for fitting: image paths and scores on its own scale."""

    name: str
    images: list[str]
    mos: np.ndarray
    mos_range: tuple[float, float] | None = None


def fit_on_sets(config, sets: Sequence[RatedRows], cache_dir, align: str = "z", scale: str | None = None,
                alphas: Sequence[float] = DEFAULT_ALPHAS, novelty_components: int = 64, progress: bool = True,
                batch_size: int = 8, balance: bool = True):
    """An image-only CORE (`config`'s frozen image branch) whose linear head is a ridge regression on every set's
    rows, their scores aligned within each set (`align`), each set weighing alike (`balance`); it keeps the training
    images' features for novelty.

    `scale` names the set whose MOS scale `score_mos` reports (default: the first). Returns the model and a
    report (rows per set, the chosen penalty).
    """
    config = replace(config, mode="image", freeze_image=True, head_hidden=0, n_heads=1, standardize_features=True,
                     dropout=0.0, novelty_rows=0)
    core = CoreModel(config).eval()
    feats, target, names = [], [], []
    for s in sets:
        records = [{"image": str(p)} for p in s.images]
        feats.append(cached_features(core, records, cache_dir, batch_size, progress, text=False).numpy())
        target.append(align_scores(s.mos, [s.name] * len(s.mos), align))
        names += [s.name] * len(s.mos)
    x = np.concatenate(feats)
    head = fit_ridge(x, np.concatenate(target), alphas, sets=names, balance=balance)
    head.load_into(core.head)
    core.set_novelty(torch.as_tensor(x), novelty_components)
    ref = next((s for s in sets if s.name == scale), sets[0]) if scale else sets[0]
    core.config.mos_mean, core.config.mos_std = float(np.mean(ref.mos)), float(np.std(ref.mos))
    core.config.mos_range = ref.mos_range
    return core, {"rows": {s.name: len(s.mos) for s in sets}, "alpha": head.alpha, "align": align, "balance": balance,
                  "scale": ref.name}
