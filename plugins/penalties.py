"""Length and repetition penalties: pure functions plus picklable TRL reward callables (no transformers import).

The callables follow TRL's reward signature ``f(prompts, completions, **kwargs) -> list[float | None]`` and carry a
``__name__`` so TRL logs them as ``rewards/<name>/mean``. Completions may be strings or conversational message lists.

Relation to TRL 1.16's own reward helpers (reuse, not rewrite):

- :class:`RepetitionPenalty` delegates the scoring to ``trl.rewards.get_repetition_penalty_reward``; it only adds a
  way to get tokens when TRL's ``completion_ids`` are not there (evaluation on plain strings).
- DAPO's soft overlong punishment (a ramp to −1 near the generation limit) is
  ``trl.rewards.get_soft_overlong_punishment``; use it directly. :class:`LengthPenalty` is a different shape:
  unbounded linear beyond a target (or beyond the dataset's reference length), for pulling typical lengths down
  rather than guarding the truncation limit.

Length/token units (``unit``):
    ``"tokens"``: TRL's ``completion_ids`` kwarg when present (GRPO always passes it, so no re-tokenization), else
    ``len(tokenizer.encode(text, add_special_tokens=False))``; ``"words"``: ``len(text.split())``; ``"chars"``:
    ``len(text)``. Default: ``"tokens"`` if a tokenizer is given, else ``"words"``. Keep the same unit in training and
    evaluation; GRPO's ``completion_ids`` include the EOS token, a re-tokenized string does not (off by one).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

from .graders import completion_text

__all__ = [
    "LengthPenalty",
    "RepetitionPenalty",
    "length_penalty",
    "ngram_repetition_rate",
    "relative_length_penalty",
]

_UNITS = ("tokens", "words", "chars")


def length_penalty(length: int, target: int, coef: float) -> float:
    """−coef · max(0, length − target): zero up to ``target``, then linear in the excess (same unit as target)."""
    return -coef * max(0, length - target)


def relative_length_penalty(length: int, reference_length: int, coef: float, ratio: float = 1.0) -> float:
    """−coef · max(0, length / (ratio · reference_length) − 1): linear in the *relative* excess over a reference.

    Relative so that one ``coef`` means the same for a 20-token and a 500-token reference (e.g. "1.0 per 100 % too
    long"). A zero reference length penalizes any non-empty completion by ``coef`` per unit of length.
    """
    allowed = ratio * reference_length
    if allowed <= 0:
        return -coef * length
    return -coef * max(0.0, length / allowed - 1.0)


def ngram_repetition_rate(tokens: Sequence[Any], n: int) -> float:
    """1 − (#unique n-grams / #n-grams) in [0, 1); 0.0 when there are fewer than n tokens.

    Same quantity as TRL's repetition reward (Yeo et al. 2025, "Demystifying Long Chain-of-Thought Reasoning",
    App. C.2, https://arxiv.org/abs/2502.03373) before scaling by ``max_penalty``. E.g. ``[5, 5, 5, 5, 5]``, n=2:
    4 bigrams, 1 unique → 1 − 1/4 = 0.75.
    """
    if n < 1:
        raise ValueError(f"n (n-gram size) must be >= 1, got {n!r}")
    total = len(tokens) - n + 1
    if total <= 0:
        return 0.0
    unique = {tuple(tokens[i : i + n]) for i in range(total)}
    return 1.0 - len(unique) / total


class _TokenizingReward:
    """Shared plumbing: unit resolution and per-completion token/length extraction."""

    def __init__(self, unit: str | None, tokenizer: Any | None):
        unit = unit or ("tokens" if tokenizer is not None else "words")
        if unit not in _UNITS:
            raise ValueError(f"unit must be one of {list(_UNITS)}, got {unit!r}")
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


class LengthPenalty(_TokenizingReward):
    """Reward ``−coef · max(0, len − target)``, or relative to a per-sample reference length.

    With ``reference_column`` set, each sample's allowed length is ``ratio × reference length``, where the column
    holds either a number (a precomputed length, in ``unit``) or a text (measured in ``unit``; tokens need a
    tokenizer), and the reward is :func:`relative_length_penalty`. A missing reference (None/NaN) scores ``None``.
    Otherwise the reward is :func:`length_penalty` with the fixed ``target``.

    Args:
        coef: ≥ 0, penalty per unit of excess (per unit of relative excess with a reference column).
        target: allowed length in ``unit`` (required unless ``reference_column`` is set).
        reference_column: dataset column with the reference completion or its length.
        ratio: allowed multiple of the reference length (> 0).
        unit: ``"tokens"``, ``"words"`` or ``"chars"`` (module docstring); default tokens iff a tokenizer is given.
        tokenizer: any object with ``encode(text, add_special_tokens=False)``; only used for ``unit="tokens"``.
    """

    def __init__(
        self,
        coef: float = 0.01,
        target: int | None = None,
        reference_column: str | None = None,
        ratio: float = 1.0,
        unit: str | None = None,
        tokenizer: Any | None = None,
        name: str = "length_penalty",
    ):
        self.__name__ = name
        super().__init__(unit, tokenizer)
        if not math.isfinite(coef) or coef < 0:
            raise ValueError(f"coef must be a finite number >= 0, got {coef!r}")
        if reference_column is None and (target is None or target < 0):
            raise ValueError(f"target must be a length >= 0 (or set reference_column), got {target!r}")
        if not ratio > 0:
            raise ValueError(f"ratio must be > 0, got {ratio!r}")
        self.coef, self.target, self.reference_column, self.ratio = coef, target, reference_column, ratio

    def _reference_length(self, ref: Any) -> float | None:
        if ref is None or (isinstance(ref, float) and math.isnan(ref)):
            return None
        if isinstance(ref, numbers.Real):  # numpy scalars too
            return float(ref)
        return float(len(self._units([ref], {})[0]))

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
        lengths = [len(u) for u in self._units(completions, kwargs)]
        if self.reference_column is None:
            return [length_penalty(n, self.target, self.coef) for n in lengths]
        if self.reference_column not in kwargs:
            raise ValueError(f"{self.__name__}: reference_column {self.reference_column!r} is not a dataset column")
        out: list[float | None] = []
        for n, ref in zip(lengths, kwargs[self.reference_column], strict=True):
            ref_len = self._reference_length(ref)
            out.append(None if ref_len is None else relative_length_penalty(n, ref_len, self.coef, self.ratio))
        return out


class RepetitionPenalty(_TokenizingReward):
    """Reward ``max_penalty × ngram_repetition_rate(units, ngram_size)``, in [max_penalty, 0].

    Scoring is delegated to TRL's ``get_repetition_penalty_reward(ngram_size, max_penalty)`` so the formula, sign and
    validation stay TRL's; this class adds the unit handling (TRL's callable only reads ``completion_ids``, so on
    plain strings, e.g. at evaluation, it would have nothing to score) and the alignkit reward signature. The TRL
    callable is built lazily, to keep ``import alignkit.plugins.penalties`` free of trl, and dropped from the pickled
    state and rebuilt on first use, so pickling never depends on TRL internals.

    Args:
        ngram_size: n ≥ 1.
        max_penalty: ≤ 0, the reward of a fully repetitive completion.
        unit / tokenizer: see the module docstring (``"words"`` n-grams with no tokenizer).
    """

    def __init__(
        self,
        ngram_size: int = 3,
        max_penalty: float = -1.0,
        unit: str | None = None,
        tokenizer: Any | None = None,
        name: str = "repetition_penalty",
    ):
        self.__name__ = name
        super().__init__(unit, tokenizer)
        if isinstance(ngram_size, bool) or not isinstance(ngram_size, int) or ngram_size < 1:
            raise ValueError(f"ngram_size must be an integer >= 1, got {ngram_size!r}")
        if not max_penalty <= 0:
            raise ValueError(f"max_penalty must be <= 0, got {max_penalty!r}")
        self.ngram_size, self.max_penalty = ngram_size, max_penalty
        self._trl_fn = None

    def _scorer(self):
        if self._trl_fn is None:
            from trl.rewards import get_repetition_penalty_reward

            self._trl_fn = get_repetition_penalty_reward(ngram_size=self.ngram_size, max_penalty=self.max_penalty)
        return self._trl_fn

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_trl_fn": None}

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
        # TRL hashes n-gram tuples, so words and characters work as units as well as token ids.
        return [float(r) for r in self._scorer()(self._units(completions, kwargs))]
