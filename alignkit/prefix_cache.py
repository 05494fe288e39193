"""Shared prompt prefixes: run the tokens that every row starts with once, not once per row.

Chat templates open every conversation with the same tokens. With SmolLM2's default system prompt, the system turn
plus the user-turn header is 24 of the 53 tokens of an average ShareGPT prompt; Qwen2.5 and Llama 3 templates also
inject a default system turn. Generation prefill, reward scoring, perplexity and PPO's forwards would otherwise
recompute the keys and values of those tokens for every row. On a CPU these forwards are compute-bound, so batching
alone cannot win that time back, but skipping the repeated tokens can.

Why the numbers do not change: with causal attention, a prefix's keys and values do not depend on the tokens that
follow it. So computing them once at batch 1, repeating them across the batch and feeding only each row's remaining
tokens gives the per-row forward's numbers, up to fp rounding (the matmuls sum in another order, ~1e-6 relative).
The rows after the prefix keep their own padding. The attention mask spans prefix plus row, so left padding may sit
between the prefix and a row's tokens.

One module for every user (eval's generation, RM scores and perplexity; PPO's training forwards; DPO's policy
samples measured no gain from it, see :mod:`alignkit.plugins.dpo.policy_samples`), so that a fix reaches all of them:

- :func:`supported` is the one support check, for inference (eval) and, with ``with_gradients=True``, training
  forwards (PPO);
- :data:`MIN_PREFIX` is the one minimum length and :func:`positions_after_prefix` the one position formula;
- :func:`shared_prefix_len` is the one prefix search, on Python lists of ids; :func:`split_at_prefix` applies it
  to a padded (prompt + completion) tensor batch (PPO's);
- inference builds a cache (:func:`prefix_cache`, :func:`expand`, :func:`prefill_rows`) and passes it to the
  model; training forwards run the prefix inside the model call (:func:`shared_prefix`), so that it gets its
  gradient, after :func:`check_against_plain` has compared the mechanism once with the plain forward.

The cache keyword is ``cache`` in recent transformers 5.x and ``past_key_values`` before; :func:`cache_kwarg` asks
the model's forward which one it takes. torch and transformers are imported inside the functions, so the constants
and :func:`shared_prefix_len` import without them.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

# Below this many shared tokens the saving is smaller than the extra one-row forward, the cache copy and the masked
# (not plain causal) attention. Measured on SmolLM2-135M, fp32, 1 thread (Xeon with avx512_bf16, 2 loaded cores,
# 2026-12 session), B rows of L shared + 14 own (+ 32 completion) tokens, shared/plain time: L=4 1.05-1.07 (slower)
# in inference (B=8, 16) and LoRA forward+backward (B=8); L=8 0.94-1.03 (break-even); L=12 0.90-0.97; L=16
# 0.81-0.93. Chat templates share 20+ tokens, so this bound only decides for template-less prompts.
MIN_PREFIX = 8
# Rows x width of one prefill forward in :func:`prefill_rows`: on one CPU core a matmul reaches its peak
# (~100 GFLOPS fp32) from ~500 rows, against ~85 at 32-64 rows, and longest-first runs of this size pad little.
PREFILL_TOKENS = 512
# Largest relative difference of the completion positions' hidden states (max |dh| / max |h|) that
# check_against_plain accepts, by parameter dtype name: rounding is ~1e-6 in fp32, ~1e-2 in bf16; a wrong position or
# mask is O(1). Other dtypes (bf16, fp16) get PREFIX_TOLERANCE_LOW_PRECISION.
PREFIX_TOLERANCE = {"float32": 1e-4, "float64": 1e-8}
PREFIX_TOLERANCE_LOW_PRECISION = 5e-2


def cache_kwarg(model: Any) -> str:
    """The name under which ``model``'s forward (and ``generate``) takes a KV cache: ``cache`` in recent
    transformers 5.x, ``past_key_values`` before."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model  # a PeftModel forwards **kwargs
    return "cache" if "cache" in inspect.signature(inner.forward).parameters else "past_key_values"


def supported(model: Any, with_gradients: bool = False) -> bool:
    """Whether a shared-prefix cache gives ``model`` the per-row numbers. All of:

    - a decoder-only model (an encoder-decoder caches decoder states only);
    - no prompt-learning adapter (a PEFT prefix/prompt-tuning adapter prepends its own virtual tokens);
    - its forward takes a cache keyword (:func:`cache_kwarg`);
    - rotary positions: rows after the prefix get unpadded positions, which rotary attention is invariant to
      relative to a left-padded plain forward, and learned absolute positions are not;
    - every layer full attention: a sliding-window or hybrid layer's cache does not hold the whole prefix;
    - ``with_gradients`` (a training forward): gradient checkpointing off, since a recomputed layer would append
      to the shared cache a second time.
    """
    peft_config = getattr(model, "active_peft_config", None)
    if peft_config is not None and getattr(peft_config, "is_prompt_learning", False):
        return False
    config = getattr(model, "config", None)
    if config is None or getattr(config, "is_encoder_decoder", False):
        return False
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not {"cache", "past_key_values"} & set(inspect.signature(inner.forward).parameters):
        return False
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    rotary = getattr(text, "rope_parameters", None) is not None or hasattr(text, "rope_theta")
    layer_types = getattr(text, "layer_types", None) or ["full_attention"]
    if not rotary or any(t != "full_attention" for t in layer_types):
        return False
    if not with_gradients:
        return True
    # transformers 5 renamed is_gradient_checkpointing (the old name still works, with a deprecation warning)
    checkpointing = getattr(model, "is_activation_checkpointing", None)
    if checkpointing is None:
        checkpointing = getattr(model, "is_gradient_checkpointing", False)
    return not checkpointing


def positions_after_prefix(mask: Any, n_prefix: int = 0) -> Any:
    """Position ids of rows that follow a cached ``n_prefix``-token prefix, from their attention ``mask`` (rows,
    width)::

        position[r, t] = n_prefix + max(0, sum_{u <= t} mask[r, u] - 1)

    so a row's real tokens count on from the prefix and its padding (masked anyway) does not shift them. With
    ``n_prefix = 0`` these are the positions ``generate`` computes for a left-padded batch."""
    return n_prefix + (mask.long().cumsum(-1) - 1).clamp(min=0)


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


def split_at_prefix(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, n_completion: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """Split left-padded prompt + right-padded completion rows at their longest shared prompt prefix
    (:func:`shared_prefix_len` on the rows' prompt tokens).

    Args:
        input_ids, attention_mask: (B, P + C); the prompt part (first P columns) is left padded.
        n_completion: C.

    Returns ``(prefix_ids (1, L), suffix_ids (B, R + C), suffix_mask (B, R + C))``, where every row keeps at least
    one prompt token after the prefix (the first completion token is scored from the position before it) and
    R = the longest remainder; a row's suffix is the last R prompt columns, masked before its own remainder, followed
    by its completion columns. None if the shared prefix is shorter than :data:`MIN_PREFIX`, the batch has one row,
    or the prompt part is not left padded.
    """
    import torch

    batch, width = input_ids.shape
    p = width - n_completion
    plen = attention_mask[:, :p].sum(1)
    cols = torch.arange(p, device=input_ids.device)
    if batch < 2 or not torch.equal(attention_mask[:, :p].bool(), cols[None] >= (p - plen)[:, None]):
        return None
    starts = (p - plen).tolist()
    prompts = [row[start:] for row, start in zip(input_ids[:, :p].tolist(), starts, strict=True)]
    length = shared_prefix_len(prompts, int(plen.min()) - 1)
    if not length:
        return None
    rest = plen - length
    r = int(rest.max())
    prompt_mask = torch.arange(r, device=input_ids.device)[None] >= (r - rest)[:, None]
    suffix_mask = torch.cat([prompt_mask.to(attention_mask.dtype), attention_mask[:, p:]], dim=1)
    return input_ids[:1, starts[0] : starts[0] + length], input_ids[:, p - r :], suffix_mask


@contextmanager
def shared_prefix(backbone: torch.nn.Module, prefix_ids: torch.Tensor, suffix_width: int) -> Iterator[None]:
    """While active, each ``backbone`` call on (b, ``suffix_width``) inputs first runs ``prefix_ids`` (1, L) under the
    caller's adapter and grad mode, repeats its cache to b rows, and runs the suffix on it: attention mask
    [1…1 | suffix mask], positions :func:`positions_after_prefix` (suffix mask, L).

    For training forwards (PPO): the prefix runs inside the call, so its gradient is the sum over rows of what each
    row's own copy would get, which is what autograd gives through the repeated cache."""
    import torch

    inside = False
    length = prefix_ids.size(1)

    def pre_hook(module: torch.nn.Module, args: tuple, kwargs: dict[str, Any]) -> tuple[tuple, dict] | None:
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
        positions = positions_after_prefix(mask, length)
        return args, {**kwargs, cache_kwarg(module): cache, "attention_mask": full_mask, "position_ids": positions}

    handle = backbone.register_forward_pre_hook(pre_hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def prefix_tolerance(dtype: Any) -> float:
    """:data:`PREFIX_TOLERANCE` for parameters of ``dtype`` (a torch dtype or its name; keys may be either)."""
    name = str(dtype).removeprefix("torch.")
    matches = (v for k, v in PREFIX_TOLERANCE.items() if str(k).removeprefix("torch.") == name)
    return next(matches, PREFIX_TOLERANCE_LOW_PRECISION)


def check_against_plain(
    backbone: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    n_completion: int,
    split: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
) -> tuple[float, float]:
    """``(gap, tolerance)``: max |dh| / max |h| between the plain and the prefix-shared ``backbone`` forward over the
    hidden states that score the completion (positions -C-1 … -2, on valid completion tokens); ``split`` is
    :func:`split_at_prefix`'s. Runs without gradients and without autocast, so it measures the mechanism (cache,
    mask, positions), not the precision."""
    import torch

    prefix, ids, mask = split
    dtype = next(backbone.parameters()).dtype
    with torch.no_grad(), torch.autocast(input_ids.device.type, enabled=False):
        plain = backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        with shared_prefix(backbone, prefix, ids.size(1)):
            shared = backbone(input_ids=ids, attention_mask=mask).last_hidden_state
    valid = attention_mask[:, -n_completion:].bool()
    plain, shared = plain[:, -n_completion - 1 : -1][valid], shared[:, -n_completion - 1 : -1][valid]
    gap = ((plain - shared).abs().max() / plain.abs().max().clamp(min=1e-12)).item() if valid.any() else 0.0
    return gap, prefix_tolerance(dtype)


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


def prefill_rows(
    model: Any, prefix_kv: Any | None, n_prefix: int, tails: Sequence[Sequence[int]], pad_id: int = 0
) -> Any | None:
    """A batch cache for ``generate``, with every row's prompt but its last token prefilled in small length groups.

    Row ``r``'s tokens are ``prefix + tails[r]``; ``tails`` come longest first. Runs of neighbouring rows, up to
    :data:`PREFILL_TOKENS` padded tokens each, run ``tails[r][:-1]`` on a copy of ``prefix_kv``, padded only among
    themselves (rows of similar length). The results are stacked in the layout of a left-padded batch,
    ``[prefix | zeros | row]``, shape ``(rows, heads, n_prefix + max_tail - 1, dim)``. ``generate`` is then given
    ids and mask of that layout and runs only the last column, the one token per row that the cache lacks.

    Why: on a CPU a padded prefill computes its padding at full cost. For the 32 longest of 256 ShareGPT prompts,
    padding to the batch's longest row is three times the real tokens. Padding left in the cache is masked, and it
    only costs decode attention.

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
    length = n_prefix + width - 1
    if any(type(layer) is not DynamicLayer for layer in DynamicCache(config=model.config).layers):
        return None
    buffers: list[tuple[Any, Any]] = []
    with torch.inference_mode():
        for group in _groups([len(t) - 1 for t in tails], PREFILL_TOKENS):
            rows = [list(tails[r][:-1]) for r in group]
            cache = expand(prefix_kv, len(group)) if prefix_kv is not None else DynamicCache(config=model.config)
            gw = max(map(len, rows))
            if gw:  # left-pad the group's rows among themselves: [prefix | pads | row], positions from the mask
                ids = torch.tensor([[pad_id] * (gw - len(x)) + x for x in rows], device=device)
                mask = torch.tensor([[0] * (gw - len(x)) + [1] * len(x) for x in rows], device=device)
                positions = positions_after_prefix(mask, n_prefix)
                mask = torch.cat([torch.ones((len(rows), n_prefix), dtype=mask.dtype, device=device), mask], dim=1)
                model(
                    input_ids=ids,
                    attention_mask=mask,
                    position_ids=positions,
                    use_cache=True,
                    **head,
                    **{cache_kwarg(model): cache},
                )
            for i, layer in enumerate(cache.layers):
                if layer.keys is None or layer.keys.numel() == 0:  # one-token rows without a prefix: all padding
                    continue
                if i == len(buffers):  # first group with states: (rows, heads, length, dim), zeros = padding
                    shape = (len(tails), layer.keys.shape[1], length, layer.keys.shape[-1])
                    buffers.append((layer.keys.new_zeros(shape), layer.values.new_zeros(shape)))
                for g, r in enumerate(group):
                    n = len(rows[g])  # this row's own tokens sit at the right edge of the group and of the batch
                    for buf, state in zip(buffers[i], (layer.keys, layer.values), strict=True):
                        buf[r, :, :n_prefix] = state[g, :, :n_prefix]
                        if n:
                            buf[r, :, length - n :] = state[g, :, n_prefix + gw - n :]
        return DynamicCache(ddp_cache_data=buffers, config=model.config)


def _groups(lengths: Sequence[int], tokens: int) -> list[list[int]]:
    """Consecutive runs of row indices whose padded size ``rows x longest`` stays within ``tokens`` (at least one
    row each). ``lengths`` come longest first, so a run pads little."""
    groups: list[list[int]] = []
    for r, n in enumerate(lengths):
        if groups and (len(groups[-1]) + 1) * max(lengths[groups[-1][0]], n) <= tokens:
            groups[-1].append(r)
        else:
            groups.append([r])
    return groups


def expand(cache: Any, batch: int) -> Any:
    """A copy of a batch-1 ``cache`` with its rows repeated ``batch`` times, shape ``(batch, heads, prefix, dim)``."""
    import torch

    with torch.inference_mode():  # the prefix tensors are inference tensors; copying them outside would fail
        out = copy.deepcopy(cache)
        out.batch_repeat_interleave(batch)
    return out
