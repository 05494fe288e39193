"""RLHF-PPO on TRL's GRPO machinery: config, trainer, critic, PPO maths, and the forward-pass economies."""

from alignkit.plugins._lazy import lazy_exports

__all__ = ["CRITIC_STATE_FILE", "PPOConfig", "PPOTrainer"]
__getattr__, __dir__ = lazy_exports(
    __name__,
    {"CRITIC_STATE_FILE": "ppo_critic", "PPOConfig": "ppo_config", "PPOTrainer": "ppo_trainer"},
    globals(),
)
