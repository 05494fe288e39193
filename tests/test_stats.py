"""Bootstrap intervals: exact small cases, vectorized == loop, and coverage on simulated data."""

import numpy as np
import pytest

from alignkit.errors import AlignkitError
from alignkit.eval.stats import bootstrap_ci, bootstrap_indices, mean_std_ci, paired_bootstrap_diff


def test_constant_values_give_a_degenerate_interval():
    assert bootstrap_ci([2.0, 2.0, 2.0]) == (2.0, 2.0, 2.0)


def test_interval_equals_the_quantiles_of_the_resampled_means():
    values = np.array([1.0, 4.0, 2.0, 8.0, 5.0])
    idx = bootstrap_indices(5, 200, seed=3)
    means = values[idx].mean(axis=1)
    expected = (4.0, *np.quantile(means, [0.05, 0.95]))  # point = (1 + 4 + 2 + 8 + 5) / 5 = 4
    assert bootstrap_ci(values, n_resamples=200, alpha=0.1, seed=3) == pytest.approx(expected, rel=1e-12)


def test_stat_without_axis_uses_the_row_loop_and_agrees():
    values = np.random.default_rng(0).normal(size=25)
    vectorized = bootstrap_ci(values, np.median, n_resamples=300, seed=5)
    looped = bootstrap_ci(values, lambda row: float(np.median(row)), n_resamples=300, seed=5)
    assert looped == pytest.approx(vectorized, rel=1e-12)
    assert vectorized != bootstrap_ci(values, np.median, n_resamples=300, seed=6)  # the seed matters


def _coverage(alpha: float, n_datasets: int = 200, n: int = 40) -> float:
    rng = np.random.default_rng(2024)
    true_mean = 3.0
    data = rng.normal(true_mean, 2.0, size=(n_datasets, n))
    hits = 0
    for i, row in enumerate(data):
        _, low, high = bootstrap_ci(row, alpha=alpha, seed=i)
        hits += low <= true_mean <= high
    return hits / n_datasets


def test_95_percent_interval_covers_the_true_mean_about_95_percent_of_the_time():
    assert 0.90 <= _coverage(0.05) <= 0.99


def test_50_percent_interval_covers_about_half_the_time():
    # the same check must be able to fail: a nominal 50% interval cannot land in [0.90, 0.99]
    assert 0.35 <= _coverage(0.5) <= 0.65


def test_paired_bootstrap_sees_a_small_shift_hidden_by_prompt_variance():
    rng = np.random.default_rng(7)
    difficulty = rng.normal(0.0, 5.0, size=200)  # shared by both systems on each prompt
    a = difficulty + 0.3 + rng.normal(0.0, 0.2, size=200)
    b = difficulty + rng.normal(0.0, 0.2, size=200)
    paired = paired_bootstrap_diff(a, b)
    assert paired["diff"] == pytest.approx(a.mean() - b.mean(), rel=1e-12)
    assert 0.2 < paired["low"] < paired["diff"] < paired["high"] < 0.4
    assert paired["p_value"] == 0.0  # no resample out of 1000 reaches a difference <= 0
    _, low_a, _ = bootstrap_ci(a)
    _, _, high_b = bootstrap_ci(b)
    assert low_a < high_b  # unpaired intervals overlap: only the paired test separates them


def test_mean_std_ci_summary():
    out = mean_std_ci([1.0, 2.0, 3.0, 4.0])
    # mean 2.5; sample std sqrt(((1.5^2 + 0.5^2) * 2) / 3) = sqrt(5/3)
    assert out["n"] == 4 and out["mean"] == 2.5
    assert out["std"] == pytest.approx((5 / 3) ** 0.5)
    assert 1.0 <= out["ci_low"] < 2.5 < out["ci_high"] <= 4.0
    assert mean_std_ci([7.0])["std"] == 0.0


def test_bad_inputs_raise_naming_the_row():
    with pytest.raises(AlignkitError, match="empty"):
        bootstrap_ci([])
    with pytest.raises(AlignkitError, match="row 1 is nan"):
        bootstrap_ci([1.0, float("nan")])
    with pytest.raises(AlignkitError, match="alpha"):
        bootstrap_ci([1.0, 2.0], alpha=1.5)
    with pytest.raises(AlignkitError, match="values_b: has 1 rows"):
        paired_bootstrap_diff([1.0, 2.0], [1.0])
