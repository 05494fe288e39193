"""Reference-based graders: one scorer for both the RL reward and the eval metric (pure Python, no transformers).

Each grader is a picklable callable in TRL's reward-function signature::

    grader(prompts, completions, **kwargs) -> list[float | None]

The reference answers arrive as a dataset column that TRL forwards as a keyword argument (``answer`` by default;
set ``column=`` for another). A sample whose reference is missing (``None`` or NaN) scores ``None``, which TRL turns
into NaN and leaves out of the group statistics. A reference may also be a list/tuple of acceptable answers: the best
score wins. ``grader.score(completion, reference) -> float`` scores a single pair for evaluation.

This module: the :class:`Grader` base and the text graders; :mod:`alignkit.plugins.common.math_grader` holds the
numeric one, and :mod:`alignkit.plugins.common.reward_funcs` the registry of all of them by name (``GRADERS``).
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Sequence
from typing import Any

from alignkit.chat_format import completion_text

__all__ = ["Contains", "EditDistance", "ExactMatch", "Grader", "levenshtein", "normalize_answer"]


def _is_missing(reference: Any) -> bool:
    return reference is None or (isinstance(reference, float) and math.isnan(reference))


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD-style normalization: lowercase, drop ASCII punctuation, drop articles (a/an/the), collapse whitespace.

    Rajpurkar et al. 2016 (https://arxiv.org/abs/1606.05250) evaluation script; e.g. ``"The  Eiffel-Tower!"`` →
    ``"eiffeltower"``. Punctuation is removed (not replaced by a space), as in that script.
    """
    text = str(text).lower().translate(_PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


class Grader:
    """Base class: reads the reference column, handles missing references and multi-answer lists.

    Subclasses implement ``_score(text, reference) -> float`` in [0, 1] (1 = correct).

    Args:
        column: name of the dataset column (TRL reward kwarg) holding the reference answer.
        name: reward name TRL logs (``rewards/<name>/mean``); defaults to the grader's registry name.
    """

    default_name = "grader"

    def __init__(self, column: str = "answer", name: str | None = None):
        self.column = column
        self.__name__ = name or self.default_name

    def _score(self, text: str, reference: str) -> float:
        raise NotImplementedError

    def score(self, completion: Any, reference: Any) -> float:
        """Score one completion (string or conversational) against a reference (or a list of acceptable ones)."""
        text = completion_text(completion)
        refs = reference if isinstance(reference, (list, tuple)) else [reference]
        refs = [r for r in refs if not _is_missing(r)]
        if not refs:
            raise ValueError(f"{self.__name__}: reference is missing; nothing to grade against")
        return max(float(self._score(text, str(r))) for r in refs)

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
        if self.column not in kwargs:
            cols = sorted(k for k in kwargs if k not in ("trainer_state", "log_extra", "log_metric", "completion_ids"))
            raise ValueError(f"{self.__name__}: reference column {self.column!r} not in the dataset; columns: {cols}")
        references = kwargs[self.column]
        if len(references) != len(completions):
            raise ValueError(
                f"{self.__name__}: column {self.column!r} has {len(references)} rows, completions: {len(completions)}"
            )
        out: list[float | None] = []
        for completion, ref in zip(completions, references, strict=True):
            missing = _is_missing(ref) or (isinstance(ref, (list, tuple)) and all(_is_missing(r) for r in ref))
            out.append(None if missing else self.score(completion, ref))
        return out

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if k != "__name__")
        return f"{type(self).__name__}({fields})"


class ExactMatch(Grader):
    """1.0 if ``normalize_answer(completion) == normalize_answer(reference)`` else 0.0 (raw equality with
    ``normalize=False``). See :func:`normalize_answer` for the normalization."""

    default_name = "exact_match"

    def __init__(self, column: str = "answer", normalize: bool = True, name: str | None = None):
        super().__init__(column, name)
        self.normalize = normalize

    def _score(self, text: str, reference: str) -> float:
        if self.normalize:
            return float(normalize_answer(text) == normalize_answer(reference))
        return float(text == reference)


class Contains(Grader):
    """1.0 if the (normalized) reference occurs in the (normalized) completion at word boundaries, else 0.0.

    Word boundaries keep ``"4"`` from matching inside ``"42"``. An empty normalized reference matches only an empty
    completion (otherwise every completion would "contain" it).
    """

    default_name = "contains"

    def __init__(self, column: str = "answer", normalize: bool = True, name: str | None = None):
        super().__init__(column, name)
        self.normalize = normalize

    def _score(self, text: str, reference: str) -> float:
        if self.normalize:
            text, reference = normalize_answer(text), normalize_answer(reference)
        else:
            text, reference = " ".join(text.split()), " ".join(reference.split())
        if not reference:
            return float(not text)
        return float(f" {reference} " in f" {text} ")


def levenshtein(a: Sequence[Any], b: Sequence[Any]) -> int:
    """Levenshtein distance (unit-cost insert/delete/substitute), O(len(a)·len(b)) time, O(min) memory."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i]
        for j, cb in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


class EditDistance(Grader):
    """Normalized Levenshtein similarity ``1 − d(a, b) / max(|a|, |b|)`` in [0, 1] over characters.

    Both strings empty → 1.0. Strings are normalized with :func:`normalize_answer` first unless ``normalize=False``.
    Cost is O(|a|·|b|) in pure Python, fine for short answers; do not feed it whole essays.
    """

    default_name = "edit_distance"

    def __init__(self, column: str = "answer", normalize: bool = True, name: str | None = None):
        super().__init__(column, name)
        self.normalize = normalize

    def _score(self, text: str, reference: str) -> float:
        if self.normalize:
            text, reference = normalize_answer(text), normalize_answer(reference)
        longest = max(len(text), len(reference))
        return 1.0 if longest == 0 else 1.0 - levenshtein(text, reference) / longest
