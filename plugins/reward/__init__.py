"""Reward modelling with a reward-length decorrelation penalty: config, trainer, and the correlation maths."""

from alignkit.plugins._lazy import lazy_exports

__all__ = ["RewardConfig", "RewardTrainer"]
__getattr__, __dir__ = lazy_exports(
    __name__, {"RewardConfig": "reward_config", "RewardTrainer": "reward_trainer"}, globals()
)
