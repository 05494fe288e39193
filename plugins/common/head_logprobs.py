"""Per-token log-probs of an LM head at the scored positions only, for the CPU fast path (pure torch).

TRL 1.16's fused head (``trl.kernels.ChunkedLogProbFunction``) tiles the *vocabulary* in chunks of 32,768 and, on a
CPU, folds each tile with torch ops in fp32, recomputes every tile in the backward and accumulates the gradient GEMMs
in fp32 (``_addmm_fp32`` upcasts the bf16 tiles), so under bf16 autocast its backward runs at the fp32 matmul rate.
:class:`CompactHeadLogProb` has TRL's call signature and outputs, and differs only in how the work is laid out:

- it tiles the *tokens* (``TOKEN_CHUNK`` rows) against the whole vocabulary, so each row's softmax is one fp32
  reduction and each gradient GEMM reduces over the whole vocabulary inside one matmul (fp32 accumulation inside the
  BLAS kernel, one rounding of the result to the compute dtype);
- it keeps one (rows, V) tile per token tile for the backward when they fit in ``SAVE_BUDGET_BYTES``, instead of
  recomputing the logits: the fp32 probabilities p when the logit transform is the identity (the log-prob gradient
  g·(1[v = y] − p_v) then needs nothing else), else the raw logits in the compute dtype;
- the gradient GEMMs run in the compute dtype (bf16 under autocast, as any autocast linear's backward does).

Per row n with raw logits a = h_n·Wᵀ + b (rounded to the compute dtype, as TRL's tile is), z = f(a)/T where
f(a) = s·tanh(κa/s) with a softcap s, else κa (κ = ``logit_scale``), and log Z = logsumexp_v z_v::

    log p_n   = z_{n,y_n} − log Z_n
    H_n       = log Z_n − Σ_v p_v z_v                           (entropy)
    lssp_n    = log Σ_v p_v²                                    (log_sum_sq_probs, no grad)
    mean_n    = (1/V) Σ_v z_v                                   (mean_logits, no grad)
    top1_n    = [argmax_v z_v = y_n]  (first maximum wins)      (is_top1, no grad)
    ∂L/∂z_v   = g_lp·(1[v = y_n] − p_v) − g_H·p_v·(log p_v + H_n)
    ∂L/∂a_v   = ∂L/∂z_v · (1/T) · κ · (1 − tanh²(κa_v/s) with a softcap, else 1)

In fp32 mode every step is fp32 and the results equal TRL's up to summation order; under bf16 autocast the logits
are rounded to bf16 exactly as in TRL, and so is ∂L/∂a (TRL rounds it too), and the gradients of the hidden states
are rounded once to bf16 (TRL keeps them fp32):
tests/test_fast_path.py bounds both.
"""

from __future__ import annotations

import torch

__all__ = ["CompactHeadLogProb", "OPTIONAL_OUTPUTS", "SAVE_BUDGET_BYTES", "TOKEN_CHUNK", "WeightCastCache"]

OPTIONAL_OUTPUTS = ("entropy", "log_sum_sq_probs", "mean_logits", "is_top1")
TOKEN_CHUNK = 128  # rows per tile: a (128, 49152) fp32 tile is 25 MB, and the GEMM still runs near the BLAS peak
SAVE_BUDGET_BYTES = 512 * 2**20  # keep a tile per token tile for the backward up to this size, else recompute


class WeightCastCache:
    """The compute-dtype copy of a frozen weight, made once instead of on every head call.

    A copy is reused while the weight is frozen (no grad), its storage is the same and its version counter has not
    moved (an in-place update bumps it); a weight that trains is cast on every call, as autocast would."""

    def __init__(self):
        self._copies: dict[int, tuple[int, int, torch.Tensor]] = {}

    def get(self, weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        if weight.dtype == dtype:
            return weight.detach()
        if weight.requires_grad:
            return weight.detach().to(dtype)
        key = (weight.data_ptr(), weight._version)
        hit = self._copies.get(id(weight))
        if hit is not None and hit[:2] == key and hit[2].dtype == dtype:
            return hit[2]
        copy = weight.detach().to(dtype)
        self._copies[id(weight)] = (*key, copy)
        return copy


def _transform(raw: torch.Tensor, logit_scale: float, softcap: float | None, inv_t: float) -> torch.Tensor:
    """z = f(a)/T in fp32, in place on a fresh fp32 copy of ``raw`` (C, V)."""
    z = raw.float() if raw.dtype != torch.float32 else raw.clone()
    if logit_scale != 1.0:
        z.mul_(logit_scale)
    if softcap is not None:
        z.div_(softcap).tanh_().mul_(softcap)
    if inv_t != 1.0:
        z.mul_(inv_t)
    return z


def _raw_logits(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """a = h·Wᵀ + b in the weight's (compute) dtype, (C, V)."""
    raw = torch.mm(hidden.to(weight.dtype), weight.t())
    return raw.add_(bias) if bias is not None else raw


def _fold(
    raw: torch.Tensor, targets: torch.Tensor, outputs: tuple[str, ...], transform: tuple, keep_p: bool
) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """Per-row statistics (module docstring) of the raw logits a (C, V), and, with ``keep_p``, p = softmax(z) in
    fp32 (else None). One fp32 copy of the tile, then in-place passes: on the CPU a mixed-dtype op would copy its
    bf16 operand anyway, once per op."""
    out: dict[str, torch.Tensor] = {}
    if transform == (1.0, None, 1.0):  # z = a: an fp32 view of the tile, or the fp32 tile itself (not kept)
        z = raw if raw.dtype == torch.float32 else raw.float()
    else:
        z = _transform(raw, *transform)
    target_z = z.gather(1, targets.unsqueeze(1)).squeeze(1)
    if "mean_logits" in outputs:
        out["mean_logits"] = z.mean(dim=1)
    if "is_top1" in outputs:  # max(dim) gives the first maximum's index with the max, in one pass
        m, first_max = z.max(dim=1, keepdim=True)
        out["is_top1"] = first_max.squeeze(1) == targets
    else:
        m = z.amax(dim=1, keepdim=True)
    y = z.sub_(m)  # z − max ≤ 0
    e = torch.exp(y) if {"entropy", "log_sum_sq_probs"} & set(outputs) else y.exp_()
    sum_e = e.sum(dim=1)
    log_sum_e = sum_e.log()
    out["log_z"] = m.squeeze(1) + log_sum_e
    out["log_probs"] = target_z - out["log_z"]
    if "entropy" in outputs:
        # H = log Z − Σ p z = log Σe − Σ e·(z − m) / Σe
        out["entropy"] = log_sum_e - torch.linalg.vecdot(e, y) / sum_e
    if "log_sum_sq_probs" in outputs:
        out["log_sum_sq_probs"] = torch.linalg.vecdot(e, e).log() - 2 * log_sum_e
    return out, (e.mul_(sum_e.reciprocal().unsqueeze(1)) if keep_p else None)


def _logprob_grad_from_p(p: torch.Tensor, targets: torch.Tensor, log_probs: torch.Tensor, g: torch.Tensor):
    """∂L/∂a = g·(1[v = y] − p_v) in fp32 from the kept fp32 probabilities (identity transform, log-prob gradient
    only), overwriting them; the target entry is g·(1 − p_y) with p_y from the fp32 log-prob."""
    g = g.float().unsqueeze(1)
    grad = p.mul_(-g)
    return grad.scatter_(1, targets.unsqueeze(1), g * (1 - log_probs.float().exp().unsqueeze(1)))


def _grad_logits(raw, targets, log_z, entropy, rows, grad_log_probs, grad_entropy, transform) -> torch.Tensor:
    """∂L/∂a in fp32 for one tile (module docstring), from the raw logits a (C, V)."""
    logit_scale, softcap, inv_t = transform
    z = _transform(raw, logit_scale, softcap, inv_t)
    log_p = z.sub_(log_z[rows].unsqueeze(1))
    p = torch.exp(log_p)
    grad = torch.zeros_like(p)
    if grad_log_probs is not None:
        g = grad_log_probs[rows].float().unsqueeze(1)
        grad.addcmul_(p, g, value=-1.0).scatter_add_(1, targets.unsqueeze(1), g)
    if grad_entropy is not None:
        g = grad_entropy[rows].float().unsqueeze(1)
        grad.sub_(p.mul_(log_p.add_(entropy[rows].unsqueeze(1))).mul_(g))
    if softcap is not None:  # d/da s·tanh(κa/s) = κ·(1 − tanh²)
        t = torch.tanh(raw.float() * (logit_scale / softcap))
        grad.mul_(1 - t * t)
    if inv_t * logit_scale != 1.0:
        grad.mul_(inv_t * logit_scale)
    return grad


class CompactHeadLogProb(torch.autograd.Function):
    """Drop-in for ``trl.kernels.ChunkedLogProbFunction`` (same arguments and outputs) laid out for the CPU (module
    docstring), plus ``weight_cast``: the weight already in the compute dtype (see :class:`WeightCastCache`), or
    None to cast it here.

    Shapes: hidden (N, H), weight (V, H), bias (V,) or None, targets (N,) in [0, V); every output is (N,).
    ``chunk_size`` (TRL's vocabulary tile) is accepted and ignored: the tile here is ``TOKEN_CHUNK`` rows.
    """

    @staticmethod
    def forward(
        ctx,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        targets: torch.Tensor,
        temperature: float,
        chunk_size: int,
        final_logit_softcapping: float | None = None,
        logit_scale: float = 1.0,
        outputs: tuple[str, ...] = OPTIONAL_OUTPUTS,
        weight_cast: torch.Tensor | None = None,
    ):
        ctx.set_materialize_grads(False)
        device = hidden.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else hidden.dtype
        n_rows, vocab = hidden.shape[0], weight.shape[0]
        w = weight_cast if weight_cast is not None else weight.detach().to(dtype)
        b = None if bias is None else bias.detach().to(dtype)
        needs_grad = any(ctx.needs_input_grad[:3])
        transform = (logit_scale, final_logit_softcapping, 1.0 / temperature)
        # Kept for the backward (one (C, V) tile per chunk): with the identity transform the fp32 probabilities p
        # (the backward needs nothing else for log-prob gradients), else the raw logits a in the compute dtype.
        keep_p = transform == (1.0, None, 1.0)
        keep = needs_grad and n_rows * vocab * (4 if keep_p else w.element_size()) <= SAVE_BUDGET_BYTES
        keep_p = keep and keep_p
        names = ("log_probs", "log_z", *(o for o in OPTIONAL_OUTPUTS if o in outputs))
        stats = {name: [] for name in names}
        saved = []
        with torch.autocast(device, enabled=False):
            for start in range(0, n_rows, TOKEN_CHUNK):
                raw = _raw_logits(hidden[start : start + TOKEN_CHUNK].detach(), w, b)
                folded, p = _fold(raw, targets[start : start + TOKEN_CHUNK], outputs, transform, keep_p)
                if keep:
                    saved.append(("p", p) if keep_p else ("raw", raw))
                for name, value in folded.items():
                    stats[name].append(value)
        empty = {"is_top1": torch.zeros(0, dtype=torch.bool, device=hidden.device)}  # no scored row at all
        full = {
            name: torch.cat(parts) if parts else empty.get(name, hidden.new_zeros(0, dtype=torch.float32))
            for name, parts in stats.items()
        }
        entropy = full.get("entropy")
        ctx.save_for_backward(hidden, weight, bias, targets, full["log_z"], entropy, full["log_probs"])
        ctx.w, ctx.b, ctx.saved, ctx.dtype, ctx.transform = w, b, saved, dtype, transform
        extras = tuple(full.get(name) for name in ("log_sum_sq_probs", "mean_logits", "is_top1"))
        ctx.mark_non_differentiable(*(x for x in extras if x is not None))
        return (full["log_probs"], entropy, *extras)

    @staticmethod
    def backward(ctx, grad_log_probs, grad_entropy, *_):
        hidden, weight, bias, targets, log_z, entropy, log_probs = ctx.saved_tensors
        w, b, dtype = ctx.w, ctx.b, ctx.dtype
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        fp32 = dict(dtype=torch.float32, device=hidden.device)
        grad_hidden = torch.empty(hidden.shape, dtype=hidden.dtype, device=hidden.device) if need_h else None
        grad_weight = torch.zeros(weight.shape, **fp32) if need_w else None
        grad_bias = torch.zeros(bias.shape, **fp32) if need_b else None
        with torch.autocast(hidden.device.type, enabled=False):
            for i, start in enumerate(range(0, hidden.shape[0], TOKEN_CHUNK)):
                rows = slice(start, start + TOKEN_CHUNK)
                h = hidden[rows].detach()
                kind, tile = ctx.saved[i] if ctx.saved else ("raw", _raw_logits(h, w, b))
                if kind == "p" and grad_entropy is None:
                    grad_c = _logprob_grad_from_p(tile, targets[rows], log_probs[rows], grad_log_probs[rows]).to(dtype)
                else:
                    raw = tile if kind == "raw" else _raw_logits(h, w, b)
                    grads = (grad_log_probs, grad_entropy)
                    grad_c = _grad_logits(raw, targets[rows], log_z, entropy, rows, *grads, ctx.transform).to(dtype)
                if grad_hidden is not None:
                    grad_hidden[rows] = torch.mm(grad_c, w)
                if grad_weight is not None:
                    grad_weight.addmm_(grad_c.t().float(), h.float())
                if grad_bias is not None:
                    grad_bias += grad_c.sum(dim=0, dtype=torch.float32)
        ctx.saved = None
        return (
            grad_hidden,
            None if grad_weight is None else grad_weight.to(weight.dtype),
            None if grad_bias is None else grad_bias.to(bias.dtype),
            *([None] * 7),
        )
