"""Configuration of :class:`alignkit.plugins.sft.sft_trainer.SFTTrainer`: ``trl.SFTConfig`` plus unlikelihood."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import trl

from alignkit.plugins.common.fast_path_fields import CPUFastPathFields
from alignkit.plugins.common.winrate_fields import WinRateFields

__all__ = ["SFTConfig"]


@dataclass
class SFTConfig(WinRateFields, CPUFastPathFields, trl.SFTConfig):
    """``trl.SFTConfig`` plus ``unlikelihood_alpha`` (0 = off, identical to TRL) and ``cpu_fast_path`` (off)."""

    unlikelihood_alpha: float = field(
        default=0.0,
        metadata={
            "help": "Weight α of the token-level unlikelihood penalty against repeating context tokens (Welleck et "
            "al. 2019): loss = NLL + α · mean_t Σ_{c ∈ C_t} −log(1 − p(c|x<t)). 0 disables it. Reuses the hidden "
            "states and log-probs of TRL's own forward (O(B·T²·H) extra); an extra forward only with "
            "label_smoothing_factor or compute_loss_func, which bypass TRL's fused LM head."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        if not math.isfinite(self.unlikelihood_alpha) or self.unlikelihood_alpha < 0:
            raise ValueError(f"unlikelihood_alpha must be a finite number >= 0, got {self.unlikelihood_alpha!r}")
        if self.unlikelihood_alpha > 0 and (self.packing or self.padding_free):
            raise ValueError(
                "unlikelihood_alpha > 0 is not supported with packing/padding_free: the candidate set C_t would "
                "cross document boundaries; set packing=False and padding_free=False"
            )
