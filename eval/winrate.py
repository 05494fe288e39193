"""Win rates from pairwise verdicts, raw and length-controlled (pure numpy, no transformers).

Verdicts compare system A against system B on the same prompt. Two encodings are accepted:

* ``scale="signed"`` (what :mod:`alignkit.eval.judges` returns): ``+1`` A wins, ``0`` tie, ``-1`` B wins;
* ``scale="prob"``: the probability that A is preferred, ``1`` / ``0.5`` / ``0`` or any soft value in ``[0, 1]``.

The encoding is a parameter, not guessed: a list of only 0s and 1s means opposite things in the two encodings.
Both become a preference label ``y = P(A preferred)`` in ``[0, 1]``; a win rate is ``mean(y)``, so a tie counts ½.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from alignkit.errors import AlignkitError
from alignkit.eval.stats import as_finite_1d, bootstrap_ci, bootstrap_indices

Scale = Literal["signed", "prob"]

# Tiny ridge on both coefficients: keeps the maximizer finite when the labels are separable by length or all equal,
# and moves a well-posed fit by O(l2) only (the score equation becomes mean(p - y) = -l2 * theta).
DEFAULT_L2 = 1e-4


def preference_labels(verdicts: Sequence[float], scale: Scale = "signed") -> np.ndarray:
    """Map verdicts to ``y = P(A preferred)``, shape ``(n,)``: signed ``v`` gives ``(v + 1) / 2``, prob is kept."""
    v = as_finite_1d(verdicts, "verdicts")
    if scale == "signed":
        bad = np.flatnonzero(~np.isin(v, (-1.0, 0.0, 1.0)))
        if bad.size:
            raise AlignkitError(
                f"verdicts: row {int(bad[0])} is {v[bad[0]]}; signed verdicts must be +1 (A), 0 (tie) or -1 (B)"
            )
        return (v + 1.0) / 2.0
    if scale == "prob":
        bad = np.flatnonzero((v < 0.0) | (v > 1.0))
        if bad.size:
            raise AlignkitError(f"verdicts: row {int(bad[0])} is {v[bad[0]]}; prob verdicts must lie in [0, 1]")
        return v
    raise AlignkitError(f"scale: must be 'signed' or 'prob', got {scale!r}")


def win_rate(
    verdicts: Sequence[float],
    scale: Scale = "signed",
    n_resamples: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict[str, float]:
    """Win rate of A over B with a tie worth ½: ``(wins + ties / 2) / n`` (for soft labels, ``mean(y)``).

    Returns ``{"n", "wins", "ties", "losses", "win_rate", "ci_low", "ci_high"}``; the interval is a percentile
    bootstrap over prompts (:func:`alignkit.eval.stats.bootstrap_ci`). Soft labels count as a win above ½ and a loss
    below ½.
    """
    y = preference_labels(verdicts, scale)
    point, low, high = bootstrap_ci(y, np.mean, n_resamples=n_resamples, alpha=alpha, seed=seed)
    return {
        "n": int(y.size),
        "wins": int(np.sum(y > 0.5)),
        "ties": int(np.sum(y == 0.5)),
        "losses": int(np.sum(y < 0.5)),
        "win_rate": point,
        "ci_low": low,
        "ci_high": high,
    }


def fit_soft_logistic(
    x: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None, l2: float = DEFAULT_L2, max_iter: int = 100
) -> np.ndarray:
    """Ridge logistic regression ``P(y=1 | x) = sigmoid(a + b x)`` with soft labels, for many weightings at once.

    Minimizes, for each row ``w`` of ``weights``::

        L(a, b) = sum_i w_i * [-y_i log p_i - (1 - y_i) log(1 - p_i)] / sum_i w_i + l2 / 2 * (a^2 + b^2)

    by Newton's method (IRLS) with step halving, so each iteration is monotone. Soft labels need no change to
    IRLS: gradient ``X^T W (p - y)``, Hessian ``X^T W diag(p (1 - p)) X``.

    Args:
        x: covariate, shape ``(n,)``.
        y: labels in ``[0, 1]``, shape ``(n,)``.
        weights: shape ``(B, n)`` of non-negative per-row weights (bootstrap counts); ``None`` means one unit
            weighting.
    Returns:
        Coefficients ``(a, b)``, shape ``(B, 2)``.
    """
    w = np.ones((1, x.size)) if weights is None else np.asarray(weights, dtype=float)
    w = w / w.sum(axis=1, keepdims=True)
    design = np.stack([np.ones_like(x), x], axis=1)  # (n, 2)
    theta = np.zeros((w.shape[0], 2))
    eye = np.eye(2)

    def objective(th: np.ndarray) -> np.ndarray:
        z = th @ design.T  # (B, n)
        # -y log sigmoid(z) - (1-y) log sigmoid(-z) = logaddexp(0, z) - y z, stable for large |z|
        return np.sum(w * (np.logaddexp(0.0, z) - y * z), axis=1) + 0.5 * l2 * np.sum(th**2, axis=1)

    current = objective(theta)
    for _ in range(max_iter):
        p = 1.0 / (1.0 + np.exp(-(theta @ design.T)))
        grad = (w * (p - y)) @ design + l2 * theta  # (B, 2)
        hess = np.einsum("bn,ni,nj->bij", w * p * (1 - p), design, design) + l2 * eye  # (B, 2, 2)
        step = np.linalg.solve(hess, grad[..., None])[..., 0]
        scale = np.ones(theta.shape[0])
        for _ in range(30):
            trial = theta - scale[:, None] * step
            new = objective(trial)
            worse = new > current + 1e-15
            if not worse.any():
                break
            scale = np.where(worse, scale / 2, scale)
        accept = new <= current + 1e-15  # rows that found no descent within 30 halvings are at their optimum
        theta = np.where(accept[:, None], trial, theta)
        current = np.where(accept, new, current)
        if np.max(np.abs(np.where(accept[:, None], scale[:, None] * step, 0.0))) < 1e-10:
            break
    return theta


def length_controlled_win_rate(
    verdicts: Sequence[float],
    len_a: Sequence[float],
    len_b: Sequence[float],
    scale: Scale = "signed",
    n_resamples: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    l2: float = DEFAULT_L2,
) -> dict[str, float]:
    """Length-controlled win rate: the win rate predicted when A and B are equally long.

    Model (after the idea of AlpacaEval 2's LC win rate; Dubois et al. 2024, "Length-Controlled AlpacaEval")::

        x_i = (len_a_i - len_b_i) / sd(len_a - len_b)        # normalized length difference
        P(A preferred | x) = sigmoid(a + b * x)               # fitted to soft labels y in {0, 0.5, 1} or [0, 1]
        LC win rate = sigmoid(a)                              # the prediction at x = 0

    Fitted by :func:`fit_soft_logistic`; the interval refits on ``n_resamples`` bootstrap resamples of the prompts
    (all resamples in one batched Newton solve), with ``sd`` fixed to the full-sample value.

    Deviations from AlpacaEval 2: they fit a GLM across *many* models with a per-model term, a per-instruction
    difficulty term, and a length term ``tanh(len diff / sd)``, then read off the prediction with the length term
    zeroed. Here there is one pair of systems, no instruction term, and an untransformed (linear) length term, so
    extreme length gaps are extrapolated linearly on the logit scale rather than saturating.

    Returns ``{"n", "lc_win_rate", "ci_low", "ci_high", "win_rate", "intercept", "slope", "length_sd"}``;
    ``slope`` is per standard deviation of the length difference.
    """
    y = preference_labels(verdicts, scale)
    la = as_finite_1d(len_a, "len_a")
    lb = as_finite_1d(len_b, "len_b")
    for name, arr in (("len_a", la), ("len_b", lb)):
        if arr.size != y.size:
            raise AlignkitError(f"{name}: has {arr.size} rows but verdicts has {y.size}; they must align")
    diff = la - lb
    sd = float(np.std(diff))
    length_sd = sd if sd > 0 else 1.0  # all pairs equally long: x == 0, the slope is pinned to 0 by the ridge
    x = diff / length_sd

    a, b = fit_soft_logistic(x, y, l2=l2)[0]
    idx = bootstrap_indices(y.size, n_resamples, seed)
    counts = np.zeros((n_resamples, y.size))
    np.add.at(counts, (np.arange(n_resamples)[:, None], idx), 1.0)
    boot = 1.0 / (1.0 + np.exp(-fit_soft_logistic(x, y, weights=counts, l2=l2)[:, 0]))
    low, high = np.quantile(boot, [alpha / 2, 1 - alpha / 2])
    return {
        "n": int(y.size),
        "lc_win_rate": float(1.0 / (1.0 + np.exp(-a))),
        "ci_low": float(low),
        "ci_high": float(high),
        "win_rate": float(np.mean(y)),
        "intercept": float(a),
        "slope": float(b),
        "length_sd": length_sd,
    }


def verdict_agreement(verdicts: Sequence[float], reference: Sequence[float]) -> dict[str, float | int | None]:
    """How often a judge gives the same signed verdict as a reference judge (e.g. the grader) on the same pairs.

    Rows are aligned from the start; a judge that read fewer rows (``llm_max_prompts``) is compared on those::

        value          = mean_i [v_i == r_i]                     over n = min(len(v), len(r)) pairs
        decisive_value = mean_i [v_i == r_i  |  r_i != 0]        over the pairs the reference did not tie

    A binary grader ties whenever both answers are right (or both wrong), and a reward model almost never ties, so
    ``value`` is bounded by the grader's decisive share; ``decisive_value`` asks the sharper question. Returns
    ``{"value", "n", "decisive_value", "decisive_n"}`` (a value is None when its n is 0).
    """
    n = min(len(verdicts), len(reference))
    v, r = np.asarray(verdicts[:n], dtype=float), np.asarray(reference[:n], dtype=float)
    decisive = r != 0
    same = v == r
    return {
        "value": float(same.mean()) if n else None,
        "n": int(n),
        "decisive_value": float(same[decisive].mean()) if decisive.any() else None,
        "decisive_n": int(decisive.sum()),
    }
