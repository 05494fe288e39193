"""What a penalty's length is measured in (pure Python, no transformers import).

``unit="tokens"``: TRL's ``completion_ids`` kwarg when present (GRPO always passes it, so no re-tokenization), else
``len(tokenizer.encode(text, add_special_tokens=False))``; ``"words"``: ``len(text.split())``; ``"chars"``:
``len(text)``. Default: ``"tokens"`` if a tokenizer is given, else ``"words"``. Keep the same unit in training and
evaluation; GRPO's ``completion_ids`` include the EOS token, a re-tokenized string does not (off by one).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from alignkit.chat_format import completion_text

__all__ = ["UNITS", "UnitReward"]

UNITS = ("tokens", "words", "chars")


class UnitReward:
    """Shared plumbing: unit resolution and per-completion token/length extraction."""

    def __init__(self, unit: str | None, tokenizer: Any | None):
        unit = unit or ("tokens" if tokenizer is not None else "words")
        if unit not in UNITS:
            raise ValueError(f"unit must be one of {list(UNITS)}, got {unit!r}")
        self.unit = unit
        self.tokenizer = tokenizer

    def _units(self, completions: Sequence[Any], kwargs: dict[str, Any]) -> list[Sequence[Any]]:
        """One sequence per completion whose len() is the length and whose items are the units (token ids, words
        or characters)."""
        if self.unit == "tokens":
            ids = kwargs.get("completion_ids")
            if ids is not None:
                return list(ids)
            if self.tokenizer is None:
                raise ValueError(
                    f"{self.__name__}: unit='tokens' needs TRL's completion_ids or a tokenizer; pass tokenizer= "
                    "or use unit='words'"
                )
            return [self.tokenizer.encode(completion_text(c), add_special_tokens=False) for c in completions]
        texts = [completion_text(c) for c in completions]
        return [t.split() for t in texts] if self.unit == "words" else texts
