"""R-DPO length regularisation (pure torch, no transformers import): Park et al. 2024, "Disentangling Length from
Quality in Direct Preference Optimization" (https://arxiv.org/abs/2403.19159), eq. 9."""

from __future__ import annotations

import torch

__all__ = ["rdpo_logits"]


def rdpo_logits(
    chosen_logratios: torch.Tensor,
    rejected_logratios: torch.Tensor,
    chosen_lengths: torch.Tensor,
    rejected_lengths: torch.Tensor,
    beta: float,
    alpha: float,
) -> torch.Tensor:
    """R-DPO sigmoid argument z = β·(log π/π_ref(y_w) − log π/π_ref(y_l)) + α·(|y_w| − |y_l|), shapes (B,).

    The loss is −log σ(z). The sign follows the paper's derivation: penalising length in the RLHF objective,
    max E[r − α|y|] − β·KL, makes the true reward r = β·log π/π_ref + α|y| (+ const), so a length gap in the data is
    credited to length and the policy's own margin has less reason to grow with length. Equivalently, R-DPO is DPO
    against a length-tilted reference log π_ref'(y|x) = log π_ref(y|x) − (α/β)·|y|: how the trainer applies it.
    """
    return beta * (chosen_logratios - rejected_logratios) + alpha * (chosen_lengths - rejected_lengths)
