"""SFT with token-level unlikelihood against repetition: config, trainer, and the unlikelihood maths."""

from alignkit.plugins._lazy import lazy_exports

__all__ = ["SFTConfig", "SFTTrainer"]
__getattr__, __dir__ = lazy_exports(__name__, {"SFTConfig": "sft_config", "SFTTrainer": "sft_trainer"}, globals())
