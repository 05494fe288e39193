"""Monte-Carlo estimators of KL(π‖π_ref) from per-token log-probs (pure torch, no transformers import).

After John Schulman, "Approximating KL Divergence" (http://joschu.net/blog/kl-approx.html), from log-probs of tokens
sampled from π. With r = π_ref/π and log r = ref_logp − logp:

- k1 = −log r                      unbiased, high variance, can be negative per token;
- k2 = ½ (log r)²                  biased, low variance, always ≥ 0;
- k3 = (r − 1) − log r             unbiased, low variance, always ≥ 0 (GRPO's ``per_token_kl``).

Which trainer reads which (and in what unit its ``kl_target`` is): see :mod:`alignkit.plugins.common.kl_fields`.
"""

from __future__ import annotations

import torch

__all__ = ["KL_ESTIMATORS", "kl_estimate", "kl_k1", "kl_k2", "kl_k3"]


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
