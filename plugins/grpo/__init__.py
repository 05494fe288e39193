"""GRPO with advantage variants, penalty shaping and adaptive KL: config and trainer (maths in ``common``)."""

from alignkit.plugins._lazy import lazy_exports

__all__ = ["GRPOConfig", "GRPOTrainer"]
__getattr__, __dir__ = lazy_exports(__name__, {"GRPOConfig": "grpo_config", "GRPOTrainer": "grpo_trainer"}, globals())
