"""Raw and length-controlled win rates: hand counts, the soft-label fit, and synthetic data with a known truth."""

import numpy as np
import pytest

from alignkit.errors import AlignkitError
from alignkit.eval.winrate import fit_soft_logistic, length_controlled_win_rate, preference_labels, win_rate


def test_win_rate_counts_ties_as_half():
    out = win_rate([1, 1, 0, -1])
    # (2 wins + 1 tie / 2) / 4 = 0.625
    assert (out["wins"], out["ties"], out["losses"], out["n"]) == (2, 1, 1, 4)
    assert out["win_rate"] == 0.625
    assert 0.0 <= out["ci_low"] <= 0.625 <= out["ci_high"] <= 1.0


def test_prob_scale_is_the_same_game():
    assert win_rate([1, 0.5, 0, 1], scale="prob")["win_rate"] == 0.625  # (1 + 0.5 + 0 + 1) / 4
    assert win_rate([0, 0, 1], scale="prob")["win_rate"] == pytest.approx(1 / 3)
    assert win_rate([0, 0, 1], scale="signed")["win_rate"] == pytest.approx(2 / 3)  # (0.5 + 0.5 + 1) / 3


def test_bad_verdicts_name_the_row():
    with pytest.raises(AlignkitError, match="row 2 is 0.5"):
        preference_labels([1, -1, 0.5])
    with pytest.raises(AlignkitError, match="row 0 is 2.0"):
        preference_labels([2, 0], scale="prob")
    with pytest.raises(AlignkitError, match="len_b: has 2 rows"):
        length_controlled_win_rate([1, 0, -1], [1, 2, 3], [1, 2])


def test_soft_logistic_fit_matches_a_generic_optimizer():
    optimize = pytest.importorskip("scipy.optimize")
    rng = np.random.default_rng(0)
    x = rng.normal(size=50)
    y = rng.choice([0.0, 0.5, 1.0], size=50)
    l2 = 0.01

    def loss(theta):
        z = theta[0] + theta[1] * x
        return np.mean(np.logaddexp(0, z) - y * z) + 0.5 * l2 * theta @ theta

    expected = optimize.minimize(loss, np.zeros(2), method="BFGS", options={"gtol": 1e-10}).x
    assert fit_soft_logistic(x, y, l2=l2)[0] == pytest.approx(expected, abs=1e-6)


def test_soft_logistic_intercept_only_recovers_the_mean_label():
    # x == 0 everywhere: sigmoid(a) = mean(y) = (1 + 1 + 0.5 + 0) / 4 = 0.625, up to the 1e-4 ridge
    a, b = fit_soft_logistic(np.zeros(4), np.array([1.0, 1.0, 0.5, 0.0]))[0]
    assert 1 / (1 + np.exp(-a)) == pytest.approx(0.625, abs=1e-3)
    assert b == 0.0


def test_soft_logistic_stays_finite_on_separable_and_all_win_data():
    theta = fit_soft_logistic(np.array([-2.0, -1.0, 1.0, 2.0]), np.array([0.0, 0.0, 1.0, 1.0]))
    assert np.all(np.isfinite(theta)) and abs(theta[0, 0]) < 1e-6  # symmetric data: boundary at x = 0
    a = fit_soft_logistic(np.array([0.3, -0.1]), np.array([1.0, 1.0]))[0, 0]
    assert np.isfinite(a) and 1 / (1 + np.exp(-a)) > 0.99


def _lengths(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    # A is longer on average (uniform 200..499 vs 100..399 tokens): P(len_a > len_b) is about 0.78
    return rng.integers(200, 500, n), rng.integers(100, 400, n)


def test_lc_win_rate_removes_a_pure_length_preference():
    rng = np.random.default_rng(0)
    len_a, len_b = _lengths(rng, 1000)
    verdicts = np.sign(len_a - len_b)  # the longer response always wins; equal length is a tie
    out = length_controlled_win_rate(verdicts, len_a, len_b, n_resamples=200)
    assert out["win_rate"] > 0.75  # raw: A looks much better only because it is longer
    assert abs(out["lc_win_rate"] - 0.5) < 0.08  # controlled: a coin flip at equal length
    assert out["ci_low"] < 0.5 < out["ci_high"]
    assert out["slope"] > 5  # per sd of the length gap: a steep length effect


def test_lc_win_rate_recovers_a_noisy_length_only_preference():
    rng = np.random.default_rng(1)
    len_a, len_b = _lengths(rng, 1000)
    x = (len_a - len_b) / np.std(len_a - len_b)
    verdicts = np.where(rng.random(1000) < 1 / (1 + np.exp(-1.5 * x)), 1, -1)  # truth: intercept 0, slope 1.5
    out = length_controlled_win_rate(verdicts, len_a, len_b, n_resamples=200)
    assert out["win_rate"] > 0.65
    assert abs(out["lc_win_rate"] - 0.5) < 0.05
    assert out["slope"] == pytest.approx(1.5, abs=0.3)


def test_lc_and_raw_agree_when_preferences_ignore_length():
    rng = np.random.default_rng(2)
    len_a, len_b = _lengths(rng, 1000)
    verdicts = np.where(rng.random(1000) < 0.7, 1, -1)  # A preferred with p = 0.7 whatever the lengths
    out = length_controlled_win_rate(verdicts, len_a, len_b, n_resamples=200)
    assert abs(out["win_rate"] - 0.7) < 0.03
    assert abs(out["lc_win_rate"] - out["win_rate"]) < 0.03
    assert out["ci_low"] < 0.7 < out["ci_high"]
    assert abs(out["slope"]) < 0.2


def test_equal_lengths_reduce_to_the_raw_win_rate():
    out = length_controlled_win_rate([1, 1, 0, -1], [5, 5, 5, 5], [5, 5, 5, 5], n_resamples=50)
    assert out["lc_win_rate"] == pytest.approx(0.625, abs=1e-3)  # x == 0: same as the intercept-only fit
    assert out["length_sd"] == 1.0
