"""Shared-prompt-prefix forwards for :class:`alignkit.plugins.ppo.PPOTrainer` (measured in bench/results/ppo_peer.md).

Chat templates open every prompt with the same tokens (SmolLM2's default system prompt: 27 of the peer bench's 45-47
prompt tokens), and every PPO forward (reference, value, and the policy and value forwards of each update, with
gradients) recomputes them for every row. Here the shared prefix runs once, as a one-row forward, and its KV cache is
repeated to the batch; the rows then run only their remainder (rest of the prompt + completion) on top of it.

Exactness: each row's real tokens keep their attention pattern. Positions become per-row unpadded positions (as in
generation) instead of shifted by left padding; rotary position embeddings are invariant to that shift, so results
change only by float rounding. The prefix's gradient is the sum over rows of what each row's own copy would get,
which is what autograd gives through the repeated cache. Used only where that holds: rotary, full-attention
decoders, without gradient checkpointing (a recomputed layer would append to the cache twice), text-only inputs.
The trainer checks it once against the plain forward before relying on it (``PREFIX_TOLERANCE``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from alignkit.models import cache_kwarg

__all__ = ["MIN_SHARED_PREFIX", "check_against_plain", "prefix_supported", "shared_prefix", "split_at_prefix"]

# Below this many shared tokens the extra one-row forward and cache copy are not worth it.
MIN_SHARED_PREFIX = 8
# Largest relative difference of the completion positions' hidden states (max |Δh| / max |h|) that
# check_against_plain accepts, by parameter dtype: rounding is ~1e-6 in fp32, ~1e-2 in bf16; a wrong position or
# mask is O(1).
PREFIX_TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-8}
PREFIX_TOLERANCE_LOW_PRECISION = 5e-2


def prefix_supported(model: nn.Module) -> bool:
    """Rotary, full-attention decoder config, gradient checkpointing off."""
    config = model.config.get_text_config()
    rotary = getattr(config, "rope_parameters", None) is not None or hasattr(config, "rope_theta")
    layer_types = getattr(config, "layer_types", None) or ["full_attention"]
    checkpointing = getattr(model, "is_gradient_checkpointing", False)
    return rotary and all(t == "full_attention" for t in layer_types) and not checkpointing


def split_at_prefix(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, n_completion: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """Split left-padded prompt + right-padded completion rows at their longest shared prompt prefix.

    Args:
        input_ids, attention_mask: (B, P + C); the prompt part (first P columns) is left padded.
        n_completion: C.

    Returns ``(prefix_ids (1, L), suffix_ids (B, R + C), suffix_mask (B, R + C))``, where every row keeps at least
    one prompt token after the prefix (the first completion token is scored from the position before it) and
    R = the longest remainder; a row's suffix is the last R prompt columns, masked before its own remainder, followed
    by its completion columns. None if the shared prefix is shorter than ``MIN_SHARED_PREFIX`` or the prompt part is
    not left padded.
    """
    batch, width = input_ids.shape
    p = width - n_completion
    plen = attention_mask[:, :p].sum(1)
    cols = torch.arange(p, device=input_ids.device)
    if batch < 2 or not torch.equal(attention_mask[:, :p].bool(), cols[None] >= (p - plen)[:, None]):
        return None
    longest = int(plen.min()) - 1
    if longest < MIN_SHARED_PREFIX:
        return None
    firsts = input_ids.gather(1, (p - plen)[:, None] + torch.arange(longest, device=input_ids.device)[None])
    same = (firsts == firsts[:1]).all(0)
    length = longest if bool(same.all()) else int((~same).int().argmax())
    if length < MIN_SHARED_PREFIX:
        return None
    rest = plen - length
    r = int(rest.max())
    prompt_mask = torch.arange(r, device=input_ids.device)[None] >= (r - rest)[:, None]
    suffix_mask = torch.cat([prompt_mask.to(attention_mask.dtype), attention_mask[:, p:]], dim=1)
    return firsts[:1, :length], input_ids[:, p - r :], suffix_mask


@contextmanager
def shared_prefix(backbone: nn.Module, prefix_ids: torch.Tensor, suffix_width: int) -> Iterator[None]:
    """While active, each ``backbone`` call on (b, ``suffix_width``) inputs first runs ``prefix_ids`` (1, L) under the
    caller's adapter and grad mode, repeats its cache to b rows, and runs the suffix on it: attention mask
    [1…1 | suffix mask], positions L + (index among the row's real suffix tokens)."""
    inside = False
    length = prefix_ids.size(1)

    def pre_hook(module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> tuple[tuple, dict] | None:
        nonlocal inside
        ids, mask = kwargs.get("input_ids"), kwargs.get("attention_mask")
        if inside or args or ids is None or mask is None or ids.size(1) != suffix_width:
            return None
        if kwargs.get("cache") is not None or kwargs.get("past_key_values") is not None:
            return None
        inside = True
        try:
            out = module(input_ids=prefix_ids, use_cache=True)
        finally:
            inside = False
        cache = getattr(out, "cache", None) or out.past_key_values
        cache.batch_repeat_interleave(ids.size(0))
        full_mask = torch.cat([mask.new_ones(mask.size(0), length), mask], dim=1)
        positions = length + (mask.long().cumsum(1) - 1).clamp(min=0)
        return args, {**kwargs, cache_kwarg(module): cache, "attention_mask": full_mask, "position_ids": positions}

    handle = backbone.register_forward_pre_hook(pre_hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def check_against_plain(
    backbone: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    n_completion: int,
    split: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
) -> tuple[float, float]:
    """``(gap, tolerance)``: max |Δh| / max |h| between the plain and the prefix-shared ``backbone`` forward over the
    hidden states that score the completion (positions −C−1 … −2, on valid completion tokens). Runs without
    gradients and without autocast, so it measures the mechanism (cache, mask, positions), not the precision."""
    prefix, ids, mask = split
    dtype = next(backbone.parameters()).dtype
    with torch.no_grad(), torch.autocast(input_ids.device.type, enabled=False):
        plain = backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        with shared_prefix(backbone, prefix, ids.size(1)):
            shared = backbone(input_ids=ids, attention_mask=mask).last_hidden_state
    valid = attention_mask[:, -n_completion:].bool()
    plain, shared = plain[:, -n_completion - 1 : -1][valid], shared[:, -n_completion - 1 : -1][valid]
    gap = ((plain - shared).abs().max() / plain.abs().max().clamp(min=1e-12)).item() if valid.any() else 0.0
    return gap, PREFIX_TOLERANCE.get(dtype, PREFIX_TOLERANCE_LOW_PRECISION)
