"""R-DPO length regularisation (pure torch, no transformers import): Park et al. 2024, "Disentangling Length from
Quality in Direct Preference Optimization" (https://arxiv.org/abs/2403.19159), eq. 9.

R-DPO is DPO against a length-tilted reference, log π_ref'(y|x) = log π_ref(y|x) − (α/β)·|y|. One function,
:func:`rdpo_reference_tilt`, computes that tilt; the trainer subtracts it from the reference log-probs it hands to
TRL's loss (:func:`tilt_reference_logps`, or from precomputed sequence log-probs), and :func:`rdpo_logits` writes the
resulting sigmoid argument with the same tilt, so the tested formula and the trained one are the same code.
"""

from __future__ import annotations

import torch

__all__ = ["rdpo_logits", "rdpo_reference_tilt", "tilt_reference_logps"]


def rdpo_reference_tilt(lengths: torch.Tensor, beta: float, alpha: float) -> torch.Tensor:
    """t(y) = (α/β)·|y|, the amount R-DPO lowers log π_ref(y|x). Shapes: (N,) lengths in tokens → (N,) float."""
    return (alpha / beta) * lengths.float()


def rdpo_logits(
    chosen_logratios: torch.Tensor,
    rejected_logratios: torch.Tensor,
    chosen_lengths: torch.Tensor,
    rejected_lengths: torch.Tensor,
    beta: float,
    alpha: float,
) -> torch.Tensor:
    """R-DPO sigmoid argument z = β·(log π/π_ref(y_w) − log π/π_ref(y_l)) + α·(|y_w| − |y_l|), shapes (B,).

    Computed as DPO's β·(log π/π_ref'(y_w) − log π/π_ref'(y_l)) against the tilted reference, where
    log π/π_ref'(y) = log π/π_ref(y) + t(y) with t from :func:`rdpo_reference_tilt`; β·(t(y_w) − t(y_l)) =
    α·(|y_w| − |y_l|). The loss is −log σ(z). The sign follows the paper's derivation: penalising length in the RLHF
    objective, max E[r − α|y|] − β·KL, makes the true reward r = β·log π/π_ref + α|y| (+ const), so a length gap in
    the data is credited to length and the policy's own margin has less reason to grow with length.
    """
    chosen = chosen_logratios + rdpo_reference_tilt(chosen_lengths, beta, alpha)
    rejected = rejected_logratios + rdpo_reference_tilt(rejected_lengths, beta, alpha)
    return beta * (chosen - rejected)


def tilt_reference_logps(ref_logps: torch.Tensor, completion_mask: torch.Tensor, tilt: torch.Tensor) -> torch.Tensor:
    """Per-token reference log-probs with each row's tilt subtracted at its first completion token.

    A sequence log-prob is the sum over completion tokens, so this lowers log π_ref(y) by exactly ``tilt`` per row;
    the first token is the one TRL's ``ld_alpha`` always keeps at weight 1 (its "shared" part). Shapes: ``ref_logps``
    (N, L) with the completion positions right-aligned in its last T columns, ``completion_mask`` (N, T), ``tilt``
    (N,) → (N, L).
    """
    first = completion_mask.float().argmax(dim=1) + (ref_logps.size(1) - completion_mask.size(1))
    delta = torch.zeros_like(ref_logps)
    delta.scatter_(1, first.unsqueeze(1), tilt.to(delta.dtype).unsqueeze(1))
    return ref_logps - delta
