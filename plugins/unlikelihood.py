"""Token-level unlikelihood loss against repetition (pure torch, no transformers import).

Welleck et al. 2019, "Neural Text Generation with Unlikelihood Training" (https://arxiv.org/abs/1908.04319), §4.1.
For a target position t with context x_{<t}, the negative candidates are the previous context tokens::

    C_t = { x_j : j < t } \\ { x_t }            (as a set: a token seen twice counts once; padding excluded)
    L_UL = mean_t  Σ_{c ∈ C_t}  −log(1 − p_θ(c | x_{<t}))

averaged over the target positions that carry a label (``labels != -100``), so prompt tokens are candidates but never
targets when the loss is completion-only. Deviation from the paper: ``1 − p`` is clamped at 1e-5 (their released code
does the same) so a token with p = 1 gives a large finite penalty instead of inf.

Cost: O(B·T²) memory for the candidate mask, not O(B·T·V): candidates are gathered from the (B, T, V) log-probs by
position, and duplicates are removed by keeping each token's first occurrence only.
"""

from __future__ import annotations

import torch

__all__ = ["unlikelihood_loss"]

_MIN_ONE_MINUS_P = 1e-5


def unlikelihood_loss(
    logits: torch.Tensor,
    input_ids: torch.Tensor,
    labels: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Unlikelihood penalty and the model's top-1 repetition rate for one batch of causal-LM inputs.

    Args:
        logits: (B, T, V) unshifted logits; position i predicts token i + 1.
        input_ids: (B, T) tokens.
        labels: (B, T) unshifted labels, −100 where no loss is taken.
        attention_mask: (B, T) 1 for real tokens, 0 for padding (None = no padding).

    Returns:
        ``(penalty, repetition_rate)``, both scalars. ``penalty`` is L_UL above (0 when there is no target), and
        differentiable through ``logits``. ``repetition_rate`` (no grad) is the fraction of target positions whose
        top-1 prediction is a token already in the context x_{<t}: Welleck et al.'s next-token "rep" metric with the
        whole context as window, the quantity the penalty is meant to drive down.
    """
    bsz, seq_len = input_ids.shape
    if seq_len < 2:
        zero = logits.sum() * 0.0
        return zero, zero.detach()
    valid_ctx = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    # Keep only the first occurrence of each token so C_t is a set: same[b, j, k] = ids[b, j] == ids[b, k].
    same = input_ids.unsqueeze(2) == input_ids.unsqueeze(1)  # (B, T, T)
    earlier = torch.ones(seq_len, seq_len, dtype=torch.bool, device=input_ids.device).tril(-1)  # k < j
    seen_before = (same & earlier & valid_ctx.unsqueeze(1)).any(dim=2)  # (B, T)
    first = valid_ctx & ~seen_before

    targets = input_ids[:, 1:]  # (B, T-1): target of prediction position i is token i + 1
    target_mask = labels[:, 1:] != -100
    # Prediction position i sees context positions j <= i.
    in_ctx = torch.ones(seq_len - 1, seq_len, dtype=torch.bool, device=input_ids.device).tril(0)  # (T-1, T)
    ctx_tokens = input_ids.unsqueeze(1).expand(bsz, seq_len - 1, seq_len)  # (B, T-1, T)
    cand = in_ctx.unsqueeze(0) & first.unsqueeze(1) & (ctx_tokens != targets.unsqueeze(2))  # (B, T-1, T)

    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # (B, T-1, V)
    cand_logp = logp.gather(2, ctx_tokens)  # (B, T-1, T): log p(x_j | x_{<=i})
    one_minus_p = (1.0 - cand_logp.exp()).clamp(min=_MIN_ONE_MINUS_P)
    per_position = torch.where(cand, -torch.log(one_minus_p), torch.zeros_like(one_minus_p)).sum(dim=2)  # (B, T-1)
    n_targets = target_mask.sum().clamp(min=1)
    penalty = torch.where(target_mask, per_position, torch.zeros_like(per_position)).sum() / n_targets

    with torch.no_grad():
        top1 = logp.argmax(dim=-1, keepdim=True)  # (B, T-1, 1)
        ctx_any = in_ctx.unsqueeze(0) & valid_ctx.unsqueeze(1)  # (B, T-1, T)
        repeats = ((ctx_tokens == top1) & ctx_any).any(dim=2) & target_mask
        repetition_rate = repeats.sum().float() / n_targets
    return penalty, repetition_rate
