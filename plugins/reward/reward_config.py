"""Configuration of :class:`alignkit.plugins.reward.reward_trainer.RewardTrainer`: ``trl.RewardConfig`` plus
``length_decorrelation_coef``."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import trl

from alignkit.plugins.common.fast_path_fields import CPUFastPathFields

__all__ = ["RewardConfig"]


@dataclass
class RewardConfig(CPUFastPathFields, trl.RewardConfig):
    """``trl.RewardConfig`` plus ``length_decorrelation_coef`` (0 = off, identical to TRL) and ``cpu_fast_path``
    (off; for a reward model only the frozen-base cast applies)."""

    length_decorrelation_coef: float = field(
        default=0.0,
        metadata={
            "help": "Weight λ of a batch penalty λ·ρ² on the Pearson correlation ρ between the rewards of the chosen "
            "and rejected responses and their token lengths, so the reward model cannot score length. 0 disables it. "
            "Composes with center_rewards_coefficient (both terms are added)."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        coef = self.length_decorrelation_coef
        if not math.isfinite(coef) or coef < 0:
            raise ValueError(f"length_decorrelation_coef must be a finite number >= 0, got {coef!r}")
