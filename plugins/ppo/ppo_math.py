"""Pure maths of RLHF-PPO (torch only, no transformers): rewards, GAE, whitening, clipped losses, diagnostics.

Shapes: B sequences, T completion positions. ``mask`` is (B, T), 1 on real completion tokens and 0 on right padding
(and on tokens after EOS). Every reduction is over ``mask`` only, so padded positions may hold anything.

References: Schulman et al. 2017, "Proximal Policy Optimization Algorithms" (https://arxiv.org/abs/1707.06347);
Schulman et al. 2016, "High-Dimensional Continuous Control Using Generalized Advantage Estimation"
(https://arxiv.org/abs/1506.02438); Ziegler et al. 2019 (https://arxiv.org/abs/1909.08593) for the per-token
KL-shaped reward; Huang et al. 2024, "The N+ Implementation Details of RLHF with PPO" (https://arxiv.org/abs/2403.17031)
for the conventions followed here (reward at the last valid token, whitening over valid tokens, clipped value loss).
"""

from __future__ import annotations

import torch

from alignkit.plugins.common.masked import masked_mean

__all__ = [
    "apply_missing_eos_penalty",
    "clipped_policy_loss",
    "clipped_value_loss",
    "explained_variance",
    "gae",
    "masked_mean_var",
    "masked_whiten",
    "per_token_rewards",
]


def masked_mean_var(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and population variance of ``x`` over valid tokens: μ = Σ m·x / Σ m, σ² = Σ m·(x − μ)² / Σ m."""
    mean = masked_mean(x, mask)
    return mean, masked_mean((x - mean) ** 2, mask)


def masked_whiten(
    x: torch.Tensor,
    mask: torch.Tensor,
    shift_mean: bool = True,
    moments: tuple[torch.Tensor, torch.Tensor] | None = None,
    eps: float = 1e-8,
) -> torch.Tensor:
    """Whiten over valid tokens: (x − μ) / √(σ² + eps), or x / √(σ² + eps) + μ when ``shift_mean=False``.

    Args:
        x: (B, T) values; mask: (B, T).
        moments: (μ, σ²) computed elsewhere (e.g. across processes); default :func:`masked_mean_var` of ``x``.

    Returns (B, T) with padded positions set to 0. Deviation: population variance (÷N), not Bessel's ÷(N−1).
    """
    mean, var = masked_mean_var(x, mask) if moments is None else moments
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return torch.where(mask.bool(), out, torch.zeros_like(out))


def per_token_rewards(kl: torch.Tensor, scores: torch.Tensor, mask: torch.Tensor, beta: float) -> torch.Tensor:
    """r_t = −β·kl_t on every valid token, plus the sequence score on the last valid token.

    Args:
        kl: (B, T) per-token KL estimates (k1 or k3 of the rollout policy against the reference).
        scores: (B,) sequence scores (weighted reward functions/models, shaping included).
        mask: (B, T) right-padded completion mask; a row with no valid token receives no score.

    Returns:
        (B, T) rewards, 0 on padding.
    """
    mask = mask.bool()
    rewards = torch.where(mask, -beta * kl, torch.zeros_like(kl))
    lengths = mask.sum(1)
    rows = torch.nonzero(lengths > 0).squeeze(1)
    rewards[rows, lengths[rows] - 1] += scores[rows].to(rewards.dtype)
    return rewards


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation over the completion tokens, returns = advantages + values.

    Backwards over t, with m_t the mask and V beyond the last valid token taken as 0 (the episode ends there)::

        δ_t = r_t + γ·m_{t+1}·V_{t+1} − V_t
        A_t = δ_t + γ·λ·m_{t+1}·A_{t+1}

    Args:
        rewards, values, mask: (B, T); ``values[b, t]`` is V(prompt + completion[:t]), the value *before* token t.

    Returns:
        (advantages, returns), both (B, T) and 0 on padding.
    """
    mask = mask.to(values.dtype)
    values = values * mask
    rewards = rewards * mask
    T = rewards.size(1)
    advantages = torch.zeros_like(rewards)
    next_value = torch.zeros_like(rewards[:, 0])
    next_adv = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(T)):
        # next_value/next_adv are already 0 past the end of the sequence, because values/advantages are masked.
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_adv = (delta + gamma * lam * next_adv) * mask[:, t]
        advantages[:, t] = next_adv
        next_value = values[:, t]
    return advantages, (advantages + values) * mask


def clipped_policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_low: float = 0.2,
    clip_high: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO clipped surrogate, mean over valid tokens.

    ρ_t = exp(logp_t − old_logp_t);  L = mean_t max(−A_t·ρ_t, −A_t·clip(ρ_t, 1 − ε_low, 1 + ε_high)).

    Args:
        logp: (B, T) log-probs under the current policy (with grad); old_logp: (B, T) at rollout time.
        advantages: (B, T); clip_high defaults to ``clip_low`` (symmetric clipping).

    Returns:
        (loss scalar, clip fraction): the fraction of valid tokens where the clipped branch is the larger one (its
        gradient is zero there).
    """
    clip_high = clip_low if clip_high is None else clip_high
    ratio = torch.exp(logp - old_logp)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    return loss, masked_mean((clipped > unclipped).float(), mask)


def clipped_value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, clip: float = 0.2
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipped value loss, mean over valid tokens.

    V^clip_t = old_V_t + clip(V_t − old_V_t, −ε_v, ε_v);  L_V = ½·mean_t max((V_t − R_t)², (V^clip_t − R_t)²).

    Returns:
        (loss scalar, value clip fraction): fraction of valid tokens where the clipped error is the larger one.
    """
    clipped_values = old_values + torch.clamp(values - old_values, -clip, clip)
    err_unclipped = (values - returns) ** 2
    err_clipped = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(err_unclipped, err_clipped), mask)
    return loss, masked_mean((err_clipped > err_unclipped).float(), mask)


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """1 − Var(R − V) / Var(R) over valid tokens (1 = perfect critic, 0 = no better than a constant, < 0 = worse).

    A constant return (Var(R) = 0) gives 0 rather than NaN.
    """
    _, var_returns = masked_mean_var(returns, mask)
    _, var_error = masked_mean_var(returns - values, mask)
    if var_returns <= 0:
        return torch.zeros((), dtype=values.dtype, device=values.device)
    return 1.0 - var_error / var_returns


def apply_missing_eos_penalty(scores: torch.Tensor, ended: torch.Tensor, penalty: float | None) -> torch.Tensor:
    """scores − penalty on sequences that did not end with EOS (truncated at ``max_completion_length``).

    Args:
        scores: (B,); ended: (B,) bool, True if the completion contains an EOS token; penalty: ≥ 0 or None (off).
    """
    if not penalty:
        return scores
    return scores - penalty * (~ended.bool()).to(scores.dtype)
