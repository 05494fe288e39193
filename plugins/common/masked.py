"""The masked mean used by every reduction over valid tokens (pure torch, no transformers import)."""

from __future__ import annotations

import torch

__all__ = ["masked_mean"]


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``x`` over positions where ``mask`` is true/1: Σ m·x / max(Σ m, 1).

    Args:
        x: (B, T) values; masked-out positions may hold anything, even inf/NaN (they are selected away, not
            multiplied by 0, since ``nan * 0 = nan``).
        mask: (B, T) bool or 0/1 tensor.
        dim: reduce this dim (e.g. ``-1`` for a per-sequence mean, shape (B,)); ``None`` for a scalar.

    A row or batch with no unmasked position gets 0 rather than NaN.
    """
    mask = mask.bool()
    total = torch.where(mask, x, torch.zeros_like(x))
    if dim is None:
        return total.sum() / mask.sum().clamp(min=1)
    return total.sum(dim) / mask.sum(dim).clamp(min=1)
