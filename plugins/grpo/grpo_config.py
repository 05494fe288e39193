"""Configuration of :class:`alignkit.plugins.grpo.grpo_trainer.GRPOTrainer`: ``trl.GRPOConfig`` plus advantage
variants, length/repetition shaping and adaptive KL, all off by default."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import trl

from ..common.advantage_methods import ADVANTAGE_METHODS
from ..common.kl_fields import AdaptiveKLFields

__all__ = ["GRPOConfig"]


@dataclass
class GRPOConfig(AdaptiveKLFields, trl.GRPOConfig):
    """``trl.GRPOConfig`` plus advantage variants, length/repetition shaping and adaptive KL; all off by default."""

    advantage_method: str | None = field(
        default=None,
        metadata={
            "help": "Group-normalisation of rewards into advantages, by name from "
            "alignkit.plugins.advantages.ADVANTAGE_METHODS (group, batch, mean, rloo, rank, robust, minmax). "
            "None keeps TRL's scale_rewards path untouched; when set, it replaces scale_rewards."
        },
    )
    length_penalty_coef: float = field(
        default=0.0,
        metadata={
            "help": "Reward weight of a length penalty −max(0, completion tokens − length_penalty_target), "
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
            "help": "Reward weight of TRL's n-gram repetition penalty (in [−1, 0]), appended to "
            "reward_funcs/reward_weights. 0 disables it."
        },
    )
    repetition_ngram_size: int = field(
        default=3, metadata={"help": "n of the repetition penalty's n-grams (token ids)."}
    )

    def __post_init__(self):
        super().__post_init__()
        if self.advantage_method is not None and self.advantage_method not in ADVANTAGE_METHODS:
            raise ValueError(
                f"advantage_method must be one of {sorted(ADVANTAGE_METHODS)} or None, got {self.advantage_method!r}"
            )
        if self.advantage_method is not None and self.multi_objective_aggregation != "sum_then_normalize":
            raise ValueError(
                "advantage_method needs multi_objective_aggregation='sum_then_normalize', got "
                f"{self.multi_objective_aggregation!r}"
            )
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
