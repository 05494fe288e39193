"""Configuration of :class:`alignkit.plugins.ppo.ppo_trainer.PPOTrainer`: ``trl.GRPOConfig`` plus critic, GAE, KL
and penalty fields."""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import GRPOConfig

from alignkit.plugins.common.finite_reward_fields import FiniteRewardFields
from alignkit.plugins.common.kl_fields import AdaptiveKLFields
from alignkit.plugins.common.penalty_fields import PenaltyFields

__all__ = ["PPOConfig"]


@dataclass
class PPOConfig(FiniteRewardFields, PenaltyFields, AdaptiveKLFields, GRPOConfig):
    """GRPOConfig plus the PPO fields. Reused TRL names: ``beta`` (initial/fixed KL coefficient β), ``epsilon`` /
    ``epsilon_high`` (policy clip range), ``num_iterations`` (PPO epochs per rollout), ``steps_per_generation`` ÷
    ``gradient_accumulation_steps`` (minibatches per rollout), ``reward_weights``, ``mask_truncated_completions``.
    GRPO-only knobs (``loss_type``, ``scale_rewards``, ``multi_objective_aggregation``, entropy bonus, ``delta``)
    are ignored. ``num_generations=1`` (the default) needs an even generation batch (GRPOConfig checks divisibility).
    Shared with GRPO: the penalty fields (:class:`~alignkit.plugins.common.penalty_fields.PenaltyFields`) and the
    adaptive-KL fields (:class:`~alignkit.plugins.common.kl_fields.AdaptiveKLFields`; here ``kl_target`` is a
    sequence KL, nats per completion, and ``kl_horizon`` counts sequences).
    """

    beta: float = field(default=0.05, metadata={"help": "KL coefficient β (initial value when kl_target is set)."})
    num_generations: int | None = field(default=1, metadata={"help": "Completions sampled per prompt."})
    kl_estimator: str = field(
        default="k1",
        metadata={
            "help": "Per-token KL in the reward (r_t = -beta * KL_t): 'k1' or 'k3'. The adaptive controller and the "
            "`kl` metric read the sequence KL with kl_reading either way (k3: unbiased, ~0.6x k1's standard error on "
            "ppo-smol); `kl/in_reward` logs this estimator's sum."
        },
    )
    kl_reading: str = field(
        default="k3",
        metadata={
            "help": "How the adaptive controller and the `kl` metric read a rollout's sequence KL: 'k3' (from the "
            "sampled tokens' log-probs) or 'analytic' (the KL over each position's next-token distribution, the "
            "policy's top 64 tokens from the sampling pass against the reference forward's; the sampled-token "
            "noise gone; `kl/k3` and `kl/analytic_tail` logged beside it). Needs transformers generation (not vLLM)."
        },
    )
    gamma: float = field(default=1.0, metadata={"help": "GAE discount γ in [0, 1]."})
    lam: float = field(default=0.95, metadata={"help": "GAE λ in [0, 1]."})
    whiten_advantages: bool = field(default=True, metadata={"help": "Whiten advantages over valid tokens."})
    vf_coef: float = field(default=0.1, metadata={"help": "Value loss coefficient."})
    cliprange_value: float = field(default=0.2, metadata={"help": "Value clip range ε_v around the rollout values."})
    missing_eos_penalty: float | None = field(
        default=None, metadata={"help": "Subtracted from the score of completions without EOS; None disables it."}
    )
    old_logps_from_sampling: bool = field(
        default=True,
        metadata={
            "help": "Take π_old from the sampling pass instead of a second policy forward (transformers generation); "
            "used only if a check on the first rollout agrees with the recomputed values within 1e-3 nats."
        },
    )
    share_prompt_prefix: bool = field(
        default=True,
        metadata={
            "help": "Run the prompt prefix that all rows of a batch share (e.g. the chat template's system prompt) "
            "once per forward, reusing its KV cache; rotary full-attention models without gradient checkpointing, "
            "after a one-time check against the plain forward."
        },
    )
    autocast_generation: bool = field(
        default=False,
        metadata={
            "help": "Sample rollouts under the training's mixed-precision autocast (bf16/fp16), like the log-prob "
            "forwards; TRL samples a PEFT policy outside it, in fp32. No effect without mixed precision or with vLLM. "
            "On ppo-smol (bf16 CPU): sampling 0.72x CPU, 0.88x wall, whole steps unchanged "
            "(bench/results/ppo_sampling_precision.md)."
        },
    )
    value_model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Separate critic backbone (same tokenizer), fully trained; None = 'value' LoRA adapter."},
    )

    def __post_init__(self) -> None:
        one_sample = self.num_generations == 1
        if one_sample:  # GRPOConfig insists on groups of ≥ 2 for its baseline; the critic is PPO's baseline
            self.num_generations = 2
        try:
            super().__post_init__()
        finally:
            if one_sample:
                self.num_generations = 1
        if self.kl_estimator not in ("k1", "k3"):
            raise ValueError(f"kl_estimator must be 'k1' or 'k3', got {self.kl_estimator!r}")
        if self.kl_reading not in ("k3", "analytic"):
            raise ValueError(f"kl_reading must be 'k3' or 'analytic', got {self.kl_reading!r}")
        if self.kl_reading == "analytic" and self.use_vllm:
            raise ValueError(
                "kl_reading 'analytic' reads the policy's next-token distributions in transformers' sampling pass; "
                "with use_vllm the rollouts are sampled elsewhere: use kl_reading 'k3'"
            )
        for name in ("gamma", "lam"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)!r}")
        if not self.cliprange_value > 0:
            raise ValueError(f"cliprange_value must be > 0, got {self.cliprange_value!r}")
        if not self.vf_coef >= 0:
            raise ValueError(f"vf_coef must be >= 0, got {self.vf_coef!r}")
        if self.missing_eos_penalty is not None and not self.missing_eos_penalty >= 0:
            raise ValueError(f"missing_eos_penalty must be >= 0 or None, got {self.missing_eos_penalty!r}")
