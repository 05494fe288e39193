"""Where a generated reply ends: the end-of-turn ids, and the reply's length up to the first of them.

Chat checkpoints can end a turn with more than the tokenizer's EOS: Qwen2.5's ``generation_config.json`` lists both
``<|im_end|>`` and ``<|endoftext|>``. Generating with the tokenizer's EOS alone would run such a model past its turn
end until ``max_new_tokens``. Every generation path (eval, dataset builders, policy samples) stops on
:func:`stop_token_ids` and measures replies with :func:`reply_length`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


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
