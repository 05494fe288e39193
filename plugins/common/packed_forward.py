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
_active = threading.local()  # the attention groups of the packed forward running in this thread


def _first_labelled(labels: torch.Tensor, lengths: list[int]) -> list[int]:
    """Per row, the first position whose label is scored (the row's length when none is)."""
    scored = labels != -100
    has = scored.any(dim=1).tolist()
    first = scored.int().argmax(dim=1).tolist()
    return [f if h else n for f, h, n in zip(first, has, lengths, strict=True)]


def _layout(ids: torch.Tensor, labels: torch.Tensor, lengths: list[int], share_pair_prefix: bool):
    """Packed order as ``(groups, pieces, reads)``: groups ``[(prefix length, [tail lengths])]``; pieces ``[(row,
    start, end, packed start)]`` in packed order, the prefix piece of a group first (taken from its first row);
    reads, the same for where every row's tokens are read back from (a pair's second row reads the shared prefix
    from its first row's piece)."""
    batch = len(lengths)
    if share_pair_prefix and batch % 2 == 0:
        half, first = batch // 2, _first_labelled(labels, lengths)
        pairs = [(i, i + half) for i in range(half)]
    else:
        pairs, first = [(b,) for b in range(batch)], None
    groups, pieces, reads, at = [], [], [], 0
    for rows in pairs:
        shared = 0
        if len(rows) == 2:
            a, b = rows
            n = min(lengths[a], lengths[b])
            differ = (ids[a, :n] != ids[b, :n]).nonzero()
            common = int(differ[0]) if len(differ) else n
            # A shared token's prediction must be unscored in both rows: its target may differ between them.
            shared = max(0, min(common, first[a] - 1, first[b] - 1))
        if shared:
            pieces.append((rows[0], 0, shared, at))
            reads += [(row, 0, shared, at) for row in rows]
            at += shared
        for row in rows:
            pieces.append((row, shared, lengths[row], at))
            reads.append(pieces[-1])
            at += lengths[row] - shared
        groups.append((shared, [lengths[row] - shared for row in rows]))
    return groups, pieces, reads


def pack_batch(kwargs: dict, share_pair_prefix: bool = False) -> tuple[dict, torch.Tensor, torch.Tensor, list] | None:
    """``(packed kwargs, mask (B, T), gather index (B, T), attention groups)`` for a fused-head call, or None to leave
    it as it is. With ``share_pair_prefix`` rows i and i + B/2 (DPO's chosen and rejected) are a pair, and the
    prefix they share, up to the token before the first scored position of either, is packed once: both rows'
    tails attend to it (positions unchanged), so every token sees the same context as in its own row."""
    ids, mask, labels = kwargs.get("input_ids"), kwargs.get("attention_mask"), kwargs.get("labels")
    if not kwargs.get("fused_lm_head") or ids is None or mask is None or labels is None or ids.dim() != 2:
        return None
    if any(isinstance(v, torch.Tensor) and k not in PACKED_KEYS for k, v in kwargs.items()):
        return None  # a per-token input we do not know how to pack (e.g. inputs_embeds, shift_labels)
    mask = mask.bool()
    batch, seq_len = ids.shape
    lengths = mask.sum(dim=1)
    if not torch.equal(mask, torch.arange(seq_len, device=ids.device) < lengths.unsqueeze(1)):
        return None  # not right-padded: the packed rows' positions would not restart at 0
    lengths = lengths.tolist()
    groups, pieces, reads = _layout(ids, labels, lengths, share_pair_prefix)
    if len(pieces) == batch and bool(mask.all()):
        return None  # nothing to drop and nothing shared
    positions = kwargs.get("position_ids")
    if positions is None:
        positions = torch.arange(seq_len, device=ids.device).expand(batch, seq_len)
    shift_labels = torch.cat([labels[:, 1:], labels.new_full((batch, 1), -100)], dim=1)  # target of (b, t): t+1
    source = torch.cat([torch.arange(start, end) + row * seq_len for row, start, end, _ in pieces]).to(ids.device)
    gather = torch.zeros(batch, seq_len, dtype=torch.long)
    for row, start, end, at in reads:
        gather[row, start:end] = torch.arange(at, at + end - start)
    packed = {k: v for k, v in kwargs.items() if k not in PACKED_KEYS}
    packed.update(
        input_ids=ids.reshape(-1)[source].unsqueeze(0),
        position_ids=positions.expand(batch, seq_len).reshape(-1)[source].unsqueeze(0),
        attention_mask=None,
        shift_labels=shift_labels.reshape(-1)[source].unsqueeze(0),
    )
    return packed, mask, gather.to(ids.device), groups


def unpack_outputs(output, mask: torch.Tensor, gather: torch.Tensor):
    """Per-token fields of a packed fused output (1, N) back in TRL's (B, T−1) layout, in place; returns it.
    ``gather[b, t]`` is the packed index of token (b, t); padding reads 0."""
    for name in PER_TOKEN_FIELDS:
        value = getattr(output, name, None)
        if value is not None:
            full = value[0][gather].masked_fill(~mask, 0)
            setattr(output, name, full[:, :-1])
    return output


def _causal(q, k, v, scaling, prefix=None):
    """softmax(q·kᵀ·scaling + causal) in fp32 → q's dtype, times v; q (1, Hq, L, d), k/v (1, Hkv, L, d), and with
    ``prefix`` = (k, v) of S earlier tokens every query also sees all of them."""
    groups = q.shape[1] // k.shape[1]
    length, shared = q.shape[2], 0
    if prefix is not None:
        shared = prefix[0].shape[2]
        k, v = torch.cat([prefix[0], k], dim=2), torch.cat([prefix[1], v], dim=2)
    k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    scores = torch.matmul(q, k.transpose(2, 3)) * scaling
    future = torch.ones(length, shared + length, dtype=torch.bool, device=q.device).triu(shared + 1)
    probs = torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1, dtype=torch.float32).to(q.dtype)
    return torch.matmul(probs, v)


def segment_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """Causal attention of each packed sequence on its own; query (1, Hq, N, d), key/value (1, Hkv, N, d).

    Per group of the packed layout (``_active.groups``): the shared prefix attends causally to itself, each tail to
    the prefix and causally to itself; softmax in fp32, cast back to q's dtype, times v, as transformers' eager
    attention computes it. Returns ``(output (1, N, Hq, d), None)``."""
    if kwargs.get("sliding_window") is not None or kwargs.get("softcap") is not None or dropout:
        raise ValueError("cpu_fast_path: packed attention supports plain causal attention only (no sliding window, "
                         "softcap or attention dropout); set cpu_fast_path=false for this model")  # fmt: skip
    with torch.profiler.record_function("alignkit::packed_attention"):  # a name for bench/mfu.py's phases
        return _segment_attention(query, key, value, scaling)


def _segment_attention(query, key, value, scaling):
    outputs, at = [], 0
    for shared, tails in _active.groups:
        span = slice(at, at + shared)
        prefix = (key[:, :, span], value[:, :, span]) if shared else None
        if shared:
            outputs.append(_causal(query[:, :, span], key[:, :, span], value[:, :, span], scaling))
        at += shared
        for length in tails:
            span = slice(at, at + length)
            outputs.append(_causal(query[:, :, span], key[:, :, span], value[:, :, span], scaling, prefix))
            at += length
    return torch.cat(outputs, dim=2).transpose(1, 2).contiguous(), None


def _packed_length(groups) -> int:
    return sum(shared + sum(tails) for shared, tails in groups)


def _attention_for(original):
    def attention(module, query, key, value, attention_mask, *args, **kwargs):
        groups = getattr(_active, "groups", None)
        if groups is not None and query.shape[0] == 1 and query.shape[2] == _packed_length(groups):
            return segment_attention(module, query, key, value, attention_mask, *args, **kwargs)
        return original(module, query, key, value, attention_mask, *args, **kwargs)

    return attention


@contextlib.contextmanager
def packed_forwards(models: Iterable[nn.Module | None], share_pair_prefix: bool = False) -> Iterator[None]:
    """Within the block, fused-head calls of ``models`` run padding-free (module docstring), and transformers'
    ``sdpa`` attention runs per sequence for them. Other calls are untouched. Hooks and the registry entry are
    removed on exit. ``share_pair_prefix``: see :func:`pack_batch`; only for models whose attention is ``sdpa``
    (the per-sequence attention here is what keeps the shared prefix correct)."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    pending: dict[int, tuple | None] = {}  # module id -> its packed call in flight (calls do not nest per module)

    def pre_hook(module, args, kwargs):
        share = share_pair_prefix and getattr(module.config, "_attn_implementation", None) == "sdpa"
        packed = pending[id(module)] = None if args else pack_batch(kwargs, share)
        if packed is None:
            return None
        _active.groups = packed[3]
        return args, packed[0]

    def post_hook(module, args, kwargs, output):
        packed = pending.pop(id(module), None)
        if packed is None:
            return None
        _active.groups = None
        return unpack_outputs(output, packed[1], packed[2])

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
        _active.groups = None
        for handle in handles:
            handle.remove()
        if had_local:
            ALL_ATTENTION_FUNCTIONS._local_mapping["sdpa"] = previous
        else:
            del ALL_ATTENTION_FUNCTIONS._local_mapping["sdpa"]
