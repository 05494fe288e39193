"""Where a generated reply ends: the end-of-turn ids, and the reply's length up to the first of them.

Chat checkpoints can end a turn with more than the tokenizer's EOS: Qwen2.5's ``generation_config.json`` lists both
``<|im_end|>`` and ``<|endoftext|>``. Generating with the tokenizer's EOS alone would run such a model past its turn
end until ``max_new_tokens``. Every generation path (eval, dataset builders, policy samples) stops on
:func:`stop_token_ids` and measures replies with :func:`reply_length`.

A greedy reply can also end in a loop: the same few tokens over and over until ``max_new_tokens`` (base SmolLM2's
greedy replies did on 29 of 64 ShareGPT prompts at 256 tokens). Greedy decoding of a repeated state repeats, so the
rest carries nothing a judge could use; :func:`loop_stop_length` is the rule that cuts such a reply, shared by the
decode engine (:mod:`alignkit.decoding`, which applies it token by token) and the ``model.generate`` fallback (which
applies it afterwards, to the same effect).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

# A reply loops once its last max(LOOP_MIN_SPAN, LOOP_MIN_REPEATS * p) tokens repeat with a period
# p <= LOOP_MAX_PERIOD: 3 repeats of a sentence of up to 32 tokens, and never fewer than 48 tokens, so that a short
# run of the same token (a rule of dashes, an ellipsis) is not a loop.
LOOP_MAX_PERIOD = 32
LOOP_MIN_REPEATS = 3
LOOP_MIN_SPAN = 48


def stop_token_ids(tokenizer: Any, model: Any = None) -> list[int]:
    """End-of-turn ids, sorted: the tokenizer's EOS plus every id the model's generation config lists as EOS
    (an int or a list; ``None`` entries are dropped)."""
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = {tokenizer.eos_token_id, *(configured if isinstance(configured, list) else [configured])}
    return sorted(i for i in ids if i is not None)


def reply_length(row: Sequence[int] | Iterable[int], stop_ids: Iterable[int]) -> tuple[int, bool]:
    """``(n, ended)`` for generated ids ``row``: ``n`` tokens before the first stop id, and whether one was found.

    Without a stop id the whole row is the reply (``n = len(row)``, ``ended = False``: cut at ``max_new_tokens``).
    """
    stops = set(stop_ids)
    row = list(row)
    for k, token in enumerate(row):
        if token in stops:
            return k, True
    return len(row), False


def loop_span(period: int) -> int:
    """Tokens that must repeat with ``period`` before a reply counts as looping: max(48, 3 x period)."""
    return max(LOOP_MIN_SPAN, LOOP_MIN_REPEATS * period)


def loop_stop_length(row: Sequence[int] | Iterable[int]) -> int | None:
    """The length ``n`` of the shortest prefix of ``row`` that ends in a loop, or ``None``.

    ``row[:n]`` ends in a loop when, for some period ``p <= LOOP_MAX_PERIOD``, its last ``w = loop_span(p)`` tokens
    repeat with period ``p``: ``row[i] == row[i - p]`` for the last ``w - p`` positions ``i``. The decode engine stops
    a greedy row at that length; cutting a finished greedy reply there gives the same tokens.
    """
    runs = [0] * (LOOP_MAX_PERIOD + 1)  # runs[p]: trailing positions i with row[i] == row[i - p]
    seen: list[int] = []
    for token in row:
        seen.append(token)
        i = len(seen) - 1
        for p in range(1, LOOP_MAX_PERIOD + 1):
            runs[p] = runs[p] + 1 if i >= p and seen[i - p] == token else 0
            if runs[p] >= loop_span(p) - p:
                return i + 1
    return None
