"""The length/repetition penalty config fields of GRPO and PPO, and the one helper that attaches them as reward
functions (pure Python, no transformers import).

One name and sign convention for both trainers: each penalty is a reward function whose value is ≤ 0 (unweighted,
logged as ``rewards/<name>/mean``), entered into the trainer's weighted reward sum with a weight ≥ 0:

    r = Σ_k w_k · r_k  +  length_penalty_coef · (−max(0, |y| − length_penalty_target))
                       +  repetition_penalty_weight · (−ngram_repetition_rate(y, repetition_ngram_size))
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

from alignkit.plugins.common.length_penalty import LengthPenalty
from alignkit.plugins.common.repetition_penalty import RepetitionPenalty

__all__ = ["PenaltyFields", "add_penalty_rewards"]


@dataclass
class PenaltyFields:
    """Config mixin: ``length_penalty_coef``/``length_penalty_target`` and ``repetition_penalty_weight``/
    ``repetition_ngram_size``, off by default; put it before the TRL config in the bases. ``__post_init__``
    validates them after the TRL config's own checks (errors name the field)."""

    length_penalty_coef: float = field(
        default=0.0,
        metadata={
            "help": "Reward weight (>= 0) of a length penalty −max(0, completion tokens − length_penalty_target), "
            "appended to reward_funcs/reward_weights. 0 disables it."
        },
    )
    length_penalty_target: int | None = field(
        default=None,
        metadata={
            "help": "Completion length in tokens allowed before the length penalty starts (required when "
            "length_penalty_coef > 0)."
        },
    )
    repetition_penalty_weight: float = field(
        default=0.0,
        metadata={
            "help": "Reward weight (>= 0) of TRL's n-gram repetition penalty (in [−1, 0]), appended to "
            "reward_funcs/reward_weights. 0 disables it."
        },
    )
    repetition_ngram_size: int = field(
        default=3, metadata={"help": "n of the repetition penalty's n-grams (token ids)."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("length_penalty_coef", "repetition_penalty_weight"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.length_penalty_coef > 0 and (self.length_penalty_target is None or self.length_penalty_target < 0):
            raise ValueError(
                "length_penalty_target must be a token count >= 0 when length_penalty_coef > 0, got "
                f"{self.length_penalty_target!r}"
            )
        if self.repetition_ngram_size < 1:
            raise ValueError(f"repetition_ngram_size must be >= 1, got {self.repetition_ngram_size!r}")


def add_penalty_rewards(reward_funcs: Any, args: Any, reward_processing_classes: Any = None) -> tuple[list, Any, Any]:
    """``(reward_funcs, args, reward_processing_classes)`` with the penalties that ``args`` (a :class:`PenaltyFields`
    config) switches on appended: a :class:`~alignkit.plugins.common.length_penalty.LengthPenalty` (coef 1, in
    tokens) with weight ``length_penalty_coef`` and a
    :class:`~alignkit.plugins.common.repetition_penalty.RepetitionPenalty` (max penalty −1, token n-grams) with weight
    ``repetition_penalty_weight``, each with a ``None`` processing class.

    The caller's objects are never edited: the lists are new, and ``args`` is a shallow copy whose ``reward_weights``
    is a new list (the given weights, or 1.0 per reward function, then the penalty weights). With no penalty on, the
    inputs come back as given. A penalty that is switched on and also already among ``reward_funcs`` is refused,
    since it would count twice.
    """
    penalties = []  # (field, reward function, weight)
    if args.length_penalty_coef > 0:
        length = LengthPenalty(coef=1.0, target=args.length_penalty_target, unit="tokens")
        penalties.append(("length_penalty_coef", length, args.length_penalty_coef))
    if args.repetition_penalty_weight > 0:
        repetition = RepetitionPenalty(ngram_size=args.repetition_ngram_size, max_penalty=-1.0, unit="tokens")
        penalties.append(("repetition_penalty_weight", repetition, args.repetition_penalty_weight))
    if not penalties:
        return reward_funcs, args, reward_processing_classes
    funcs = _as_list(reward_funcs)
    for name, penalty, _ in penalties:
        if any(isinstance(f, type(penalty)) for f in funcs):
            raise ValueError(
                f"{name} is set and reward_funcs already has a {type(penalty).__name__}: the penalty would count "
                "twice; keep one of them"
            )
    weights = list(args.reward_weights) if args.reward_weights is not None else [1.0] * len(funcs)
    if reward_processing_classes is not None:
        reward_processing_classes = _as_list(reward_processing_classes) + [None] * len(penalties)
    args = copy.copy(args)
    args.reward_weights = weights + [weight for _, _, weight in penalties]
    return funcs + [penalty for _, penalty, _ in penalties], args, reward_processing_classes


def _as_list(x: Any) -> list:
    """A new list: of ``x``'s items for a list/tuple, ``[x]`` for one object, ``[]`` for None."""
    return [] if x is None else list(x) if isinstance(x, (list, tuple)) else [x]
