"""CORE's training losses: the rank term is zero exactly for a prediction in the target's order."""

import pytest
import torch

from realness.core.losses import core_loss, pairwise_rank_loss, plcc_loss


def test_rank_loss_is_zero_for_a_perfectly_ordered_prediction_and_positive_otherwise():
    target = torch.tensor([0.3, -1.0, 2.0, 0.0])
    assert pairwise_rank_loss(target * 5 - 1, target) == 0  # any increasing map keeps the order
    swapped = target.clone()
    swapped[[0, 3]] = swapped[[3, 0]]  # one pair out of order
    assert pairwise_rank_loss(swapped, target) > 0
    assert pairwise_rank_loss(-target, target) > pairwise_rank_loss(swapped, target)
    assert pairwise_rank_loss(torch.ones(3), torch.zeros(3)) == 0  # no ordered pair


def test_plcc_loss_and_the_combined_loss():
    t = torch.tensor([1.0, 2.0, 3.0, 5.0])
    assert plcc_loss(2 * t + 1, t) == pytest.approx(0.0, abs=1e-6)
    assert plcc_loss(-t, t) == pytest.approx(2.0, abs=1e-6)
    pred = torch.tensor([1.5, 1.0, 3.5, 4.0], requires_grad=True)
    mse = torch.nn.functional.mse_loss(pred, t)
    assert float(core_loss(pred, t, "mse")) == float(mse)
    assert float(core_loss(pred, t, "mse+rank", 2.0)) == pytest.approx(float(mse + 2 * pairwise_rank_loss(pred, t)))
    core_loss(pred, t, "mse+plcc").backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all()
    with pytest.raises(ValueError, match="loss must be one of"):
        core_loss(pred, t, "l1")
