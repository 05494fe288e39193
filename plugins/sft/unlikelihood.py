"""Token-level unlikelihood loss against repetition (pure torch, no transformers import).

Welleck et al. 2019, "Neural Text Generation with Unlikelihood Training" (https://arxiv.org/abs/1908.04319), §4.1.
For a target position t with context x_{<t}, the negative candidates are the previous context tokens::

    C_t = { x_j : j < t } \\ { x_t }            (as a set: a token seen twice counts once; padding excluded)
    L_UL = mean_t  Σ_{c ∈ C_t}  −log(1 − p_θ(c | x_{<t}))

averaged over the target positions that carry a label (``labels != -100``), so prompt tokens are candidates but never
targets when the loss is completion-only. Deviation from the paper: ``1 − p`` is clamped at 1e-5 (their released code
does the same) so a token with p = 1 gives a large finite penalty instead of inf.

Only the log-probabilities of context tokens enter L_UL, so everything works on the (B, T−1, T) matrix
``ctx_logp[b, i, j] = log p(x_j | x_{≤i})`` (prediction position i, context position j), O(B·T²) memory, never
O(B·T·T·V). Two ways to get it:

- :func:`unlikelihood_loss` gathers it from full (B, T, V) logits (the reference; used when logits exist anyway).
- :func:`~alignkit.plugins.sft.fused_head.context_logprobs` builds it from the final hidden states and the LM-head
  rows of the context tokens only, plus the target log-probs that TRL's fused LM head already returns: the
  normaliser of the softmax is recovered as log Z_i = z_{i, x_{i+1}} − log p(x_{i+1} | x_{≤i}), so no (B, T, V)
  projection is needed. Cost O(B·T²·H).
"""

from __future__ import annotations

import torch

from alignkit.plugins.common.masked import masked_mean

__all__ = ["candidate_mask", "unlikelihood_from_context_logprobs", "unlikelihood_loss"]

_MIN_ONE_MINUS_P = 1e-5


def _valid(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    return torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()


def _at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """``x`` in fp32, or in its own dtype if wider (fp64 stays fp64, so references can be exact)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _visible(seq_len: int, device: torch.device) -> torch.Tensor:
    """(T−1, T) bool: prediction position i sees context positions j ≤ i."""
    return torch.ones(seq_len - 1, seq_len, dtype=torch.bool, device=device).tril(0)


def candidate_mask(input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """(B, T−1, T) bool: ``cand[b, i, j]`` iff context position j stands for a token of C_{i+1}.

    That is j ≤ i, j is not padding, x_j ≠ x_{i+1} (the target), and j is the first occurrence of x_j in the row, so
    each token of the set C_{i+1} is counted once. Memory O(B·T²).
    """
    seq_len = input_ids.size(1)
    valid = _valid(input_ids, attention_mask)
    same = input_ids.unsqueeze(2) == input_ids.unsqueeze(1)  # (B, T, T): ids[b, j] == ids[b, k]
    earlier = torch.ones(seq_len, seq_len, dtype=torch.bool, device=input_ids.device).tril(-1)  # k < j
    first = valid & ~(same & earlier & valid.unsqueeze(1)).any(dim=2)  # (B, T)
    not_target = input_ids.unsqueeze(1) != input_ids[:, 1:].unsqueeze(2)  # (B, T−1, T): x_j != x_{i+1}
    return _visible(seq_len, input_ids.device).unsqueeze(0) & first.unsqueeze(1) & not_target


def unlikelihood_from_context_logprobs(
    ctx_logp: torch.Tensor,
    input_ids: torch.Tensor,
    labels: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """L_UL (module docstring) from ``ctx_logp[b, i, j] = log p(x_j | x_{≤i})``, shape (B, T−1, T).

    Only entries with ``cand[b, i, j]`` (:func:`candidate_mask`) at labelled targets (``labels[b, i+1] != -100``) are
    read; the others may hold anything finite or infinite and get zero gradient. Returns a scalar, 0 with no target.
    """
    target_mask = labels[:, 1:] != -100  # (B, T−1)
    use = candidate_mask(input_ids, attention_mask) & target_mask.unsqueeze(2)
    # Masked entries become p = 0, i.e. −log(1 − 0) = 0, before exp: no overflow and no NaN gradient through them.
    logp = _at_least_fp32(ctx_logp).masked_fill(~use, float("-inf"))
    one_minus_p = (1.0 - logp.exp()).clamp(min=_MIN_ONE_MINUS_P)
    return masked_mean(-torch.log(one_minus_p).sum(dim=2), target_mask)  # Σ over candidates, mean over targets


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
    logp = torch.log_softmax(_at_least_fp32(logits[:, :-1]), dim=-1)  # (B, T−1, V)
    ctx_tokens = input_ids.unsqueeze(1).expand(bsz, seq_len - 1, seq_len)  # (B, T−1, T)
    penalty = unlikelihood_from_context_logprobs(logp.gather(2, ctx_tokens), input_ids, labels, attention_mask)

    with torch.no_grad():
        target_mask = labels[:, 1:] != -100
        top1 = logp.argmax(dim=-1, keepdim=True)  # (B, T−1, 1)
        seen = _visible(seq_len, input_ids.device).unsqueeze(0) & _valid(input_ids, attention_mask).unsqueeze(1)
        repeats = ((ctx_tokens == top1) & seen).any(dim=2) & target_mask
        repetition_rate = masked_mean(repeats.float(), target_mask)
    return penalty, repetition_rate
