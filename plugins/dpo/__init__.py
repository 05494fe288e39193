"""DPO with R-DPO, adaptive β and policy-reply statistics: config, trainer, R-DPO maths, policy sampling."""

from alignkit.plugins._lazy import lazy_exports

__all__ = ["DPOConfig", "DPOTrainer"]
__getattr__, __dir__ = lazy_exports(__name__, {"DPOConfig": "dpo_config", "DPOTrainer": "dpo_trainer"}, globals())
