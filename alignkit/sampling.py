"""Next-token sampling for the decode engine: temperature, top-k and exact top-p, from per-prompt random streams.

Semantics are those of transformers' logits warpers, applied in their order (temperature, top-k, top-p)::

    q      = softmax(logits / T)                                   over the vocabulary V
    top-k  : keep the k most probable tokens (k = 0 keeps all) and renormalise
    top-p  : with tokens in descending probability, keep token r while the mass before it is below top_p,
             sum_{s < r} q_s < top_p (so the token that crosses top_p is kept, and always at least one), renormalise

(``TopPLogitsWarper`` states the same rule from the ascending side: drop a token when the mass up to and including
it, in ascending order, is <= 1 - top_p.) Tokens of equal probability at the cut may be ordered differently.

Why not the warpers: top-p sorts the whole vocabulary every step. For SmolLM2 (49,152 tokens) that was 0.30 s per step
at batch 64 on one CPU core, as long as the model's forward. Here the nucleus is taken inside a ``torch.topk``
prefilter of :data:`PREFILTER` tokens. That is exact whenever the prefilter holds at least top_p of the mass: the
token after it then has at least top_p before it and is dropped anyway. A row whose prefilter mass is below top_p
(a flat distribution) is taken again with a 4x wider top-K, up to the whole vocabulary (a full sort of that row), so
the result is always exactly top-p.

Sampling is by inverse CDF from one uniform number per row and step: token r is chosen when
``cum_{r-1} <= u * Z < cum_r`` over the kept candidates (Z their total). Each prompt draws its uniforms from its own
generator (:class:`RowStreams`), seeded from (seed, prompt index), and draws exactly one per generated token, so a
row's samples do not depend on which other rows share its batch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch

# Candidates taken by torch.topk before top-p. SmolLM2 sampling ShareGPT replies at T = 0.8, top-p 0.95 (64 prompts x
# 64 tokens, 3,779 row-steps): median nucleus 7 tokens, 3.5 % over 256, 0.24 % over 1024, 0.03 % over 2048. At batch
# 64 on one core, topk(256) takes 34 ms, topk(1024) 67 ms, a full sort 548 ms; the few rows that 256 misses are
# widened on their own (4x at a time).
PREFILTER = 256


def candidates(
    logits: torch.Tensor, temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0, prefilter: int = PREFILTER
) -> tuple[torch.Tensor, torch.Tensor]:
    """The tokens each row may sample and their probabilities.

    Args:
        logits: (B, V) raw logits.
        prefilter: the first top-K width for top-p; rows it misses are widened 4x at a time, up to the vocabulary.
    Returns:
        ``(ids, probs)``, both (B, W) with W <= V: candidate token ids (most probable first, except for plain
        temperature sampling, which keeps the vocabulary order) and their sampling probabilities after temperature,
        top-k and top-p, renormalised to sum to 1; 0 for candidates that were cut.
    """
    scaled = logits.float() / temperature
    rows, vocab = scaled.shape
    k = min(top_k, vocab) if top_k > 0 else vocab
    if k == vocab and top_p >= 1.0:  # plain temperature sampling: the whole vocabulary, no sort needed
        ids = torch.arange(vocab, device=scaled.device).expand(rows, vocab)
        return ids, torch.softmax(scaled, dim=-1)
    width = k if top_k > 0 else min(prefilter, vocab)
    values, ids = torch.topk(scaled, width, dim=-1)  # descending
    # Probabilities under the top-k-renormalised distribution: normalise over the top k (top_k > 0) or over the
    # whole vocabulary (top_k = 0, where the prefilter is only a shortcut).
    log_z = torch.logsumexp(values if top_k > 0 else scaled, dim=-1, keepdim=True)
    probs = torch.exp(values - log_z)
    if top_p < 1.0:
        probs, short = _nucleus(probs, top_p, complete=width >= k)
        while short is not None:  # rows whose nucleus may reach past the prefilter: a wider top-K for them only
            width = min(4 * width, k)
            values, wide_ids = torch.topk(scaled[short], width, dim=-1)
            wide, still = _nucleus(torch.exp(values - log_z[short]), top_p, complete=width >= k)
            n = int((wide > 0).sum(-1).max())
            if n > ids.shape[1]:
                pad = n - ids.shape[1]
                ids = torch.cat([ids, ids.new_zeros(rows, pad)], dim=1)
                probs = torch.cat([probs, probs.new_zeros(rows, pad)], dim=1)
            ids[short, :n], probs[short] = wide_ids[:, :n], 0.0
            probs[short, :n] = wide[:, :n]
            short = short[still] if still is not None else None
    return ids, probs / probs.sum(-1, keepdim=True)


def _nucleus(probs: torch.Tensor, top_p: float, complete: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Top-p within descending ``probs`` (B, W): kept probabilities (0 for the cut), and the indices of rows
    whose W candidates hold less than top_p of the mass (``None`` if there are none, or if ``complete``: the W
    candidates are all there is)."""
    cum = probs.cumsum(-1)
    short = None
    if not complete:
        found = (cum[:, -1] < top_p).nonzero().squeeze(1)
        short = found if found.numel() else None
    return torch.where(cum - probs < top_p, probs, torch.zeros_like(probs)), short


def sampling_probs(
    logits: torch.Tensor, temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0, prefilter: int = PREFILTER
) -> torch.Tensor:
    """(B, V) dense form of :func:`candidates`: the probability of every vocabulary token (for checks)."""
    ids, probs = candidates(logits, temperature, top_p, top_k, prefilter)
    return torch.zeros(logits.shape, dtype=probs.dtype, device=probs.device).scatter_add_(1, ids, probs)


def pick(ids: torch.Tensor, probs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """(B,) tokens by inverse CDF: the candidate r with cum_{r-1} <= u * Z < cum_r, for ``uniforms`` u (B,) in [0, 1).

    ``searchsorted(right=True)`` finds the first candidate whose cumulative mass exceeds u * Z; the mass only rises
    at candidates with probability > 0, so a cut candidate is never chosen (the clamp covers u * Z rounding up to Z).
    """
    cum = probs.cumsum(-1)
    target = uniforms.to(cum.dtype)[:, None] * cum[:, -1:]
    r = torch.searchsorted(cum, target.contiguous(), right=True)
    positive = probs > 0
    last = probs.shape[1] - 1 - positive.flip(-1).int().argmax(-1, keepdim=True)  # last candidate with mass
    return ids.gather(1, torch.minimum(r, last)).squeeze(1)


def row_seed(seed: int, index: int) -> int:
    """A 63-bit seed for prompt ``index`` under run ``seed``: distinct pairs give unrelated streams."""
    return int.from_bytes(hashlib.sha256(f"alignkit/{seed}/{index}".encode()).digest()[:8], "little") >> 1


class RowStreams:
    """One CPU ``torch.Generator`` per prompt, seeded with :func:`row_seed`; uniforms are drawn on the CPU, so a
    prompt's stream is the same on every device."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._gens: dict[int, torch.Generator] = {}

    def uniforms(self, indices: Sequence[int]) -> torch.Tensor:
        """(len(indices),) fp64 uniforms in [0, 1), the next number of each prompt's stream."""
        out = torch.empty(len(indices), dtype=torch.float64)
        for j, i in enumerate(indices):
            gen = self._gens.get(i)
            if gen is None:
                gen = self._gens[i] = torch.Generator().manual_seed(row_seed(self.seed, i))
            out[j] = float(torch.rand((), generator=gen, dtype=torch.float64))
        return out

    def drop(self, index: int) -> None:
        """Forget a finished prompt's generator."""
        self._gens.pop(index, None)
