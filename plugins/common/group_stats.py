"""Group statistics behind the advantage methods (pure torch): reshape rewards (N,) into their groups, NaN-aware
unbiased std, zeroing of unscorable rows and zero-spread groups, average ranks. Conventions: see
:mod:`alignkit.plugins.common.advantage_methods`."""

from __future__ import annotations

import torch

__all__ = ["average_ranks", "finish_advantages", "grouped_rewards", "nanstd"]


def grouped_rewards(rewards: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Validate and reshape to (G_count, group_size); also return the validity mask and the 'has spread' mask."""
    if not isinstance(rewards, torch.Tensor) or rewards.dim() != 1:
        shape = tuple(rewards.shape) if isinstance(rewards, torch.Tensor) else type(rewards).__name__
        raise ValueError(f"rewards must be a 1-D tensor of shape (N,), got {shape}")
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"group_size must be a positive integer, got {group_size!r}")
    if rewards.numel() % group_size != 0:
        raise ValueError(f"rewards length N={rewards.numel()} is not divisible by group_size={group_size}")
    if not rewards.is_floating_point():
        rewards = rewards.to(torch.get_default_dtype())
    grouped = rewards.view(-1, group_size)
    valid = ~torch.isnan(grouped)
    # Spread over valid entries only: NaNs are swapped for ±inf so they never win max/min.
    hi = torch.where(valid, grouped, torch.full_like(grouped, -torch.inf)).amax(dim=1, keepdim=True)
    lo = torch.where(valid, grouped, torch.full_like(grouped, torch.inf)).amin(dim=1, keepdim=True)
    has_spread = (valid.sum(dim=1, keepdim=True) >= 2) & (hi > lo)
    return grouped, valid, has_spread


def finish_advantages(adv: torch.Tensor, valid: torch.Tensor, has_spread: torch.Tensor) -> torch.Tensor:
    """Zero NaN-reward rows and zero-spread groups, then flatten back to (N,)."""
    keep = valid & has_spread
    return torch.where(keep, adv, torch.zeros_like(adv)).reshape(-1)


def nanstd(x: torch.Tensor, dim: int | None = None, keepdim: bool = False) -> torch.Tensor:
    """Unbiased std over non-NaN entries (NaN where fewer than 2), same convention as ``trl.trainer.utils.nanstd``."""
    valid = ~torch.isnan(x)
    count = valid.sum() if dim is None else valid.sum(dim=dim, keepdim=True)
    mean = torch.nanmean(x) if dim is None else torch.nanmean(x, dim=dim, keepdim=True)
    sq = torch.where(valid, (x - mean) ** 2, torch.zeros_like(x))
    ssq = sq.sum() if dim is None else sq.sum(dim=dim, keepdim=True)
    std = torch.sqrt(ssq / (count - 1))  # meaningless for count ≤ 1; replaced by NaN on the next line
    std = torch.where(count >= 2, std, torch.full_like(std, torch.nan))
    return std if keepdim or dim is None else std.squeeze(dim)


def average_ranks(values: torch.Tensor) -> torch.Tensor:
    """1-based ranks of a 1-D tensor, ties sharing the average of the ranks they span."""
    order = torch.argsort(values, stable=True)
    sorted_vals = values[order]
    ranks_sorted = torch.arange(1, values.numel() + 1, dtype=values.dtype)
    # Runs of equal values get the mean of their positional ranks.
    _, inverse, counts = torch.unique_consecutive(sorted_vals, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).to(values.dtype)
    avg = ends - (counts.to(values.dtype) - 1) / 2  # mean of ranks (end − c + 1 … end)
    ranks_sorted = avg[inverse]
    ranks = torch.empty_like(ranks_sorted)
    ranks[order] = ranks_sorted
    return ranks
