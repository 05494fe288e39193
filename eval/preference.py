"""Preference metrics on held-out (prompt, chosen, rejected) pairs.

Two metrics, for two different questions:

1. **DPO implicit reward** (Rafailov et al. 2023, eq. 5; what TRL logs as ``rewards/accuracies`` and
   ``rewards/margins``), only for a DPO-trained policy ``pi`` with its reference ``pi_ref`` and ``beta``::

       r(x, y)  = beta * (log pi(y | x) - log pi_ref(y | x))          # summed over completion tokens
       accuracy = mean_i [ r(x_i, y_chosen_i) > r(x_i, y_rejected_i) ] # strict, ties count as wrong (as TRL)
       margin   = mean_i [ r(x_i, y_chosen_i) - r(x_i, y_rejected_i) ]

   For the reference itself every reward is 0, so the metric is meaningless for a base model: it measures how far
   training moved the policy *in the preferred direction*, not how good it is.

2. **Length-normalized log-likelihood accuracy**, for *any* model (base included), so base and trained models are
   compared on the same scale::

       s(x, y)  = log pi(y | x) / |y|                                  # mean log-prob per completion token
       accuracy = mean_i [ s(x_i, y_chosen_i) > s(x_i, y_rejected_i) ]

   The per-token normalization removes the trivial preference for shorter answers that summed log-probs have.

Both use the same completion tokens as training (chat-formatted prompt as context; content + end-of-turn marker
scored), computed by :func:`alignkit.eval.perplexity.completion_nlls`. Intervals are percentile bootstraps over pairs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any

import numpy as np

from alignkit.errors import AlignkitError
from alignkit.eval.stats import bootstrap_ci, mean_std_ci


def implicit_reward_metrics(
    policy_chosen: Sequence[float],
    policy_rejected: Sequence[float],
    ref_chosen: Sequence[float],
    ref_rejected: Sequence[float],
    beta: float,
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """DPO implicit-reward accuracy and margin from summed completion log-probs, each shape ``(n_pairs,)``.

    Returns ``{"n", "beta", "accuracy": {"value", "ci_low", "ci_high"}, "margin": {"mean", "std", "ci_low",
    "ci_high", "n"}, "chosen_reward", "rejected_reward"}``.
    """
    if beta <= 0:
        raise AlignkitError(f"beta: must be > 0 for the DPO implicit reward, got {beta}")
    pc, pr, rc, rr = (np.asarray(v, dtype=float) for v in (policy_chosen, policy_rejected, ref_chosen, ref_rejected))
    chosen = beta * (pc - rc)
    rejected = beta * (pr - rr)
    margins = chosen - rejected
    acc, low, high = bootstrap_ci((margins > 0).astype(float), np.mean, n_resamples=n_resamples, seed=seed)
    return {
        "n": int(margins.size),
        "beta": float(beta),
        "accuracy": {"value": acc, "ci_low": low, "ci_high": high},
        "margin": mean_std_ci(margins, n_resamples=n_resamples, seed=seed),
        "chosen_reward": float(chosen.mean()),
        "rejected_reward": float(rejected.mean()),
    }


def length_normalized_accuracy(
    logp_chosen: Sequence[float],
    n_chosen: Sequence[int],
    logp_rejected: Sequence[float],
    n_rejected: Sequence[int],
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Fraction of pairs whose chosen response has the higher mean token log-prob (strict), with a 95% CI.

    Returns ``{"n", "value", "ci_low", "ci_high", "mean_margin"}``; ``mean_margin`` is the mean of
    ``s(chosen) - s(rejected)`` in nats per token.
    """
    nc, nr = np.asarray(n_chosen, dtype=float), np.asarray(n_rejected, dtype=float)
    if (nc <= 0).any() or (nr <= 0).any():
        raise AlignkitError("preference: a chosen or rejected completion has no tokens")
    diff = np.asarray(logp_chosen, dtype=float) / nc - np.asarray(logp_rejected, dtype=float) / nr
    value, low, high = bootstrap_ci((diff > 0).astype(float), np.mean, n_resamples=n_resamples, seed=seed)
    return {"n": int(diff.size), "value": value, "ci_low": low, "ci_high": high, "mean_margin": float(diff.mean())}


def pair_logps(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Any],
    chosen: Sequence[Any],
    rejected: Sequence[Any],
    max_length: int = 1024,
    batch_size: int = 8,
    desc: str = "preference pairs",
) -> dict[str, np.ndarray]:
    """Summed completion log-probs and token counts: ``{"chosen", "rejected", "n_chosen", "n_rejected"}``,
    each shape ``(n_pairs,)``. Both sides go through one batched pass."""
    from alignkit.eval.perplexity import completion_nlls

    def nlls(rows_prompts, rows_completions):
        return completion_nlls(
            model, tokenizer, rows_prompts, rows_completions, max_length=max_length, batch_size=batch_size, desc=desc
        )

    return pair_logps_from(nlls, prompts, chosen, rejected)


def pair_logps_from(
    nlls: Callable[[list[Any], list[Any]], tuple[np.ndarray, np.ndarray]],
    prompts: Sequence[Any],
    chosen: Sequence[Any],
    rejected: Sequence[Any],
) -> dict[str, np.ndarray]:
    """:func:`pair_logps` from any ``nlls(prompts, completions) -> (summed NLL, token count)`` per row (the eval
    passes a cached one, :func:`alignkit.eval.score_cache.cached_completion_nlls`): chosen and rejected in one call."""
    n = len(prompts)
    nll, count = nlls(list(prompts) * 2, list(chosen) + list(rejected))
    return {"chosen": -nll[:n], "rejected": -nll[n:], "n_chosen": count[:n], "n_rejected": count[n:]}


def preference_from_logps(
    policy: dict[str, np.ndarray], ref: dict[str, np.ndarray] | None = None, beta: float | None = None
) -> dict[str, Any]:
    """Both metrics from :func:`pair_logps` outputs; the implicit reward needs ``ref`` and ``beta``.

    Returns ``{"length_normalized": {...}, "implicit_reward": {...} or None}``.
    """
    out: dict[str, Any] = {
        "length_normalized": length_normalized_accuracy(
            policy["chosen"], policy["n_chosen"], policy["rejected"], policy["n_rejected"]
        ),
        "implicit_reward": None,
    }
    if beta is not None and ref is not None:
        out["implicit_reward"] = implicit_reward_metrics(
            policy["chosen"], policy["rejected"], ref["chosen"], ref["rejected"], beta
        )
    return out


def reference_pair_logps(
    model: Any,
    tokenizer: Any,
    prompts,
    chosen,
    rejected,
    ref_model: Any = None,
    max_length: int = 1024,
    batch_size: int = 8,
) -> dict[str, np.ndarray]:
    """:func:`pair_logps` under the reference: ``ref_model`` if given, else ``model`` with its PEFT adapter disabled
    (``model.disable_adapter()``), which is exactly TRL's reference when DPO trains a PEFT model without an explicit
    ``ref_model``."""
    if ref_model is None and not hasattr(model, "disable_adapter"):
        raise AlignkitError("preference: the implicit reward needs a reference model or a PEFT adapter to disable")
    scorer = model if ref_model is None else ref_model
    with model.disable_adapter() if ref_model is None else nullcontext():
        return pair_logps(scorer, tokenizer, prompts, chosen, rejected, max_length, batch_size)


def preference_metrics(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Any],
    chosen: Sequence[Any],
    rejected: Sequence[Any],
    beta: float | None = None,
    ref_model: Any = None,
    max_length: int = 1024,
    batch_size: int = 8,
) -> dict[str, Any]:
    """Both preference metrics for one model; the implicit reward only when ``beta`` is given (reference: see
    :func:`reference_pair_logps`). Returns ``{"length_normalized": {...}, "implicit_reward": {...} or None}``."""
    if not prompts:
        raise AlignkitError("preference: the pair set is empty")
    policy = pair_logps(model, tokenizer, prompts, chosen, rejected, max_length, batch_size)
    ref = None
    if beta is not None:
        ref = reference_pair_logps(model, tokenizer, prompts, chosen, rejected, ref_model, max_length, batch_size)
    return preference_from_logps(policy, ref, beta)
