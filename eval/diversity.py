"""Diversity and length statistics of a set of responses (pure python/numpy, no transformers import).

Tokenization. By default :func:`simple_tokenize`: lowercase, then ``re.findall(r"\\w+|[^\\w\\s]")`` (runs of word
characters, and every other non-space character as its own token), so "Hello, world!" gives
``["hello", ",", "world", "!"]``. Pass ``tokenizer`` to count model tokens instead: a Hugging Face tokenizer (its
``encode(text, add_special_tokens=False)`` ids are used) or any callable ``str -> list``. Responses that are already
lists/tuples of tokens are used as they are.

Metrics:

* distinct-n (Li et al. 2016, "A Diversity-Promoting Objective Function for Neural Conversation Models"): unique
  n-grams / total n-grams, over the whole corpus and averaged per response;
* self-BLEU (Zhu et al. 2018, "Texygen"): BLEU-4 of each response against all the others, averaged; higher means
  less diverse;
* repetition rate: ``1 - unique / total`` n-grams within each response, averaged;
* response length: mean, median and 90th percentile in tokens.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np

from alignkit.errors import AlignkitError
from alignkit.plugins.penalties import ngram_repetition_rate  # shared so the training penalty and eval agree

_TOKEN_RE = re.compile(r"\w+|[^\w\s]")

Response = str | Sequence[Hashable]


def simple_tokenize(text: str) -> list[str]:
    """Default tokenizer: lowercased words and single punctuation characters (see the module docstring)."""
    return _TOKEN_RE.findall(text.lower())


def tokenize_all(responses: Sequence[Response], tokenizer: Any = None) -> list[list[Hashable]]:
    """Tokenize every response; lists/tuples are taken as already tokenized.

    ``tokenizer`` is ``None`` (:func:`simple_tokenize`), an object with ``encode`` (a Hugging Face tokenizer; no
    special tokens are added so BOS/EOS do not count as repeated n-grams), or a callable ``str -> list``.
    """
    if isinstance(responses, str):
        raise AlignkitError("responses: expected a list of responses, got a single string")
    if tokenizer is None:
        encode: Callable[[str], Sequence[Hashable]] = simple_tokenize
    elif hasattr(tokenizer, "encode"):

        def encode(text: str) -> Sequence[Hashable]:
            return tokenizer.encode(text, add_special_tokens=False)

    elif callable(tokenizer):
        encode = tokenizer
    else:
        raise AlignkitError(f"tokenizer: expected a Hugging Face tokenizer or a callable, got {type(tokenizer)}")
    out = []
    for i, r in enumerate(responses):
        if isinstance(r, str):
            out.append(list(encode(r)))
        elif isinstance(r, (list, tuple)):
            out.append(list(r))
        else:
            raise AlignkitError(f"responses: row {i} is a {type(r).__name__}; expected a string or a token list")
    return out


def ngrams(tokens: Sequence[Hashable], n: int) -> list[tuple]:
    """All ``len(tokens) - n + 1`` contiguous n-grams, as tuples; empty when the sequence is shorter than ``n``."""
    if n < 1:
        raise AlignkitError(f"n: must be >= 1, got {n}")
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(responses: Sequence[Response], n: int, tokenizer: Any = None) -> dict[str, float]:
    """Distinct-n, returned as ``{"corpus", "per_response"}``.

    * ``corpus`` = |unique n-grams over all responses| / total n-grams over all responses;
    * ``per_response`` = mean over responses of |unique n-grams| / n-grams, skipping responses shorter than ``n``.

    Either is NaN when there is no n-gram at all.
    """
    per_response, pooled, total = [], set(), 0
    for tokens in tokenize_all(responses, tokenizer):
        grams = ngrams(tokens, n)
        if grams:
            unique = set(grams)
            per_response.append(len(unique) / len(grams))
            pooled |= unique
            total += len(grams)
    return {
        "corpus": len(pooled) / total if total else math.nan,
        "per_response": float(np.mean(per_response)) if per_response else math.nan,
    }


def repetition_rate(responses: Sequence[Response], n: int = 3, tokenizer: Any = None) -> float:
    """Mean over responses of :func:`alignkit.plugins.penalties.ngram_repetition_rate`, ``1 - unique / total``.

    Responses shorter than ``n`` are skipped (they cannot repeat); NaN when every response is. For the same ``n``
    this equals ``1 - distinct_n(...)["per_response"]``.
    """
    if n < 1:
        raise AlignkitError(f"n: must be >= 1, got {n}")
    rates = [ngram_repetition_rate(t, n) for t in tokenize_all(responses, tokenizer) if len(t) >= n]
    return float(np.mean(rates)) if rates else math.nan


def length_stats(responses: Sequence[Response], tokenizer: Any = None) -> dict[str, float]:
    """Response length in tokens: ``{"mean", "median", "p90", "min", "max"}`` (p90 by linear interpolation)."""
    lengths = np.array([len(t) for t in tokenize_all(responses, tokenizer)], dtype=float)
    if lengths.size == 0:
        raise AlignkitError("responses: is empty; length statistics need at least one response")
    return {
        "mean": float(lengths.mean()),
        "median": float(np.median(lengths)),
        "p90": float(np.percentile(lengths, 90)),
        "min": float(lengths.min()),
        "max": float(lengths.max()),
    }


def _closest_ref_lengths(lengths: np.ndarray) -> np.ndarray:
    """For each response, the length of the closest *other* response (ties go to the shorter one, as in BLEU)."""
    uniq, counts = np.unique(lengths, return_counts=True)
    out = np.empty_like(lengths)
    for i, c in enumerate(lengths):
        k = int(np.searchsorted(uniq, c))
        if counts[k] > 1:  # another response has exactly this length
            out[i] = c
            continue
        below = uniq[k - 1] if k > 0 else None
        above = uniq[k + 1] if k + 1 < uniq.size else None
        if above is None or (below is not None and c - below <= above - c):
            out[i] = below
        else:
            out[i] = above
    return out


def self_bleu(
    responses: Sequence[Response], tokenizer: Any = None, max_n: int = 4, smooth_epsilon: float = 0.1
) -> float:
    """Self-BLEU: mean over responses ``i`` of BLEU(hypothesis = response ``i``, references = all others).

    Our own sentence-level BLEU (Papineni et al. 2002), computed on the same tokens as distinct-n::

        p_k  = sum_g min(c_hyp(g), max_ref c_ref(g)) / sum_g c_hyp(g)      over k-grams g, k = 1..max_n
        BP   = 1 if c > r else exp(1 - r / c)       c = hyp length, r = closest reference length (ties: shorter)
        BLEU = BP * exp(mean_k log p_k)

    Smoothing: a zero match count is replaced by ``smooth_epsilon`` (Chen & Cherry 2014 method 1; NLTK's
    ``SmoothingFunction().method1`` as used by Texygen, sacrebleu's ``smooth_method="floor"``). Orders the
    hypothesis is too short to have are left out of the mean ("effective order", as sacrebleu's sentence BLEU); an
    empty hypothesis scores 0. Equal to ``sacrebleu.sentence_bleu(..., smooth_method="floor", smooth_value=0.1,
    tokenize="none") / 100`` on space-joined tokens.

    Cost is linear in the total n-gram count: for each n-gram we keep its two highest per-response counts, so the
    clipping count "max over the other responses" needs no pass over them.

    Raises :class:`AlignkitError` with fewer than two responses (there is no reference).
    """
    tokens = tokenize_all(responses, tokenizer)
    if len(tokens) < 2:
        raise AlignkitError(f"responses: self-BLEU needs at least 2 responses, got {len(tokens)}")
    if smooth_epsilon <= 0:
        raise AlignkitError(f"smooth_epsilon: must be > 0, got {smooth_epsilon}")
    counts = [[Counter(ngrams(t, k)) for t in tokens] for k in range(1, max_n + 1)]
    # per order: n-gram -> [highest count, which response, second highest count]
    tops: list[dict[tuple, list[int]]] = []
    for per_order in counts:
        top: dict[tuple, list[int]] = {}
        for j, counter in enumerate(per_order):
            for g, c in counter.items():
                t = top.setdefault(g, [0, -1, 0])
                if c > t[0]:
                    t[:] = [c, j, t[0]]
                elif c > t[2]:
                    t[2] = c
        tops.append(top)

    lengths = np.array([len(t) for t in tokens])
    ref_lengths = _closest_ref_lengths(lengths)
    scores = []
    for i, hyp_len in enumerate(lengths):
        if hyp_len == 0:
            scores.append(0.0)
            continue
        log_p = []
        for per_order, top in zip(counts, tops, strict=True):
            total = sum(per_order[i].values())
            if total == 0:  # hypothesis shorter than this order: effective order stops here
                break
            matched = sum(min(c, top[g][2] if top[g][1] == i else top[g][0]) for g, c in per_order[i].items())
            log_p.append(math.log((matched if matched else smooth_epsilon) / total))
        r = ref_lengths[i]
        log_bp = 0.0 if hyp_len > r else 1.0 - r / hyp_len
        scores.append(math.exp(log_bp + sum(log_p) / len(log_p)))
    return float(np.mean(scores))


def diversity_report(responses: Sequence[Response], tokenizer: Any = None, repetition_n: int = 3) -> dict[str, float]:
    """All diversity metrics in one flat dict (keys: ``distinct_{1,2,3}``, ``distinct_{1,2,3}_per_response``,
    ``self_bleu`` (NaN for fewer than 2 responses), ``repetition_rate``, ``length_{mean,median,p90}``)."""
    tokens = tokenize_all(responses, tokenizer)  # tokenize once; the helpers accept token lists
    out: dict[str, float] = {}
    for n in (1, 2, 3):
        d = distinct_n(tokens, n)
        out[f"distinct_{n}"], out[f"distinct_{n}_per_response"] = d["corpus"], d["per_response"]
    out["self_bleu"] = self_bleu(tokens) if len(tokens) > 1 else math.nan
    out["repetition_rate"] = repetition_rate(tokens, repetition_n)
    stats = length_stats(tokens)
    out.update({"length_mean": stats["mean"], "length_median": stats["median"], "length_p90": stats["p90"]})
    return out
