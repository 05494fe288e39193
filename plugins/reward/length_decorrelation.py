"""Reward–length decorrelation for reward modelling (pure torch, no transformers import).

- :func:`pearson_corr` and :func:`length_correlation_penalty`: a batch penalty on the correlation between a reward
  model's scores and response length, in the spirit of ODIN (Chen et al. 2024, https://arxiv.org/abs/2402.07319),
  which decorrelates a reward head from length with a Pearson-correlation loss.
- :func:`response_lengths`: lengths of chosen/rejected token sequences after their shared prefix.
"""

from __future__ import annotations

import torch

__all__ = ["length_correlation_penalty", "pearson_corr", "response_lengths"]


def pearson_corr(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Pearson correlation ρ = Σ(x−x̄)(y−ȳ) / sqrt(Σ(x−x̄)² · Σ(y−ȳ)²) of two (N,) tensors; 0 when either is constant.

    Differentiable in both arguments; ``eps`` guards the square root, and a zero-variance input gives exactly 0 (not
    NaN), since a constant length carries no length signal to decorrelate from.
    """
    x = x.float()
    y = y.float()
    dx, dy = x - x.mean(), y - y.mean()
    sxx, syy = (dx * dx).sum(), (dy * dy).sum()
    if x.numel() < 2 or sxx.item() == 0.0 or syy.item() == 0.0:
        return (dx * dy).sum() * 0.0
    return (dx * dy).sum() / torch.sqrt(sxx * syy + eps)


def length_correlation_penalty(rewards: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ρ² between rewards and lengths over the batch; returns ``(penalty, rho)``. Shapes: (N,), (N,) → scalars.

    ρ² rather than |ρ|: smooth at 0 (|ρ| has a kink there, so its gradient never vanishes and it jitters around zero
    correlation), and it leaves weak correlations nearly alone while pushing hard on strong ones. Lengths are data,
    not parameters, so the gradient only moves the rewards.
    """
    rho = pearson_corr(rewards, lengths.to(rewards.dtype))
    return rho * rho, rho


def response_lengths(
    chosen_ids: torch.Tensor, rejected_ids: torch.Tensor, chosen_mask: torch.Tensor, rejected_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token lengths of each chosen/rejected sequence after the prefix the pair shares.

    A pair shares its prompt (and chat-template header), so the part after the longest common prefix is the response
    (minus any identical opening words, which cancel in |y_w| − |y_l| anyway). This needs no prompt length from the
    collator. Shapes: ids and masks (B, T) (right-padded) → two (B,) long tensors.
    """
    width = min(chosen_ids.size(1), rejected_ids.size(1))
    both = chosen_mask[:, :width].bool() & rejected_mask[:, :width].bool()
    equal = (chosen_ids[:, :width] == rejected_ids[:, :width]) & both
    shared = equal.long().cumprod(dim=1).sum(dim=1)  # length of the common prefix
    return chosen_mask.sum(dim=1) - shared, rejected_mask.sum(dim=1) - shared
