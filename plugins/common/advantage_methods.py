"""Group-relative advantage normalizations for GRPO-style trainers (pure torch, no transformers import).

Every method maps rewards of shape (N,) to advantages of shape (N,). Rewards are laid out as TRL lays them out:
``N = num_prompts × group_size`` with each prompt's ``group_size`` completions in one consecutive block, i.e.
``rewards.view(-1, group_size)`` is (num_prompts, group_size).

Shared conventions (they match TRL 1.16's ``GRPOTrainer`` / ``RLOOTrainer``):

- **NaN rewards** (every reward function returned ``None``) are left out of every group statistic, and their
  advantage is 0: TRL uses ``nanmean``/``nanstd`` and finishes with ``nan_to_num(advantages, nan=0.0)``.
- **Standard deviations are unbiased** (Bessel, ``n − 1``) over the non-NaN entries, as TRL's ``nanstd``; ``eps``
  (default ``1e-4``, TRL's constant) is added to the std, not to the variance.
- **Zero spread**: a group whose valid rewards are all equal (or which has fewer than two valid rewards) gets advantage
  0 for every method. TRL gets ≈0 there from ``0 / (0 + 1e-4)``; we return an exact 0 so rounding in the group mean
  cannot leak a ±1e-12/1e-4 signal.

Use :func:`normalize` (validated dispatcher) or the registry :data:`ADVANTAGE_METHODS`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from alignkit.plugins.common.group_stats import average_ranks, finish_advantages, grouped_rewards, nanstd

__all__ = ["ADVANTAGE_METHODS", "available_methods", "normalize"]

DEFAULT_EPS = 1e-4  # TRL's constant in `advantages / (std_rewards + 1e-4)`


def group_std(rewards: torch.Tensor, group_size: int, eps: float = DEFAULT_EPS) -> torch.Tensor:
    """A_i = (r_i − mean_g) / (std_g + eps), std unbiased within the group.

    GRPO, Shao et al. 2024, "DeepSeekMath" (https://arxiv.org/abs/2402.03300), eq. in §4.1.2; equals TRL 1.16
    ``GRPOConfig(scale_rewards="group")`` (the default), including its unbiased std and eps=1e-4.
    Shapes: rewards (N,) → (N,).
    """
    grouped, valid, spread = grouped_rewards(rewards, group_size)
    mean = torch.nanmean(grouped, dim=1, keepdim=True)
    std = nanstd(grouped, dim=1, keepdim=True)
    return finish_advantages((grouped - mean) / (std + eps), valid, spread)


def batch_std(rewards: torch.Tensor, group_size: int, eps: float = DEFAULT_EPS) -> torch.Tensor:
    """A_i = (r_i − mean_g) / (std_batch + eps): group mean as baseline, one unbiased std over the whole batch.

    Hu et al. 2025, "REINFORCE++" (https://arxiv.org/abs/2501.03262) argue the batch std is less noisy than the
    per-group one; equals TRL 1.16 ``GRPOConfig(scale_rewards="batch")``. Note TRL takes the std over the *gathered*
    batch of all processes; pass the same tensor to match it. Shapes: rewards (N,) → (N,).
    """
    grouped, valid, spread = grouped_rewards(rewards, group_size)
    mean = torch.nanmean(grouped, dim=1, keepdim=True)
    std = nanstd(grouped)
    return finish_advantages((grouped - mean) / (std + eps), valid, spread)


def mean_only(rewards: torch.Tensor, group_size: int, eps: float = DEFAULT_EPS) -> torch.Tensor:
    """A_i = r_i − mean_g (no std scaling; ``eps`` is unused).

    Dr. GRPO, Liu et al. 2025, "Understanding R1-Zero-Like Training" (https://arxiv.org/abs/2503.20783), which shows
    the per-group std division biases updates towards too-easy/too-hard prompts; equals TRL 1.16
    ``GRPOConfig(scale_rewards="none")``. Shapes: rewards (N,) → (N,).
    """
    grouped, valid, spread = grouped_rewards(rewards, group_size)
    return finish_advantages(grouped - torch.nanmean(grouped, dim=1, keepdim=True), valid, spread)


def rloo(rewards: torch.Tensor, group_size: int, eps: float = DEFAULT_EPS) -> torch.Tensor:
    """A_i = r_i − mean_{j≠i} r_j = r_i − (Σ_g r − r_i) / (n_g − 1), leave-one-out baseline (``eps`` unused).

    REINFORCE Leave-One-Out, Kool et al. 2019 / Ahmadian et al. 2024, "Back to Basics"
    (https://arxiv.org/abs/2402.14740). Equals TRL 1.16 ``RLOOTrainer``'s baseline with ``normalize_advantages=False``:
    NaN siblings are dropped from the sum and from n_g. For a fully valid group it is ``G/(G−1)·(r_i − mean_g)``.
    Shapes: rewards (N,) → (N,).
    """
    grouped, valid, spread = grouped_rewards(rewards, group_size)
    count = valid.sum(dim=1, keepdim=True)
    total = torch.nansum(grouped, dim=1, keepdim=True)
    return finish_advantages(grouped - (total - grouped) / (count - 1), valid, spread)


def rank(rewards: torch.Tensor, group_size: int, eps: float = DEFAULT_EPS) -> torch.Tensor:
    """A_i = (rank_i − 1) / (n_g − 1) − 0.5: centred ranks in [−0.5, 0.5] (``eps`` unused).

    rank_i is the 1-based rank of r_i among the n_g valid rewards of its group, ties sharing their average rank, so
    the group's advantages sum to 0 and only the reward *order* matters (robust to reward scale and outliers).
    Centred-rank fitness shaping as in Salimans et al. 2017, "Evolution Strategies as a Scalable Alternative to RL"
    (https://arxiv.org/abs/1703.03864). Shapes: rewards (N,) → (N,).
    """
    grouped, valid, spread = grouped_rewards(rewards, group_size)
    adv = torch.zeros_like(grouped)
    for g in torch.nonzero(spread.squeeze(1)).flatten().tolist():
        idx = valid[g]
        n = int(idx.sum())
        adv[g, idx] = (average_ranks(grouped[g, idx]) - 1) / (n - 1) - 0.5
    return finish_advantages(adv, valid, spread)


def robust(rewards: torch.Tensor, group_size: int, eps: float = DEFAULT_EPS) -> torch.Tensor:
    """A_i = (r_i − median_g) / (MAD_g + eps), MAD_g = median_g |r − median_g|.

    Robust z-score (Hampel 1974; Iglewicz & Hoaglin 1993): one outlier reward cannot shrink everyone else's signal as
    it does through the std. The median of an even count is the mean of the two middle values (``nanquantile``), not
    torch's lower-middle ``nanmedian``. The MAD is not rescaled by 1.4826 (the normal-consistency factor).
    Deviation: when MAD_g = 0 but the group has spread (e.g. binary rewards [0, 0, 0, 1]), the mean absolute
    deviation from the median is used instead, so a lone success gets a finite advantage (here 0.25 → A = 4) rather
    than 1/eps = 10⁴. Shapes: rewards (N,) → (N,).
    """
    grouped, valid, spread = grouped_rewards(rewards, group_size)
    med = torch.nanquantile(grouped, 0.5, dim=1, keepdim=True)
    dev = (grouped - med).abs()
    mad = torch.nanquantile(dev, 0.5, dim=1, keepdim=True)
    mean_ad = torch.nanmean(dev, dim=1, keepdim=True)
    scale = torch.where(mad > 0, mad, mean_ad)
    return finish_advantages((grouped - med) / (scale + eps), valid, spread)


def minmax(rewards: torch.Tensor, group_size: int, eps: float = DEFAULT_EPS) -> torch.Tensor:
    """A_i = (r_i − mean_g) / (max_g − min_g): min-max scaled to [0, 1], then centred on the group mean.

    Centred on purpose: the uncentred (r − min)/(max − min) is ≥ 0 for every sample, so it would push up the
    likelihood of every completion, including the worst. The result lies in [−1, 1] and sums to 0 per group. No eps is
    needed: zero-range groups are zeroed and |r − mean| ≤ max − min. A common reward-scaling heuristic rather than one
    paper's method; unlike the std it is bounded, so a group's scale never explodes. Shapes: rewards (N,) → (N,).
    """
    grouped, valid, spread = grouped_rewards(rewards, group_size)
    mean = torch.nanmean(grouped, dim=1, keepdim=True)
    hi = torch.where(valid, grouped, torch.full_like(grouped, -torch.inf)).amax(dim=1, keepdim=True)
    lo = torch.where(valid, grouped, torch.full_like(grouped, torch.inf)).amin(dim=1, keepdim=True)
    return finish_advantages((grouped - mean) / (hi - lo), valid, spread)


AdvantageFn = Callable[[torch.Tensor, int, float], torch.Tensor]

ADVANTAGE_METHODS: dict[str, AdvantageFn] = {
    "group": group_std,
    "batch": batch_std,
    "mean": mean_only,
    "rloo": rloo,
    "rank": rank,
    "robust": robust,
    "minmax": minmax,
}


def available_methods() -> list[str]:
    """Names accepted by :func:`normalize`, sorted."""
    return sorted(ADVANTAGE_METHODS)


def normalize(rewards: torch.Tensor, group_size: int, method: str = "group", eps: float = DEFAULT_EPS) -> torch.Tensor:
    """Advantages (N,) from rewards (N,) with the named method; see each function for formula and source.

    Raises ValueError on an unknown method (listing the available ones), a non-1-D tensor, a non-positive
    group_size, N not divisible by group_size, or a negative/NaN eps.
    """
    if method not in ADVANTAGE_METHODS:
        raise ValueError(f"unknown advantage method {method!r}; available: {', '.join(available_methods())}")
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps!r}")
    return ADVANTAGE_METHODS[method](rewards, group_size, eps)
