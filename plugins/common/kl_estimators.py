"""Monte-Carlo estimators of KL(π‖π_ref) from per-token log-probs (pure torch, no transformers import).

After John Schulman, "Approximating KL Divergence" (http://joschu.net/blog/kl-approx.html), from log-probs of tokens
sampled from π. With r = π_ref/π and log r = ref_logp − logp:

- k1 = −log r                      unbiased, high variance, can be negative per token;
- k2 = ½ (log r)²                  biased, low variance, always ≥ 0;
- k3 = (r − 1) − log r             unbiased, low variance, always ≥ 0 (GRPO's ``per_token_kl``).

:func:`kl_topk_analytic` is not a sampled-token estimator: it sums the per-position KL over the policy's top-k
next tokens (Rao-Blackwellized: the expectation over y_t given the sampled prefix, which the estimators above sample).

Which trainer reads which (and in what unit its ``kl_target`` is): see :mod:`alignkit.plugins.common.kl_fields`.
"""

from __future__ import annotations

import torch

__all__ = ["KL_ESTIMATORS", "kl_estimate", "kl_k1", "kl_k2", "kl_k3", "kl_topk_analytic"]


def kl_k1(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k1 = logp − ref_logp. Shapes: (B, T) → (B, T). Unbiased for KL(π‖π_ref); negative on some tokens."""
    return logp - ref_logp


def kl_k2(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k2 = ½ (logp − ref_logp)². Shapes: (B, T) → (B, T). Biased (exact to second order), always ≥ 0."""
    return 0.5 * (logp - ref_logp) ** 2


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k3 = exp(ref_logp − logp) − (ref_logp − logp) − 1. Shapes: (B, T) → (B, T). Unbiased, always ≥ 0.

    This is the estimator TRL's GRPO uses for ``per_token_kl``.
    """
    log_ratio = ref_logp - logp
    return torch.exp(log_ratio) - log_ratio - 1.0


KL_ESTIMATORS = {"k1": kl_k1, "k2": kl_k2, "k3": kl_k3}
TAIL_EPS = 1e-6  # ~8 fp32 steps of 1: a smaller top-k tail mass is rounding (kl_topk_analytic)


def kl_estimate(
    logp: torch.Tensor, ref_logp: torch.Tensor, estimator: str = "k3", clamp: float | None = None
) -> torch.Tensor:
    """Per-token KL estimate with one of ``k1``, ``k2``, ``k3``.

    Args:
        logp: (B, T) log-probs of the sampled tokens under the policy.
        ref_logp: (B, T) log-probs of the same tokens under the reference model.
        estimator: ``"k1"``, ``"k2"`` or ``"k3"`` (see the module docstring).
        clamp: if set, the *log-ratio* ``logp − ref_logp`` is clamped to ``[−clamp, clamp]`` before the estimator is
            applied (not the result). This bounds k3's ``exp`` so a token the reference finds far likelier than the
            policy cannot overflow to inf and poison the batch mean; it biases the estimate only on those tokens.

    Returns:
        (B, T) per-token estimates; reduce with :func:`~alignkit.plugins.common.masked.masked_mean` over the
        completion mask.
    """
    if estimator not in KL_ESTIMATORS:
        raise ValueError(f"estimator must be one of {sorted(KL_ESTIMATORS)}, got {estimator!r}")
    if clamp is not None:
        if not clamp > 0:
            raise ValueError(f"clamp must be > 0 or None, got {clamp!r}")
        # Clamping the difference and rebuilding ref_logp keeps each estimator's own formula untouched.
        ref_logp = logp - (logp - ref_logp).clamp(-clamp, clamp)
    return KL_ESTIMATORS[estimator](logp, ref_logp)


def kl_topk_analytic(top_logp: torch.Tensor, top_ref_logp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-position KL(π(·|y_<t) ‖ π_ref(·|y_<t)) from the policy's top-k next tokens, and the tail mass left out.

    Args:
        top_logp: (..., k) log π of the policy's k most likely next tokens at each position.
        top_ref_logp: (..., k) log π_ref of the same tokens.

    Returns:
        ``(kl, tail)``, each (...): with m = Σ_top π and m_ref = Σ_top π_ref,

            kl   = Σ_top π (log π − log π_ref) + (1 − m) log((1 − m) / (1 − m_ref))
            tail = 1 − m

    The first term is the KL's sum over the top k exactly; the second stands for the other tokens as if the ratio
    π/π_ref were constant there, which by the log-sum inequality never exceeds their true contribution, so ``kl``
    is a lower bound, exact when k covers the vocabulary (then m = m_ref = 1 and the term is 0). Summed over a
    sequence's positions it estimates the sequence KL without the sampled-token noise of k1/k3: the expectation
    over each y_t is taken exactly (over the top k), only the prefixes are sampled.
    """
    p = top_logp.exp()
    head = (p * (top_logp - top_ref_logp)).sum(-1)
    tail = (1.0 - p.sum(-1)).clamp(min=0.0)
    ref_tail = (1.0 - top_ref_logp.exp().sum(-1)).clamp(min=0.0)
    # A tail under TAIL_EPS is fp32 rounding of 1 − Σ (k covering the vocabulary): 0 · log(0 / x) = 0. A reference
    # tail is floored there too, so a near-empty one bounds the term instead of sending it to inf.
    eps = TAIL_EPS
    rest = torch.where(tail > eps, tail * (tail.clamp(min=eps).log() - ref_tail.clamp(min=eps).log()), 0.0)
    return head + rest, tail
