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
- :func:`context_logprobs` builds it from the final hidden states and the LM-head rows of the context tokens only,
  plus the target log-probs that TRL's fused LM head already returns: the normaliser of the softmax is recovered as
  log Z_i = z_{i, x_{i+1}} − log p(x_{i+1} | x_{≤i}), so no (B, T, V) projection is needed. Cost O(B·T²·H).
"""

from __future__ import annotations

import torch

__all__ = [
    "candidate_mask",
    "context_logprobs",
    "sampled_repetition_rate",
    "unlikelihood_from_context_logprobs",
    "unlikelihood_loss",
]

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
    return -torch.log(one_minus_p).sum() / target_mask.sum().clamp(min=1)


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
        repetition_rate = repeats.sum().float() / target_mask.sum().clamp(min=1)
    return penalty, repetition_rate


def _head_logits(
    hidden: torch.Tensor,
    rows: torch.Tensor,
    bias: torch.Tensor | None,
    logit_scale: float,
    softcap: float | None,
) -> torch.Tensor:
    """f(h · wᵀ + b) in fp32 (or wider), f(z) = s·tanh(κz/s) with a softcap s, else κz.

    The matmul runs in the autocast dtype if autocast is on (else ``hidden.dtype``) and is rounded to it, like TRL's
    fused head. ``hidden`` is (..., M, H), ``rows`` (..., N, H), the result (..., M, N).
    """
    autocast = torch.is_autocast_enabled(hidden.device.type)
    dtype = torch.get_autocast_dtype(hidden.device.type) if autocast else hidden.dtype
    z = torch.matmul(hidden.to(dtype), rows.to(dtype).transpose(-1, -2))
    if bias is not None:
        z = z + bias.to(dtype)
    z = _at_least_fp32(z) * logit_scale
    return softcap * torch.tanh(z / softcap) if softcap is not None else z


def context_logprobs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    input_ids: torch.Tensor,
    target_logprobs: torch.Tensor,
    logit_scale: float = 1.0,
    softcap: float | None = None,
) -> torch.Tensor:
    """``ctx_logp[b, i, j] = log p(x_j | x_{≤i})`` (B, T−1, T) without the (B, T, V) logits::

        z_ij   = f(h_i · w_{x_j} + b_{x_j})                   logit of context token x_j at prediction position i
        log Z_i = z_{i,i+1} − log p(x_{i+1} | x_{≤i})         (column i+1 holds the target x_{i+1})
        ctx_logp_ij = z_ij − log Z_i

    Args:
        hidden: (B, T−1, H) final hidden states of the prediction positions 0..T−2.
        weight, bias: the LM head, (V, H) and (V,) or None.
        input_ids: (B, T) tokens.
        target_logprobs: (B, T−1) log p(x_{i+1} | x_{≤i}), differentiable: its gradient carries that of log Z
            (Σ_v p_v ∂z_v), so the full-vocabulary term costs nothing beyond the fused head's own backward. Only
            rows with a label are meaningful; the others give garbage rows that the loss must ignore.
        logit_scale, softcap: the head's logit transform f (κ, s above); must match the one that produced
            ``target_logprobs``.

    Cost: O(B·T²·H) time and O(B·T²) memory for z, plus O(B·T·H) for the gathered head rows.
    """
    rows = weight[input_ids]  # (B, T, H): LM-head rows of the context tokens
    z = _head_logits(hidden, rows, None if bias is None else bias[input_ids].unsqueeze(1), logit_scale, softcap)
    log_z = z.diagonal(offset=1, dim1=1, dim2=2) - target_logprobs.to(z.dtype)  # (B, T−1)
    return z - log_z.unsqueeze(2)


@torch.no_grad()
def sampled_repetition_rate(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    input_ids: torch.Tensor,
    labels: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    max_positions: int = 32,
) -> torch.Tensor:
    """The top-1 repetition rate of :func:`unlikelihood_loss`, measured on at most ``max_positions`` target positions.

    The top-1 token needs the full-vocabulary logits of a position; projecting every position would cost as much as
    the LM head itself, so only ``max_positions`` labelled positions, evenly spaced over the batch in row-major order,
    are projected (all of them when there are fewer): exact for small batches, a deterministic estimate otherwise.
    The argmax ignores the head's logit transform, which is monotone (κ > 0, tanh). Shapes as in
    :func:`context_logprobs`; returns a scalar, 0 with no target.
    """
    targets = (labels[:, 1:] != -100).nonzero()  # (M, 2): (row, prediction position)
    if len(targets) == 0:
        return hidden.new_zeros((), dtype=torch.float32)
    if len(targets) > max_positions:
        targets = targets[torch.linspace(0, len(targets) - 1, max_positions, device=targets.device).round().long()]
    rows, pos = targets.unbind(1)
    top1 = _head_logits(hidden[rows, pos], weight, bias, 1.0, None).argmax(dim=-1)  # (K,)
    seq_len = input_ids.size(1)
    seen = torch.arange(seq_len, device=input_ids.device).unsqueeze(0) <= pos.unsqueeze(1)  # (K, T): j ≤ i
    seen &= _valid(input_ids, attention_mask)[rows]
    return ((input_ids[rows] == top1.unsqueeze(1)) & seen).any(dim=1).float().mean()
