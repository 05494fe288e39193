"""alignkit plugins: drop-in TRL config/trainer pairs plus the pure maths they use.

``from alignkit.plugins import DPOConfig, DPOTrainer`` (same names as TRL's, so switching a TRL script is an import
change plus the new config fields). Trainer names are resolved lazily (PEP 562), so importing a pure-maths submodule
such as ``alignkit.plugins.kl`` never imports transformers or TRL.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "SFTConfig": "sft",
    "SFTTrainer": "sft",
    "RewardConfig": "reward",
    "RewardTrainer": "reward",
    "DPOConfig": "dpo",
    "DPOTrainer": "dpo",
    "GRPOConfig": "grpo",
    "GRPOTrainer": "grpo",
    "PPOConfig": "ppo",
    "PPOTrainer": "ppo",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # cache: later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
