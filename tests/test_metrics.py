import math

import numpy as np
import pytest
from scipy import stats

from realness import metrics


@pytest.fixture
def pairs():
    rng = np.random.default_rng(3)
    mos = rng.uniform(10, 90, 60)
    pred = 0.02 * mos + rng.normal(0, 0.3, 60)
    return pred, mos


def test_correlations_equal_scipy(pairs):
    pred, mos = pairs
    out = metrics.correlations(pred, mos)
    assert out["srocc"] == pytest.approx(stats.spearmanr(pred, mos).statistic, abs=1e-12)
    assert out["krcc"] == pytest.approx(stats.kendalltau(pred, mos).statistic, abs=1e-12)
    assert out["plcc"] == pytest.approx(stats.pearsonr(pred, mos).statistic, abs=1e-12)
    assert out["rmse"] == pytest.approx(float(np.sqrt(np.mean((pred - mos) ** 2))))
    assert out["n"] == 60


def test_fixed_values():
    pred, mos = [1, 2, 3, 4, 5], [5, 6, 7, 8, 7]
    assert metrics.srocc(pred, mos) == pytest.approx(0.8207826816681233)
    assert metrics.krcc(pred, mos) == pytest.approx(0.7378647873726218)
    assert metrics.plcc(pred, mos) == pytest.approx(0.8320502943378437)
    assert metrics.rmse([1, 2, 3], [1, 2, 5]) == pytest.approx(math.sqrt(4 / 3))


@pytest.mark.parametrize("params", [4, 5])
def test_logistic_plcc_undoes_a_monotone_distortion(params):
    # A strictly monotone but non-linear transform of a logistic relation: raw PLCC drops, the
    # logistic-fitted PLCC recovers it, and rank metrics do not move at all.
    rng = np.random.default_rng(0)
    x = rng.uniform(-4, 4, 200)
    mos = 10 + 80 / (1 + np.exp(-1.5 * x)) + rng.normal(0, 1.0, 200)
    warped = np.exp(x)
    raw, fitted = metrics.correlations(x, mos, params), metrics.correlations(warped, mos, params)
    assert fitted["srocc"] == pytest.approx(raw["srocc"], abs=1e-12)
    assert fitted["plcc"] < raw["plcc"] - 0.1
    assert fitted["plcc_logistic"] > fitted["plcc"] + 0.1
    assert fitted["plcc_logistic"] > 0.97
    assert fitted["rmse_logistic"] < 3.0


def test_logistic_fit_is_invariant_to_affine_rescaling_of_predictions(pairs):
    pred, mos = pairs
    a = metrics.correlations(pred, mos)["plcc_logistic"]
    b = metrics.correlations(3.0 * pred - 7.0, mos)["plcc_logistic"]
    assert a == pytest.approx(b, abs=1e-4)


def test_bootstrap_interval_contains_point_and_narrows_with_n():
    rng = np.random.default_rng(1)
    widths = []
    for n in (40, 400):
        mos = rng.normal(size=n)
        pred = mos + rng.normal(0, 1, n)
        lo, hi = metrics.bootstrap_ci(pred, mos, "srocc", n_boot=300)
        assert lo <= metrics.srocc(pred, mos) <= hi
        widths.append(hi - lo)
    assert widths[1] < widths[0] / 2


def test_mean_std_over_runs():
    out = metrics.mean_std([{"srocc": 0.5, "n": 3}, {"srocc": 0.7, "n": 3}])
    assert out["srocc"][0] == pytest.approx(0.6)
    assert out["srocc"][1] == pytest.approx(np.std([0.5, 0.7], ddof=1))
    assert "n" not in out


@pytest.mark.parametrize(
    "pred,mos,msg",
    [([1, 2], [1, 2], "at least 3"), ([1, 2, 3], [1, 2], "differ"), ([1, 2, float("nan")], [1, 2, 3], "finite")],
)
def test_bad_inputs_raise(pred, mos, msg):
    with pytest.raises(ValueError, match=msg):
        metrics.correlations(pred, mos)
