"""RLHF-PPO (policy, critic, frozen reference, reward) on TRL 1.16's GRPOTrainer machinery.

TRL's PPOTrainer went to ``trl.experimental.ppo`` in 1.10 and was deleted in 1.13. This is a fresh implementation
(not a port of TRL 1.12): the maths lives in :mod:`alignkit.plugins.ppo.ppo_math`; this module only wires it into
``trl.GRPOTrainer``'s rollout and loss seams.
"""

from __future__ import annotations

from typing import Any

import torch
from accelerate.utils import is_peft_model
from torch import nn
from trl import GRPOTrainer
from trl.models.utils import disable_gradient_checkpointing

from alignkit.plugins.common.finite_guard import FiniteRewards, wrap_reward_funcs
from alignkit.plugins.common.kl_callback import AdaptiveKLMixin
from alignkit.plugins.common.kl_estimators import kl_estimate, kl_k2
from alignkit.plugins.common.masked import masked_mean
from alignkit.plugins.common.penalty_fields import add_penalty_rewards
from alignkit.plugins.common.resume_state import RolloutResumeMixin
from alignkit.plugins.ppo.ppo_config import PPOConfig
from alignkit.plugins.ppo.ppo_critic import CRITIC_STATE_FILE, CriticMixin
from alignkit.plugins.ppo.ppo_forward import ForwardEconomies
from alignkit.plugins.ppo.ppo_kl_reading import RolloutKLReading
from alignkit.plugins.ppo.ppo_math import (
    apply_missing_eos_penalty,
    clipped_policy_loss,
    clipped_value_loss,
    explained_variance,
    gae,
    masked_mean_var,
    masked_whiten,
    per_token_rewards,
)

__all__ = ["CRITIC_STATE_FILE", "PPOConfig", "PPOTrainer"]


class PPOTrainer(AdaptiveKLMixin, CriticMixin, ForwardEconomies, RolloutKLReading, RolloutResumeMixin, GRPOTrainer):
    """Classic RLHF-PPO with a learned critic, built on ``trl.GRPOTrainer`` (Schulman et al. 2017; Ziegler et al.
    2019; Huang et al. 2024 "N+ implementation details").

    Seams: ``_generate_and_score_completions`` (called once per rollout, on the whole generation batch) keeps
    GRPO's generation (incl. vLLM), reward functions/models and logging, and replaces its group advantages by
    per-token GAE advantages: r_t = −β·KL_t (k1/k3 against the adapter-disabled reference), plus the score at the
    last token; whitened over valid tokens; returns = A + V. ``_compute_loss`` is the clipped policy loss plus
    ``vf_coef`` × the clipped value loss. ``_save_optimizer_and_scheduler`` / ``_load_optimizer_and_scheduler`` save
    and restore the critic, the KL controller, the one-time forward checks and the rollout state
    (:class:`~alignkit.plugins.common.resume_state.RolloutResumeMixin`), so a killed run resumes exactly.
    GRPOTrainer rather than RLOOTrainer because GRPO hands back per-token old and reference log-probs and already
    supports per-token advantages; RLOO reduces both to sequence level.
    :class:`~alignkit.plugins.ppo.ppo_forward.ForwardEconomies` makes the forwards cheaper (compact LM head on CPU,
    π_old from sampling, the shared prompt prefix run once).

    PPO epochs and minibatches are GRPO's buffered rollout: ``num_iterations`` passes over a rollout of
    ``generation_batch_size`` sequences, cut into ``steps_per_generation`` micro-batches. With ``kl_target``, β is
    updated once per rollout from the measured sequence KL (mean over sequences of Σ_t k3_t, or with ``kl_reading:
    analytic`` of each position's KL over π's top tokens; nats per sequence, whatever ``kl_estimator`` the reward
    uses; also the ``kl`` metric), except from a rollout sampled before the first
    policy update (:class:`~alignkit.plugins.ppo.ppo_kl_reading.RolloutKLReading`), through the adaptive-KL path GRPO
    and DPO share (:class:`~alignkit.plugins.common.kl_callback.AdaptiveKLMixin`, ``kl_controller.json``).

    The critic (:class:`~alignkit.plugins.ppo.ppo_critic.CriticMixin`) is a second LoRA adapter ("value") on the
    policy's frozen base plus a linear head, or a separate backbone. Unscorable completions (all rewards None) score 0.
    """

    _tag_names = ["trl", "ppo", "alignkit"]
    _name = "PPO"

    def __init__(
        self,
        model: Any,
        reward_funcs: Any,
        args: PPOConfig | None = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        processing_class: Any = None,
        reward_processing_classes: Any = None,
        callbacks: list | None = None,
        optimizers: tuple = (None, None),
        quantization_config: Any = None,
        peft_config: Any = None,
    ):
        if args is None or not isinstance(args, PPOConfig):
            raise TypeError(f"args must be a PPOConfig, got {type(args).__name__}")
        if peft_config is None and not is_peft_model(model) and args.value_model_name_or_path is None:
            raise ValueError("PPOTrainer needs a peft_config (shared-base critic) or args.value_model_name_or_path")
        # The caller's reward_funcs, args and reward_processing_classes are not edited.
        reward_funcs, args, reward_processing_classes = add_penalty_rewards(
            reward_funcs, args, reward_processing_classes
        )
        if args.skip_nonfinite_rewards:  # a NaN/inf reward is skipped like None, and counted
            reward_funcs = wrap_reward_funcs(reward_funcs)
        super().__init__(
            model, reward_funcs, args, train_dataset, eval_dataset, processing_class,
            reward_processing_classes, callbacks, optimizers, quantization_config=quantization_config,
            peft_config=peft_config,
        )  # fmt: skip
        self._add_critic()
        self._add_kl_controller(update_on_step_end=False)  # updated once per rollout, in the rollout

    # ------------------------------------------------------------------------------------------------ rollout
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        self._rollout_rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        return self._rollout_rewards_per_func

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        out = super()._generate_and_score_completions(inputs)  # with π_old: ForwardEconomies
        mode = "train" if self.model.training else "eval"
        if self.args.skip_nonfinite_rewards:
            skipped = sum(f.take() for f in self.reward_funcs if isinstance(f, FiniteRewards))
            self._metrics[mode]["nonfinite/rewards_skipped"].append(float(skipped))
        mask = out["completion_mask"]
        ids = torch.cat([out["prompt_ids"], out["completion_ids"]], dim=1)
        attn = torch.cat([out["prompt_mask"], mask], dim=1)
        n = mask.size(1)
        chunk = self.args.per_device_train_batch_size if mode == "train" else self.args.per_device_eval_batch_size
        with torch.no_grad(), disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs):
            ref = out.pop("ref_per_token_logps", None)
            if ref is None:  # β = 0: GRPO skipped the reference; KL is still measured when the reference is free
                ref = out["old_per_token_logps"]
                if is_peft_model(unwrapped := self.accelerator.unwrap_model(self.model)):
                    with unwrapped.disable_adapter():
                        ref = self._get_per_token_logps_and_entropies(self.model, ids, attn, n, chunk)[0]
            values = [self._values(ids[i : i + chunk], attn[i : i + chunk], n) for i in range(0, len(ids), chunk)]
            values = torch.cat(values)

        # Sequence scores: GRPO's weighted reward sum, local slice of the gathered (N_global, F) matrix.
        weights = self.reward_weights.to(mask.device)
        scores = torch.nansum(self._rollout_rewards_per_func * weights, dim=1)
        rank, local = self.accelerator.process_index, mask.size(0)
        scores = scores[rank * local : (rank + 1) * local]
        ended = torch.isin(out["completion_ids"], torch.tensor(self.eos_token_ids, device=mask.device)) & mask.bool()
        scores = apply_missing_eos_penalty(scores, ended.any(1), self.args.missing_eos_penalty)

        beta = self.beta  # this rollout's β; the controller (if any) sets it
        kl = kl_estimate(out["old_per_token_logps"], ref, self.args.kl_estimator)
        rewards = per_token_rewards(kl, scores, mask, beta)
        advantages, returns = gae(rewards, values, mask, self.args.gamma, self.args.lam)
        if self.args.whiten_advantages:
            advantages = masked_whiten(advantages, mask, moments=self._global_moments(advantages, mask))

        self._read_rollout_kl(kl, out["old_per_token_logps"], ref, mask, mode, self._take_analytic_kl(out, ref))
        metrics = self._metrics[mode]
        metrics["kl_coef"].append(beta)
        metrics["score"].append(self.accelerator.gather(scores).mean().item())
        metrics["total_reward"].append(self.accelerator.gather(rewards.sum(1)).mean().item())
        metrics["value/explained_variance"].append(explained_variance(values, returns, mask).item())
        metrics["value/mean"].append(masked_mean(values, mask).item())
        out.update(advantages=advantages, returns=returns, old_values=values)
        return out

    def _global_moments(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Masked mean and variance over all processes' valid tokens (whitening statistics of the whole rollout)."""
        if self.accelerator.num_processes == 1:
            return masked_mean_var(x, mask)
        m = mask.to(x.dtype)
        s = self.accelerator.reduce(torch.stack([(x * m).sum(), (x * x * m).sum(), m.sum()]), reduction="sum")
        mean = s[0] / s[2].clamp(min=1)
        return mean, (s[1] / s[2].clamp(min=1) - mean**2).clamp(min=0)

    # ----------------------------------------------------------------------------------------------------- loss
    def _compute_loss(self, model: nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
        mode = "train" if self.model.training else "eval"
        mask = inputs["completion_mask"]
        ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
        attn = torch.cat([inputs["prompt_mask"], mask], dim=1)
        n = mask.size(1)
        logps, entropies, _ = self._get_per_token_logps_and_entropies(model, ids, attn, n, compute_entropy=True)
        values = self._values(ids, attn, n)
        pg_loss, clipfrac = clipped_policy_loss(
            logps, inputs["old_per_token_logps"], inputs["advantages"], mask, self.epsilon_low, self.epsilon_high
        )
        vf_loss, vf_clipfrac = clipped_value_loss(
            values, inputs["old_values"], inputs["returns"], mask, self.args.cliprange_value
        )
        loss = pg_loss + self.args.vf_coef * vf_loss
        metrics = self._metrics[mode]
        for name, value in (
            ("policy_loss", pg_loss),
            ("value_loss", vf_loss),
            ("clip_ratio/policy", clipfrac),
            ("clip_ratio/value", vf_clipfrac),
            ("entropy", masked_mean(entropies.detach(), mask)),
            ("approx_kl_old", masked_mean(kl_k2(logps.detach(), inputs["old_per_token_logps"]), mask)),
        ):
            metrics[name].append(self.accelerator.gather(value.detach()).mean().item())
        # GRPO declares loss_is_scaled_for_ga: the loss scales itself for gradient accumulation.
        return loss / (self.current_gradient_accumulation_steps if mode == "train" else 1.0)
