"""The analytic KL reading of a PPO rollout (``PPOConfig.kl_reading: analytic``).

k1 and k3 read a rollout's KL from the log-probs of the sampled tokens only, so one rollout's reading carries the
noise of which token was drawn at every position: on a fixed ppo-smol policy, readings of successive 64-sequence
rollouts spread with sd 0.121 (k1) and 0.099 (k3) around a KL of ~0.4, against a controller band of ±0.125
(bench/results/efficacy.md, session 18, ``bench/kl_reading_noise.py``). The analytic reading takes the expectation
over each next token exactly instead (:func:`~alignkit.plugins.common.kl_estimators.kl_topk_analytic`, over the
policy's top ``TOP_K`` tokens, the rest bounded); only the prefixes are sampled (sd 0.026 there).

Where the numbers come from, without an extra forward:

- π: the sampling pass already computes the policy's whole next-token distribution at every completion position;
  :class:`~alignkit.plugins.ppo.ppo_logps.SampledLogProbs` keeps its top k (log-probs and ids).
- π_ref: the rollout's reference forward (TRL's fused LM head, compact: the completion positions only) is recorded
  by :func:`record_head_rows`: the hidden rows the head scored, its weight and transform. :func:`ref_logps_at` then
  projects those rows onto the k ids only, and takes log Z from the head's own log-prob of the sampled token
  (log Z = z_y − log π_ref(y)), or, where the head ran in reduced precision, from a full fp32 pass over the rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from alignkit.plugins.common.head_logprobs import _transform
from alignkit.plugins.common.kl_estimators import kl_topk_analytic

__all__ = ["TOP_K", "HeadRows", "analytic_kl", "record_head_rows", "ref_logps_at"]

TOP_K = 64  # policy tokens per position; what they leave out is logged (kl/analytic_tail)
_ROW_CHUNK = 128  # rows per gather / full-vocabulary pass: (128, 64, H) and (128, V) fp32 tiles


@dataclass(frozen=True)
class HeadRows:
    """One call of TRL's fused LM-head function: the (N, H) hidden rows it scored and what it scored them with."""

    hidden: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor | None
    targets: torch.Tensor
    temperature: float
    softcap: float | None
    scale: float
    reduced_precision: bool  # the head's logits were not fp32 (autocast or a low-precision weight / input)


@contextmanager
def record_head_rows(sink: list[HeadRows]) -> Iterator[None]:
    """Within the block, each call of TRL's fused LM-head function (``trl.trainer.utils._ChunkedLogProbFunction``,
    or whatever stands in for it, e.g. the CPU fast path's) also appends its inputs to ``sink``. The call itself and
    its results are unchanged."""
    import trl.trainer.utils as trl_utils

    inner = trl_utils._ChunkedLogProbFunction

    class _Recorder:
        @staticmethod
        def apply(hidden, weight, bias, targets, temperature, chunk_size, softcap=None, scale=1.0, outputs=None):
            device = hidden.device.type
            reduced = torch.is_autocast_enabled(device) or hidden.dtype != torch.float32
            reduced = reduced or weight.dtype != torch.float32
            bias_rows = None if bias is None else bias.detach()
            sink.append(
                HeadRows(hidden.detach(), weight.detach(), bias_rows, targets.detach(), float(temperature), softcap,
                         float(scale), reduced)
            )  # fmt: skip
            return inner.apply(hidden, weight, bias, targets, temperature, chunk_size, softcap, scale, outputs)

    trl_utils._ChunkedLogProbFunction = _Recorder
    try:
        yield
    finally:
        trl_utils._ChunkedLogProbFunction = inner


def _z(rows: HeadRows, weight: torch.Tensor, bias: torch.Tensor | None, hidden: torch.Tensor, ids) -> torch.Tensor:
    """z = f(h·W_vᵀ + b_v)/T in fp32 (the head's transform, :mod:`~alignkit.plugins.common.head_logprobs`), at the
    (n, k) ``ids`` of each row, or over the whole vocabulary when ``ids`` is None; ``weight``/``bias`` in fp32."""
    if ids is None:
        raw = hidden @ weight.t()
        raw = raw + bias if bias is not None else raw
    else:
        raw = torch.linalg.vecdot(weight[ids], hidden.unsqueeze(1))
        raw = raw + bias[ids] if bias is not None else raw
    return _transform(raw, rows.scale, rows.softcap, 1.0 / rows.temperature)


def ref_logps_at(rows: HeadRows, ids: torch.Tensor, target_logps: torch.Tensor) -> torch.Tensor:
    """log π_ref at ``ids`` (N, k) for each of ``rows``' N hidden rows: z_v − log Z.

    log Z = z_y − log π_ref(y) from ``target_logps`` (N,), the head's own log-prob of each row's target y, when the
    head ran in fp32 (then the same number up to summation order); else logsumexp_v z_v over the whole vocabulary
    in fp32, so that the k log-probs and log Z come from one precision."""
    weight = rows.weight.float()
    bias = None if rows.bias is None else rows.bias.float()
    out = torch.empty(ids.shape, dtype=torch.float32, device=ids.device)
    for start in range(0, ids.size(0), _ROW_CHUNK):
        part = slice(start, start + _ROW_CHUNK)
        hidden = rows.hidden[part].float()
        if rows.reduced_precision:
            log_z = torch.logsumexp(_z(rows, weight, bias, hidden, None), dim=-1)
        else:
            z_target = _z(rows, weight, bias, hidden, rows.targets[part].unsqueeze(1)).squeeze(1)
            log_z = z_target - target_logps[part].float()
        out[part] = _z(rows, weight, bias, hidden, ids[part]) - log_z.unsqueeze(1)
    return out


def analytic_kl(
    top: tuple[torch.Tensor, torch.Tensor],
    recorded: list[HeadRows],
    ref_logps: torch.Tensor,
    completion_ids: torch.Tensor,
    mask: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Per-token analytic KL and tail mass, (B, C) each (0 off the mask), or None when the recorded rows are not
    this rollout's completion positions in order (then the caller reads k3).

    Args:
        top: (B, C, k) π log-probs and ids of each position's top k (``SampledLogProbs.serve_top``).
        recorded: the reference forward's head calls (:func:`record_head_rows`), in batch order.
        ref_logps: (B, C) log π_ref of the sampled tokens; completion_ids, mask: (B, C).
    """
    valid = mask.bool()
    if not recorded or sum(r.hidden.size(0) for r in recorded) != int(valid.sum()):
        return None
    # A head weight gathered only inside the call (DeepSpeed ZeRO-3 partitions it again after) is not readable here.
    if any(r.weight.dim() != 2 or r.weight.size(1) != r.hidden.size(1) for r in recorded):
        return None
    targets = torch.cat([r.targets for r in recorded]).to(completion_ids.device)
    if not torch.equal(targets, completion_ids[valid]):  # rows are the valid positions, row-major over (B, C)
        return None
    top_logps, top_ids = (t[valid] for t in top)
    target_logps = ref_logps[valid]
    pieces, start = [], 0
    for rows in recorded:
        n = rows.hidden.size(0)
        ids = top_ids[start : start + n].to(rows.hidden.device)
        pieces.append(ref_logps_at(rows, ids, target_logps[start : start + n].to(rows.hidden.device)))
        start += n
    kl_rows, tail_rows = kl_topk_analytic(top_logps.float(), torch.cat(pieces).to(top_logps.device))
    kl, tail = (torch.zeros(mask.shape, dtype=torch.float32, device=mask.device) for _ in range(2))
    kl[valid], tail[valid] = kl_rows.to(mask.device), tail_rows.to(mask.device)
    return kl, tail
