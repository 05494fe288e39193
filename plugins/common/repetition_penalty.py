"""Repetition penalty: the n-gram repetition rate plus a picklable TRL reward callable (no transformers import).

:class:`RepetitionPenalty` delegates the scoring to TRL 1.16's ``trl.rewards.get_repetition_penalty_reward`` (reuse,
not rewrite); it only adds a way to get tokens when TRL's ``completion_ids`` are not there (evaluation on plain
strings), in the units of :mod:`alignkit.plugins.common.reward_units`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from alignkit.plugins.common.reward_units import UnitReward

__all__ = ["RepetitionPenalty", "ngram_repetition_rate"]


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


class RepetitionPenalty(UnitReward):
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
