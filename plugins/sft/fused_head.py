"""Log-probs of context tokens from TRL 1.16's fused LM head, without the (B, T, V) logits (pure torch).

TRL's fused head returns only the target log-probs. :func:`capture_fused_forward` keeps the final hidden states and
those log-probs of TRL's own forward; :func:`context_logprobs` builds ``ctx_logp[b, i, j] = log p(x_j | x_{≤i})`` from
them and the head rows of the context tokens (the unlikelihood loss of :mod:`alignkit.plugins.sft.unlikelihood`
reads only those), with the head transform :func:`head_transform` mirrors. Cost O(B·T²·H).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from alignkit.plugins.sft.unlikelihood import _at_least_fp32, _valid

__all__ = ["capture_fused_forward", "context_logprobs", "head_transform", "sampled_repetition_rate"]


def head_transform(text_config) -> tuple[float, float | None]:
    """``(logit_scale, softcap)`` that TRL 1.16's ``add_fused_lm_head`` applies to the raw head logits.

    Same lookup order as TRL (pinned by ``tests/test_seams.py``): ``logit_scale``, else ``output_multiplier``, else
    ``lm_head_multiplier``, else ``1/logits_scaling`` (× for HyperCLOVA X), else 1; softcap =
    ``final_logit_softcapping`` (None = none).
    """
    scale = None
    for name in ("logit_scale", "output_multiplier", "lm_head_multiplier"):
        scale = getattr(text_config, name, None)
        if scale is not None:
            break
    scaling = getattr(text_config, "logits_scaling", None)
    if scale is None and scaling is not None:
        scale = scaling if getattr(text_config, "model_type", None) == "hyperclovax" else 1 / scaling
    return (1.0 if scale is None else scale), getattr(text_config, "final_logit_softcapping", None)


@contextlib.contextmanager
def capture_fused_forward(model: torch.nn.Module, backbone: torch.nn.Module) -> Iterator[dict]:
    """Scoped forward hooks that keep, from the first fused-head forward, the backbone's ``last_hidden_state``
    (``"hidden"``, with the autocast state it ran under, ``"autocast"``) and the fused output's per-token
    ``log_probs`` (``"log_probs"``), both with their graph.

    Later forwards (e.g. TRL's logits-only forward for ``return_outputs``) are ignored. Hooks only read.
    """
    captured: dict = {}

    def on_backbone(module, args, output):
        if "log_probs" not in captured:
            hidden = captured["hidden"] = output.last_hidden_state
            # Mixed precision autocasts inside the model's forward only: keep its dtype to project like the fused head.
            device = hidden.device.type
            captured["autocast"] = (device, torch.get_autocast_dtype(device), torch.is_autocast_enabled(device))

    def on_model(module, args, output):
        log_probs = getattr(output, "log_probs", None)
        if log_probs is not None and "log_probs" not in captured:
            captured["log_probs"] = log_probs

    handles = [backbone.register_forward_hook(on_backbone), model.register_forward_hook(on_model)]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


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
