"""Configuration of :class:`alignkit.plugins.dpo.DPOTrainer`: ``trl.DPOConfig`` plus R-DPO, adaptive β and policy
sampling fields, all off by default."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import trl

from alignkit.plugins.common.fast_path_fields import CPUFastPathFields
from alignkit.plugins.common.kl_fields import AdaptiveKLFields
from alignkit.plugins.common.winrate_fields import WinRateFields

__all__ = ["DPOConfig"]


@dataclass
class DPOConfig(WinRateFields, CPUFastPathFields, AdaptiveKLFields, trl.DPOConfig):
    """``trl.DPOConfig`` plus R-DPO (``rdpo_alpha``), adaptive β (``kl_target``, ``kl_horizon`` from
    :class:`~alignkit.plugins.common.kl_fields.AdaptiveKLFields`; the target is an implicit per-token k2 on the
    chosen + rejected tokens, nats per token, horizon in pairs), policy sampling and the CPU fast path
    (``cpu_fast_path``); all off."""

    rdpo_alpha: float = field(
        default=0.0,
        metadata={
            "help": "R-DPO length weight α (Park et al. 2024): the sigmoid argument becomes β·Δ + α·(|y_w| − "
            "|y_l|), lengths in completion tokens. 0 disables it. Requires f_divergence_type='reverse_kl'."
        },
    )
    policy_sample_steps: int = field(
        default=0,
        metadata={
            "help": "Every this many optimizer steps, greedily sample replies of the current policy to prompts of "
            "the batch and log their length and 3-gram repetition rate (lengths/policy, repetition_rate/policy). "
            "0 disables it."
        },
    )
    policy_sample_size: int = field(default=2, metadata={"help": "Prompts per policy sample (per process)."})
    policy_sample_max_new_tokens: int = field(
        default=64, metadata={"help": "Token limit of each sampled policy reply."}
    )
    log_completion_stats: bool = field(
        default=False,
        metadata={
            "help": "Log lengths, n-gram repetition rates of chosen/rejected and β even with every plugin off "
            "(they are always logged when rdpo_alpha or kl_target is set)."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        if not math.isfinite(self.rdpo_alpha) or self.rdpo_alpha < 0:
            raise ValueError(f"rdpo_alpha must be a finite number >= 0, got {self.rdpo_alpha!r}")
        if self.rdpo_alpha > 0 and self.f_divergence_type != "reverse_kl":
            raise ValueError(f"rdpo_alpha needs f_divergence_type='reverse_kl', got {self.f_divergence_type!r}")
        for name in ("policy_sample_steps", "policy_sample_size", "policy_sample_max_new_tokens"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < (0 if name.endswith("steps") else 1):
                raise ValueError(f"{name} must be an integer >= {int(not name.endswith('steps'))}")
        if self.kl_target is not None and self.precompute_ref_log_probs:
            raise ValueError("kl_target needs per-token reference log-probs; set precompute_ref_log_probs=False")
