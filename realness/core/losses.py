"""Training losses for CORE: MSE on z-scored MOS, optionally plus a rank- or correlation-aware term.

IQA models are judged by rank and linear correlation, not by squared error; the field adds terms that
target those directly (pairwise margin ranking as in RankIQA / DB-CNN-style training, and a
differentiable PLCC as in Li et al., "Norm-in-Norm", 2020).

    pairwise_rank_loss(pred, target)   mean hinge over pairs the target orders: 0 iff pred orders them the same way
    plcc_loss(pred, target)            1 - Pearson correlation of the batch (0 when perfectly linear)
    core_loss(pred, target, kind, w)   "mse", "mse+rank" or "mse+plcc": MSE + w * term
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

LOSSES = ("mse", "mse+rank", "mse+plcc")


def pairwise_rank_loss(pred: torch.Tensor, target: torch.Tensor, margin: float = 0.0) -> torch.Tensor:
    """Mean of relu(margin - (pred_i - pred_j)) over the pairs with target_i > target_j.

    With margin 0 it is exactly 0 for a prediction in the target's order and positive for any swapped
    pair; ties in the target contribute nothing. A batch without an ordered pair gives 0.
    """
    diff_t = target[:, None] - target[None, :]
    diff_p = pred[:, None] - pred[None, :]
    ordered = diff_t > 0
    if not ordered.any():
        return pred.sum() * 0.0
    return F.relu(margin - diff_p[ordered]).mean()


def plcc_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """1 - Pearson's r between prediction and target over the batch (in [0, 2])."""
    p, t = pred - pred.mean(), target - target.mean()
    r = (p * t).sum() / (p.norm() * t.norm() + eps)
    return 1.0 - r


def core_loss(pred: torch.Tensor, target: torch.Tensor, kind: str = "mse", weight: float = 1.0) -> torch.Tensor:
    """The training loss `kind` (one of LOSSES) of predicted vs true z-scores."""
    if kind not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {kind!r}")
    loss = F.mse_loss(pred, target)
    if kind == "mse+rank":
        loss = loss + weight * pairwise_rank_loss(pred, target)
    elif kind == "mse+plcc" and len(pred) > 1:
        loss = loss + weight * plcc_loss(pred, target)
    return loss
