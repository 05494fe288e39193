"""Token-weighted perplexity with a sliding window, and the per-sequence log-likelihoods the other metrics share.

Definition. For texts ``j`` with scored target tokens ``T_j`` (all tokens but the first, or only the completion)::

    NLL_j = -sum_{t in T_j} log p(x_t | context_t)
    PPL   = exp( sum_j NLL_j / sum_j |T_j| )          # token-weighted: long texts count per token, not per text

Sliding window. A model sees at most ``max_length`` tokens. Targets are scored in chunks of ``stride`` new tokens;
each chunk's window is the ``max_length`` tokens ending at the chunk, so every target is scored exactly once and has
at least ``max_length - stride`` tokens of context (all of it, for texts that fit). ``stride < max_length`` is
required: otherwise the first token of a window would have no context inside it (Hugging Face's "perplexity of
fixed-length models" guide silently drops it). Windows from all texts are batched together with left padding.

Two conventions (both are :func:`completion_perplexity`, with a different model and text):

(a) **held-out perplexity** -- the evaluated model's perplexity on reference texts it did not train on: held-out
    ShareGPT assistant answers given their prompts (only completion tokens count; the chat-formatted prompt is
    context), or raw texts (:func:`text_perplexity`, every token after the first counts). Lower = the model assigns
    more probability to human answers. Comparable across models only when they share a tokenizer.
(b) **response perplexity under a reference** -- the perplexity of the evaluated model's *own generations* under a
    fixed reference model (the base). It measures how far the outputs drifted from what the reference finds likely
    (a fluency / distribution-shift proxy), not how good they are; a model that degenerates into repetition can score
    deceptively low.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from alignkit import prefix_cache as prefix
from alignkit.chat_format import Messages, Prompt, encode_pair
from alignkit.errors import AlignkitError
from alignkit.eval.stats import bootstrap_indices
from alignkit.prefix_cache import positions_after_prefix, shared_prefix_len


def _windows(n: int, first_target: int, max_length: int, stride: int) -> list[tuple[int, int, int]]:
    """``(window_start, target_start, end)`` triples covering targets ``[first_target, n)`` of a length-``n`` text.

    Window ``[window_start, end)`` has at most ``max_length`` tokens; targets ``[target_start, end)`` are scored in
    it, and ``target_start >= window_start + 1`` always holds, so each target has context within its window.
    """
    out = []
    start = max(first_target, 1)  # token 0 has no left context
    while start < n:
        end = min(start + stride, n)
        out.append((max(0, end - max_length), start, end))
        start = end
    return out


def sequence_nlls(
    model: Any,
    sequences: Sequence[list[int]],
    first_targets: Sequence[int],
    max_length: int = 1024,
    stride: int | None = None,
    batch_size: int = 8,
    pad_id: int = 0,
    desc: str = "score",
) -> tuple[np.ndarray, np.ndarray]:
    """Summed NLL (nats) and number of scored tokens per sequence, shapes ``(n_seq,)`` each.

    ``sequences[j]`` are token ids; targets are positions ``t >= first_targets[j]`` (``t >= 1``). Windows of all
    sequences are batched ``batch_size`` at a time (left-padded); logits are upcast to float32 for
    ``cross_entropy``; batch composition changes the result only by fp rounding.
    """
    import torch
    from tqdm.auto import tqdm

    stride = stride or max(1, max_length // 2)
    if not 1 <= stride < max_length:
        raise AlignkitError(
            f"perplexity: stride must be in [1, max_length), got stride={stride}, max_length={max_length}"
        )
    jobs = [
        (j, w)
        for j, (seq, first) in enumerate(zip(sequences, first_targets, strict=True))
        for w in _windows(len(seq), first, max_length, stride)
    ]
    jobs.sort(key=lambda job: job[1][2] - job[1][0], reverse=True)  # similar widths per batch: less padding
    nll = np.zeros(len(sequences))
    count = np.zeros(len(sequences), dtype=np.int64)
    device = next(model.parameters()).device
    # Windows that open their text share its opening tokens (the chat template's system turn and user header): run
    # them once (alignkit.prefix_cache). The prefix ends before the first target's predecessor, which needs logits.
    heads = [(sequences[j], ts) for j, (ws, ts, _) in jobs if ws == 0]
    n_prefix = 0
    if len(heads) > 1 and prefix.supported(model):
        n_prefix = shared_prefix_len([seq for seq, _ in heads], min(ts for _, ts in heads) - 1)
    prefix_kv = prefix.prefix_cache(model, heads[0][0][:n_prefix]) if n_prefix else None
    bar = tqdm(total=len(jobs), desc=desc, unit="window", leave=False)
    with torch.inference_mode():
        for b in range(0, len(jobs), batch_size):
            chunk = jobs[b : b + batch_size]
            p = n_prefix if all(ws == 0 for _, (ws, _, _) in chunk) else 0  # tokens served from the prefix cache
            width = max(end - ws - p for _, (ws, _, end) in chunk)
            # Left padding puts every row's targets at the right edge, so only the last `keep` positions need
            # logits: a (rows, keep, vocab) tensor instead of (rows, width, vocab), which for a 50k-150k vocab is
            # most of the memory and time of the lm head.
            keep = max(end - ts for _, (_, ts, end) in chunk) + 1
            ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            labels = torch.full((len(chunk), keep), -100, dtype=torch.long)
            for r, (j, (ws, ts, end)) in enumerate(chunk):
                ids[r, width - (end - ws - p) :] = torch.tensor(sequences[j][ws + p : end])
                mask[r, width - (end - ws - p) :] = 1
                labels[r, keep - (end - ts) :] = torch.tensor(sequences[j][ts:end])
            positions = positions_after_prefix(mask, p)  # padding must not shift absolute positions
            extra = {}
            if p:  # [prefix | left padding | window]: the mask covers the cached prefix too
                mask = torch.cat([torch.ones((len(chunk), p), dtype=mask.dtype), mask], dim=1)
                extra = {prefix.cache_kwarg(model): prefix.expand(prefix_kv, len(chunk)), "use_cache": True}
            logits = _last_logits(model, ids.to(device), mask.to(device), positions.to(device), keep, extra)
            # logits[:, k] predicts labels[:, k + 1]
            target = labels[:, 1:].to(device)
            # Flattened (positions, vocab) rather than a transposed (rows, vocab, positions) view: on CPU the strided
            # kernel drifts up to 2e-4 nats/token from an fp64 reference, the contiguous one ~1e-5.
            shifted = logits[:, :-1].float()
            tok_nll = torch.nn.functional.cross_entropy(
                shifted.reshape(-1, shifted.size(-1)), target.reshape(-1), ignore_index=-100, reduction="none"
            ).view_as(target)  # (rows, keep - 1), 0 where ignored
            for r, (j, _) in enumerate(chunk):
                nll[j] += float(tok_nll[r].sum())
                count[j] += int((target[r] != -100).sum())
            bar.update(len(chunk))
    bar.close()
    return nll, count


def _last_logits(model: Any, ids: Any, mask: Any, positions: Any, keep: int, extra: dict[str, Any]) -> Any:
    """Logits of the last ``keep`` positions, shape ``(rows, keep, vocab)``; ``extra`` may carry a prefix cache."""
    try:
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=keep, **extra)
    except TypeError:  # an architecture without `logits_to_keep`: compute all logits and slice
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions, **extra)
    return out.logits[:, -keep:]


def completion_nlls(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Prompt],
    completions: Sequence[str | Messages],
    max_length: int = 1024,
    stride: int | None = None,
    batch_size: int = 8,
    desc: str = "score completions",
) -> tuple[np.ndarray, np.ndarray]:
    """Summed completion NLL and completion token count per (prompt, completion) row, shapes ``(n,)``.

    The prompt is chat-formatted context; only completion tokens (content + end-of-turn marker) are scored.
    """
    if len(prompts) != len(completions):
        raise AlignkitError(f"completions: has {len(completions)} rows but prompts has {len(prompts)}")
    pairs = [encode_pair(tokenizer, p, c) for p, c in zip(prompts, completions, strict=True)]
    sequences = [p + c for p, c in pairs]
    firsts = [len(p) for p, _ in pairs]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return sequence_nlls(model, sequences, firsts, max_length, stride, batch_size, pad, desc)


def perplexity_summary(nll: np.ndarray, count: np.ndarray, n_resamples: int = 1000, seed: int = 0) -> dict[str, float]:
    """``{"perplexity", "mean_nll", "n_tokens", "n_texts", "ci_low", "ci_high"}`` from per-text sums.

    The interval is a percentile bootstrap over texts of the token-weighted ratio ``exp(sum NLL / sum tokens)``
    (texts are the independent units, tokens within a text are not).
    """
    keep = count > 0
    nll, count = np.asarray(nll, dtype=float)[keep], np.asarray(count)[keep]
    if count.sum() == 0:
        raise AlignkitError("perplexity: no tokens to score (every text is empty or a single token)")
    mean_nll = float(nll.sum() / count.sum())
    idx = bootstrap_indices(nll.size, n_resamples, seed)
    boot = np.exp(nll[idx].sum(axis=1) / np.maximum(count[idx].sum(axis=1), 1))
    low, high = np.quantile(boot, [0.025, 0.975])
    return {
        "perplexity": math.exp(mean_nll),
        "mean_nll": mean_nll,
        "n_tokens": int(count.sum()),
        "n_texts": int(nll.size),
        "ci_low": float(low),
        "ci_high": float(high),
    }


def completion_perplexity(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Prompt],
    completions: Sequence[str | Messages],
    max_length: int = 1024,
    stride: int | None = None,
    batch_size: int = 8,
    desc: str = "perplexity",
) -> dict[str, float]:
    """Perplexity of ``completions`` given ``prompts`` under ``model``: convention (a) or (b), see the module doc."""
    nll, count = completion_nlls(model, tokenizer, prompts, completions, max_length, stride, batch_size, desc)
    return perplexity_summary(nll, count)


def text_perplexity(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    max_length: int = 1024,
    stride: int | None = None,
    batch_size: int = 8,
) -> dict[str, float]:
    """Perplexity of raw texts (no chat template); BOS is prepended when the tokenizer defines one."""
    nll, count = text_nlls(model, tokenizer, texts, max_length, stride, batch_size)
    return perplexity_summary(nll, count)


def text_nlls(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    max_length: int = 1024,
    stride: int | None = None,
    batch_size: int = 8,
    desc: str = "score texts",
) -> tuple[np.ndarray, np.ndarray]:
    """Summed NLL and scored token count per raw text (no chat template), shapes ``(n,)``: BOS is prepended when
    the tokenizer defines one and every text token is a target (without a BOS the first token has no context and
    is skipped). For a text that fits in ``max_length`` this is lm-eval's ``loglikelihood_rolling`` (negated)."""
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    sequences = [bos + tokenizer.encode(t, add_special_tokens=False) for t in texts]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return sequence_nlls(model, sequences, [1] * len(sequences), max_length, stride, batch_size, pad, desc)
