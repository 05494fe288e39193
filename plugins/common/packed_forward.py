"""Padding-free fused-head forwards for the CPU fast path: the real tokens of a right-padded batch run as one packed
row, and attention runs per sequence (pure torch + transformers' attention registry).

A DPO batch pads every chosen and rejected sequence to the longest one (dpo-smol: 34 % of the positions are
padding), and every layer pays for those positions. :func:`packed_forwards` hooks the models' fused-head calls
(``model(..., labels=..., fused_lm_head=True)``, as TRL's DPO and SFT trainers make them): before the call the
(B, T) batch becomes one row of the N real tokens, with the original position ids (so rotary embeddings are
unchanged) and pre-shifted labels; after it, every per-token output is scattered back to TRL's (B, T−1) layout::

    packed token j = (b, t) with mask[b, t]          shift_labels[j] = labels[b, t+1]   (−100 past the row's end)
    out[b, t] = packed_out[j(b, t)],  t < T−1        (0 where (b, t) is padding, as TRL's masked output)

So each output equals TRL's at every position. Attention must not cross sequences: transformers builds a
block-diagonal mask from position ids that restart at 0 (its packed-sequence detection), and, for the ``sdpa``
implementation, :func:`segment_attention` replaces that N×N masked kernel with one causal attention per sequence
(softmax in fp32, as transformers' eager attention). Only right-padded batches whose only per-token inputs are
``input_ids``/``attention_mask``/``labels`` (and ``position_ids``) are packed; anything else runs as TRL runs it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Iterator

import torch
from torch import nn

__all__ = ["pack_batch", "packed_forwards", "segment_attention", "unpack_outputs"]

PACKED_KEYS = {"input_ids", "attention_mask", "labels", "position_ids"}
PER_TOKEN_FIELDS = ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1", "label_mask")
_active = threading.local()  # the segment lengths of the packed forward running in this thread


def pack_batch(kwargs: dict) -> tuple[dict, torch.Tensor, list[int]] | None:
    """``(packed kwargs, mask (B, T), segment lengths)`` for a fused-head call, or None to leave it as it is."""
    ids, mask, labels = kwargs.get("input_ids"), kwargs.get("attention_mask"), kwargs.get("labels")
    if not kwargs.get("fused_lm_head") or ids is None or mask is None or labels is None or ids.dim() != 2:
        return None
    if any(isinstance(v, torch.Tensor) and k not in PACKED_KEYS for k, v in kwargs.items()):
        return None  # a per-token input we do not know how to pack (e.g. inputs_embeds, shift_labels)
    mask = mask.bool()
    batch, seq_len = ids.shape
    lengths = mask.sum(dim=1)
    if bool(mask.all()) or not torch.equal(mask, torch.arange(seq_len, device=ids.device) < lengths.unsqueeze(1)):
        return None  # nothing to drop, or not right-padded (positions of packed rows would not restart at 0)
    positions = kwargs.get("position_ids")
    if positions is None:
        positions = torch.arange(seq_len, device=ids.device).expand(batch, seq_len)
    shift_labels = torch.cat([labels[:, 1:], labels.new_full((batch, 1), -100)], dim=1)  # target of (b, t): t+1
    packed = {k: v for k, v in kwargs.items() if k not in PACKED_KEYS}
    packed.update(
        input_ids=ids[mask].unsqueeze(0),
        position_ids=positions.expand(batch, seq_len)[mask].unsqueeze(0),
        attention_mask=None,
        shift_labels=shift_labels[mask].unsqueeze(0),
    )
    return packed, mask, lengths.tolist()


def unpack_outputs(output, mask: torch.Tensor):
    """Scatter each per-token field of a packed fused output (1, N) back to (B, T−1), in place; returns it."""
    for name in PER_TOKEN_FIELDS:
        value = getattr(output, name, None)
        if value is not None:
            full = value.new_zeros(mask.shape).masked_scatter(mask, value[0])
            setattr(output, name, full[:, :-1])
    return output


def segment_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """Causal attention of each packed sequence on its own; query (1, Hq, N, d), key/value (1, Hkv, N, d).

    Per sequence: softmax(q·kᵀ·scaling + causal) in fp32, cast back to q's dtype, times v, as transformers' eager
    attention computes it. Returns ``(output (1, N, Hq, d), None)``."""
    if kwargs.get("sliding_window") is not None or kwargs.get("softcap") is not None or dropout:
        raise ValueError("cpu_fast_path: packed attention supports plain causal attention only (no sliding window, "
                         "softcap or attention dropout); set cpu_fast_path=false for this model")  # fmt: skip
    groups = query.shape[1] // key.shape[1]
    outputs, start = [], 0
    for length in _active.lengths:
        rows = slice(start, start + length)
        q = query[:, :, rows]
        k = key[:, :, rows].repeat_interleave(groups, dim=1)
        v = value[:, :, rows].repeat_interleave(groups, dim=1)
        scores = torch.matmul(q, k.transpose(2, 3)) * scaling
        future = torch.ones(length, length, dtype=torch.bool, device=q.device).triu(1)
        scores = scores.masked_fill(future, float("-inf"))
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
        outputs.append(torch.matmul(probs, v))
        start += length
    return torch.cat(outputs, dim=2).transpose(1, 2).contiguous(), None


def _attention_for(original):
    def attention(module, query, key, value, attention_mask, *args, **kwargs):
        lengths = getattr(_active, "lengths", None)
        if lengths is not None and query.shape[0] == 1 and query.shape[2] == sum(lengths):
            return segment_attention(module, query, key, value, attention_mask, *args, **kwargs)
        return original(module, query, key, value, attention_mask, *args, **kwargs)

    return attention


@contextlib.contextmanager
def packed_forwards(models: Iterable[nn.Module | None]) -> Iterator[None]:
    """Within the block, fused-head calls of ``models`` run padding-free (module docstring), and transformers'
    ``sdpa`` attention runs per sequence for them. Other calls are untouched. Hooks and the registry entry are
    removed on exit."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    pending: dict[int, tuple | None] = {}  # module id -> its packed call in flight (calls do not nest per module)

    def pre_hook(module, args, kwargs):
        packed = pending[id(module)] = None if args else pack_batch(kwargs)
        if packed is None:
            return None
        _active.lengths = packed[2]
        return args, packed[0]

    def post_hook(module, args, kwargs, output):
        packed = pending.pop(id(module), None)
        if packed is None:
            return None
        _active.lengths = None
        return unpack_outputs(output, packed[1])

    handles = []
    for model in {id(m): m for m in models if m is not None}.values():
        handles.append(model.register_forward_pre_hook(pre_hook, with_kwargs=True))
        handles.append(model.register_forward_hook(post_hook, with_kwargs=True))
    had_local = "sdpa" in ALL_ATTENTION_FUNCTIONS._local_mapping
    previous = ALL_ATTENTION_FUNCTIONS._local_mapping.get("sdpa")
    ALL_ATTENTION_FUNCTIONS["sdpa"] = _attention_for(ALL_ATTENTION_FUNCTIONS["sdpa"])
    try:
        yield
    finally:
        _active.lengths = None
        for handle in handles:
            handle.remove()
        if had_local:
            ALL_ATTENTION_FUNCTIONS._local_mapping["sdpa"] = previous
        else:
            del ALL_ATTENTION_FUNCTIONS._local_mapping["sdpa"]
