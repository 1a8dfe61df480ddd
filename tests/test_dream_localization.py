import math

import numpy as np
import pytest

from realness.dream.localization import (
    average_precision,
    best_f1_iou,
    f1_iou,
    localization_metrics,
    pixel_auroc,
    pointing_game,
)

SCORES = np.array([[0.9, 0.8, 0.1],
                   [0.7, 0.2, 0.1],
                   [0.4, 0.3, 0.05]])
MASK = np.array([[1, 1, 0],
                 [0, 1, 0],
                 [0, 0, 0]], dtype=bool)


def test_auroc_by_hand():
    # positives 0.9, 0.8, 0.2; negatives 0.1, 0.7, 0.1, 0.4, 0.3, 0.05.
    # Pairs won: 0.9 -> 6, 0.8 -> 6, 0.2 -> 3 (0.1, 0.1, 0.05) => 15 of 18.
    assert pixel_auroc(SCORES, MASK) == pytest.approx(15 / 18)
    tie = np.array([[0.5, 0.5]])
    assert pixel_auroc(tie, np.array([[1, 0]])) == pytest.approx(0.5)
    assert math.isnan(pixel_auroc(SCORES, np.zeros_like(MASK)))


def test_average_precision_by_hand():
    # Ranked: 0.9(+) 0.8(+) 0.7(-) 0.4(-) 0.3(-) 0.2(+) ...: precisions at the hits 1, 1, 3/6.
    assert average_precision(SCORES, MASK) == pytest.approx((1 + 1 + 0.5) / 3)
    # All pixels tied: one threshold, precision = positive share.
    assert average_precision(np.ones((2, 2)), np.array([[1, 0], [0, 0]])) == pytest.approx(0.25)


def test_f1_iou_by_hand():
    f1, iou = f1_iou(SCORES, MASK, 0.5)  # predicted 0.9, 0.8, 0.7: tp 2, fp 1, fn 1
    assert f1 == pytest.approx(2 * 2 / (2 * 2 + 1 + 1)) and iou == pytest.approx(2 / 4)
    best, best_iou, t = best_f1_iou(SCORES, MASK)
    assert best == pytest.approx(0.8) and t == pytest.approx(0.8) and best_iou == pytest.approx(2 / 3)


def test_pointing_game():
    assert pointing_game(SCORES, MASK)
    off = np.zeros((5, 5))
    off[0, 4] = 1.0
    mask = np.zeros((5, 5), bool)
    mask[0, 2] = True
    assert not pointing_game(off, mask)
    assert pointing_game(off, mask, tolerance=2)
    assert localization_metrics(SCORES, MASK)["pointing_hit"] == 1.0


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differs from mask"):
        pixel_auroc(SCORES, MASK[:2])
