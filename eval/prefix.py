"""Shared prompt prefixes: run the tokens that every row starts with once, not once per row.

Chat templates open every conversation with the same tokens. With SmolLM2's default system prompt, the system turn
plus the user-turn header is 24 of the 53 tokens of an average ShareGPT prompt; Qwen2.5 and Llama 3 templates also
inject a default system turn. Generation prefill, reward scoring and perplexity would otherwise recompute the keys
and values of those tokens for every row. On a CPU these forwards are compute-bound, so batching alone cannot win
that time back, but skipping the repeated tokens can.

Why the numbers do not change: with causal attention, a prefix's keys and values do not depend on the tokens that
follow it. So computing them once at batch 1, repeating them across the batch and feeding only each row's remaining
tokens gives the per-row forward's numbers, up to fp rounding (the matmuls sum in another order, ~1e-6 relative).
The rows after the prefix keep their own padding. The attention mask spans prefix plus row, so left padding may sit
between the prefix and a row's tokens. Position ids come from the mask, as ``generate`` already computes them for
left padding.

The cache keyword is ``cache`` in recent transformers 5.x and ``past_key_values`` before; :func:`cache_kwarg` asks
the model's forward which one it takes.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Sequence
from typing import Any

# Below this many shared tokens the saving is smaller than the extra forward call and cache copy.
MIN_PREFIX = 4


def shared_prefix_len(rows: Sequence[Sequence[int]], limit: int) -> int:
    """Length of the longest token prefix common to all ``rows``, capped at ``limit``; 0 if under :data:`MIN_PREFIX`.

    ``limit`` is the caller's bound, e.g. ``min(len(row)) - 1`` so that every row keeps at least one token to run.
    """
    if not rows:
        return 0
    first = rows[0]
    n = min(limit, *(len(r) for r in rows))
    for row in rows[1:]:
        k = 0
        while k < n and row[k] == first[k]:
            k += 1
        n = k
        if n < MIN_PREFIX:
            return 0
    return n if n >= MIN_PREFIX else 0


def supported(model: Any) -> bool:
    """Whether ``model`` can take a prefix cache: a decoder-only model without prompt-learning virtual tokens (a
    PEFT prefix/prompt-tuning adapter prepends its own tokens, and an encoder-decoder caches decoder states only)."""
    peft_config = getattr(model, "active_peft_config", None)
    if peft_config is not None and getattr(peft_config, "is_prompt_learning", False):
        return False
    config = getattr(model, "config", None)
    if config is None or getattr(config, "is_encoder_decoder", False):
        return False
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return {"cache", "past_key_values"} & set(inspect.signature(inner.forward).parameters) != set()


def cache_kwarg(model: Any) -> str:
    """The name under which ``model``'s forward (and ``generate``) takes a KV cache."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model  # a PeftModel forwards **kwargs
    return "cache" if "cache" in inspect.signature(inner.forward).parameters else "past_key_values"


def prefix_cache(model: Any, prefix: Sequence[int]) -> Any:
    """Keys and values of ``prefix`` (token ids) at batch 1, as a ``DynamicCache``; copy it per batch with
    :func:`expand`, because a forward appends to the cache it is given."""
    import torch
    from transformers import DynamicCache

    device = next(model.parameters()).device
    cache = DynamicCache(config=model.config)
    ids = torch.tensor([list(prefix)], device=device)
    with torch.inference_mode():
        model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True, **{cache_kwarg(model): cache})
    return cache


def prefill_rows(model: Any, prefix_kv: Any | None, n_prefix: int, tails: Sequence[Sequence[int]]) -> Any | None:
    """A batch cache for ``generate``, with every row's prompt but its last token prefilled one row at a time.

    Row ``r``'s tokens are ``prefix + tails[r]``. Each row runs ``tails[r][:-1]`` on a copy of ``prefix_kv``,
    unpadded. The results are stacked in the layout of a left-padded batch, ``[prefix | zeros | row]``, with shape
    ``(rows, heads, n_prefix + max_tail - 1, dim)``. ``generate`` is then given ids and mask of that layout and runs
    only the last column, the one token per row that the cache lacks.

    Why: on a CPU a padded prefill computes its padding at full cost. For the 32 longest of 256 ShareGPT prompts,
    the padding is three times the real tokens. Rows of one length are what a per-sample loop computes, so greedy
    outputs also match it more often. Padding left in the cache is masked, and it only costs decode attention.

    Returns ``None`` when some cache layer is not a plain ``DynamicLayer`` (sliding-window or hybrid caches, whose
    stored length is not the position count), or when there is nothing to prefill.
    """
    import torch
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    width = max(len(t) for t in tails)
    if width < 2:
        return None
    device = next(model.parameters()).device
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(inner.forward).parameters else {}
    per_row = []
    with torch.inference_mode():
        for tail in tails:
            cache = copy.deepcopy(prefix_kv) if prefix_kv is not None else DynamicCache(config=model.config)
            if any(type(layer) is not DynamicLayer for layer in cache.layers):
                return None
            if len(tail) > 1:
                ids = torch.tensor([list(tail[:-1])], device=device)
                model(input_ids=ids, use_cache=True, **head, **{cache_kwarg(model): cache})
            per_row.append(cache)
        stacked = []
        for i in range(len(per_row[0].layers)):
            filled = [c.layers[i] for c in per_row if c.layers[i].keys is not None and c.layers[i].keys.numel()]
            shape = filled[0].keys.shape  # (1, heads, length, dim) of some row with states (the longest has some)
            kv = []
            for name in ("keys", "values"):
                rows = []
                for tail, cache in zip(tails, per_row, strict=True):
                    state = getattr(cache.layers[i], name)
                    if state is None or state.numel() == 0:  # a one-token row without a prefix: nothing cached
                        state = filled[0].keys.new_zeros((1, shape[1], 0, shape[-1]))
                    gap = state.new_zeros((1, shape[1], width - len(tail), shape[-1]))
                    rows.append(torch.cat([state[:, :, :n_prefix], gap, state[:, :, n_prefix:]], dim=2))
                kv.append(torch.cat(rows))
            stacked.append(tuple(kv))
        return DynamicCache(ddp_cache_data=stacked, config=model.config)


def expand(cache: Any, batch: int) -> Any:
    """A copy of a batch-1 ``cache`` with its rows repeated ``batch`` times, shape ``(batch, heads, prefix, dim)``."""
    import torch

    with torch.inference_mode():  # the prefix tensors are inference tensors; copying them outside would fail
        out = copy.deepcopy(cache)
        out.batch_repeat_interleave(batch)
    return out
