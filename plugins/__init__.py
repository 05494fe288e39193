"""alignkit plugins: drop-in TRL config/trainer pairs plus the pure maths they use.

``from alignkit.plugins import DPOConfig, DPOTrainer`` (same names as TRL's, so switching a TRL script is an import
change plus the new config fields). Trainer names are resolved lazily (PEP 562), so importing a pure-maths module
such as ``alignkit.plugins.kl`` never imports transformers or TRL.

Layout: one subpackage per method (``sft``, ``reward``, ``dpo``, ``grpo``, ``ppo``), each with its config, its
trainer and the maths only it uses; ``common`` holds what several trainers share (KL estimators, controllers and
the adaptive-KL callback, advantages, penalties, graders, the reward-function registry). ``kl``, ``advantages``,
``penalties`` and ``graders`` at this level are the stable public names of the shared maths.
"""

from __future__ import annotations

from alignkit.plugins._lazy import lazy_exports

_LAZY = {
    "SFTConfig": "sft.sft_config",
    "SFTTrainer": "sft.sft_trainer",
    "RewardConfig": "reward.reward_config",
    "RewardTrainer": "reward.reward_trainer",
    "DPOConfig": "dpo.dpo_config",
    "DPOTrainer": "dpo.dpo_trainer",
    "GRPOConfig": "grpo.grpo_config",
    "GRPOTrainer": "grpo.grpo_trainer",
    "PPOConfig": "ppo.ppo_config",
    "PPOTrainer": "ppo.ppo_trainer",
    "FiniteGuard": "common.finite_guard",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
