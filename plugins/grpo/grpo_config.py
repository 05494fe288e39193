"""Configuration of :class:`alignkit.plugins.grpo.grpo_trainer.GRPOTrainer`: ``trl.GRPOConfig`` plus advantage
variants, length/repetition shaping and adaptive KL, all off by default."""

from __future__ import annotations

from dataclasses import dataclass, field

import trl

from alignkit.plugins.common.advantage_methods import ADVANTAGE_METHODS
from alignkit.plugins.common.finite_reward_fields import FiniteRewardFields
from alignkit.plugins.common.kl_fields import AdaptiveKLFields
from alignkit.plugins.common.penalty_fields import PenaltyFields
from alignkit.plugins.common.winrate_fields import WinRateFields

__all__ = ["GRPOConfig"]


@dataclass
class GRPOConfig(FiniteRewardFields, WinRateFields, PenaltyFields, AdaptiveKLFields, trl.GRPOConfig):
    """``trl.GRPOConfig`` plus advantage variants, length/repetition shaping
    (:class:`~alignkit.plugins.common.penalty_fields.PenaltyFields`) and adaptive KL
    (:class:`~alignkit.plugins.common.kl_fields.AdaptiveKLFields`; target in nats per token of TRL's k3 ``kl``,
    horizon in completions); all off by default."""

    advantage_method: str | None = field(
        default=None,
        metadata={
            "help": "Group-normalisation of rewards into advantages, by name from "
            "alignkit.plugins.advantages.ADVANTAGE_METHODS (group, batch, mean, rloo, rank, robust, minmax). "
            "None keeps TRL's scale_rewards path untouched; when set, it replaces scale_rewards."
        },
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
