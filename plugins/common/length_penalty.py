"""Length penalty: pure functions plus a picklable TRL reward callable (no transformers import).

The callable follows TRL's reward signature ``f(prompts, completions, **kwargs) -> list[float | None]`` and carries a
``__name__`` so TRL logs it as ``rewards/<name>/mean``. Completions may be strings or conversational message lists;
lengths are in the unit of :mod:`alignkit.plugins.common.reward_units`.

Relation to TRL 1.16's own helper (reuse, not rewrite): DAPO's soft overlong punishment (a ramp to −1 near the
generation limit) is ``trl.rewards.get_soft_overlong_punishment``; use it directly. :class:`LengthPenalty` is a
different shape: unbounded linear beyond a target (or beyond the dataset's reference length), for pulling typical
lengths down rather than guarding the truncation limit.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

from alignkit.plugins.common.reward_units import UnitReward

__all__ = ["LengthPenalty", "length_penalty", "relative_length_penalty"]


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


class LengthPenalty(UnitReward):
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
