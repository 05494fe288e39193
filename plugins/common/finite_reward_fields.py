"""The ``skip_nonfinite_rewards`` config field of GRPO and PPO (pure Python; the wrapper itself is in
:mod:`alignkit.plugins.common.finite_guard`)."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["FiniteRewardFields"]


@dataclass
class FiniteRewardFields:
    """Config mixin, off by default (TRL's path); put it before the TRL config in the bases. ``alignkit train``
    turns it on for GRPO and PPO recipes."""

    skip_nonfinite_rewards: bool = field(
        default=False,
        metadata={
            "help": "A reward function's NaN/inf is skipped like TRL's None (that sample is not scored by that "
            "function) and counted as nonfinite/rewards_skipped. Off: TRL's path (an inf reaches the advantages)."
        },
    )
