"""GRPO with advantage variants, penalty shaping and adaptive KL (drop-in for ``trl.GRPOConfig``/``GRPOTrainer``)."""

from __future__ import annotations

import torch
import trl

from alignkit.plugins.common.advantage_methods import normalize
from alignkit.plugins.common.finite_guard import FiniteRewards, wrap_reward_funcs
from alignkit.plugins.common.kl_callback import AdaptiveKLMixin
from alignkit.plugins.common.penalty_fields import add_penalty_rewards
from alignkit.plugins.common.resume_state import RolloutResumeMixin
from alignkit.plugins.grpo.grpo_config import GRPOConfig

__all__ = ["GRPOConfig", "GRPOTrainer"]


class GRPOTrainer(AdaptiveKLMixin, RolloutResumeMixin, trl.GRPOTrainer):
    """``trl.GRPOTrainer`` with advantage variants, penalty shaping and adaptive KL.

    Seam: ``_generate_and_score_completions`` (private: TRL computes advantages inline there), with
    ``_calculate_rewards`` wrapped only to keep its (N, n_funcs) gathered rewards; both are pinned by
    ``tests/test_seams.py``. After ``super()`` returns, the advantages are recomputed from the same rewards::

        r_i = Σ_k w_k · r_ik   (NaN if every function returned None)      A = normalize(r, G, advantage_method)

    with G = num_generations and the method's formula in :mod:`alignkit.plugins.advantages` (e.g. RLOO,
    A_i = r_i − mean_{j≠i} r_j), then sliced to this process. ``advantage_method=None`` leaves TRL's advantages alone.

    Shaping: :class:`~alignkit.plugins.penalties.LengthPenalty` (r = −max(0, |y| − target), |y| in completion tokens)
    and :class:`~alignkit.plugins.penalties.RepetitionPenalty` (TRL's n-gram penalty in [−1, 0]) are appended to
    ``reward_funcs`` with weights ``length_penalty_coef`` / ``repetition_penalty_weight`` in ``reward_weights``
    (:func:`~alignkit.plugins.common.penalty_fields.add_penalty_rewards`, shared with PPO), so they enter the weighted
    sum above and are logged as ``rewards/<name>/mean``.

    With ``skip_nonfinite_rewards`` a reward function's NaN/inf is skipped like TRL's ``None`` and counted
    (``nonfinite/rewards_skipped``, :mod:`alignkit.plugins.common.finite_guard`).

    Adaptive KL (Ziegler et al. 2019, https://arxiv.org/abs/1909.08593, §2.2): TRL's per-token k3 KL (the ``kl``
    metric, the very term β multiplies in the loss) is collected over the micro-batches of a generation batch; before
    the next generation, β ← β·(1 + clip(KL/target − 1, ±0.2)·n/horizon), n = completions in the batch (all
    processes). β is logged as ``kl_coef``; controller, checkpointing and resume are the path GRPO, DPO and PPO share
    (:class:`~alignkit.plugins.common.kl_callback.AdaptiveKLMixin`, ``kl_controller.json``).

    Resume: a checkpoint also holds GRPO's micro-step counter and, mid-rollout, the rest of the buffered rollout
    (:class:`~alignkit.plugins.common.resume_state.RolloutResumeMixin`), so a resumed run trains as an uninterrupted
    one would.
    """

    def __init__(
        self,
        model,
        reward_funcs=None,
        args: GRPOConfig | None = None,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        reward_processing_classes=None,
        *pos,
        **kwargs,
    ):
        if args is not None:  # the caller's reward_funcs, args and reward_processing_classes are not edited
            reward_funcs, args, reward_processing_classes = add_penalty_rewards(
                reward_funcs, args, reward_processing_classes
            )
        if args is not None and args.skip_nonfinite_rewards:  # a NaN/inf reward is skipped like None, and counted
            reward_funcs = wrap_reward_funcs(reward_funcs)
        super().__init__(
            model, reward_funcs, args, train_dataset, eval_dataset, processing_class, reward_processing_classes,
            *pos, **kwargs,
        )  # fmt: skip
        self._add_kl_controller(update_on_step_end=False)  # flushed before each generation batch

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._last_rewards_per_func = rewards_per_func  # (N_global, n_funcs), read back by the advantage override
        return rewards_per_func

    def _generate_and_score_completions(self, inputs):
        mode = "train" if self.model.training else "eval"
        if self._kl_callback is not None and mode == "train":
            self._kl_callback.flush()  # β from the KL measured on the previous generation batch
        output = super()._generate_and_score_completions(inputs)
        if self.args.skip_nonfinite_rewards:
            skipped = sum(f.take() for f in self.reward_funcs if isinstance(f, FiniteRewards))
            self._metrics[mode]["nonfinite/rewards_skipped"].append(float(skipped))
        if self.args.advantage_method is not None:
            rewards_per_func = self._last_rewards_per_func
            rewards = (rewards_per_func * self.reward_weights.to(rewards_per_func.device)).nansum(dim=1)
            rewards[torch.isnan(rewards_per_func).all(dim=1)] = torch.nan
            group = self.num_generations if mode == "train" else self.num_generations_eval
            advantages = normalize(rewards, group, self.args.advantage_method)
            logged = self._logs["advantages"]  # the completions table: show the advantages the loss uses
            for _ in range(min(len(advantages), len(logged))):
                logged.pop()
            logged.extend(advantages.tolist())
            start = self.accelerator.process_index * len(inputs)
            output["advantages"] = advantages[start : start + len(inputs)].to(output["advantages"].dtype)
        return output

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if self._kl_callback is not None:
            mode = "train" if self.model.training else "eval"
            kl_readings = self._metrics[mode].get("kl")
            if mode == "train" and kl_readings:
                n = inputs["completion_ids"].size(0) * self.accelerator.num_processes
                self._kl_callback.record(kl_readings[-1], n)
            self._metrics[mode]["kl_coef"].append(self.beta)
        return loss
