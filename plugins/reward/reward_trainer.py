"""Reward modelling with a length-decorrelation penalty (drop-in for ``trl.RewardConfig``/``trl.RewardTrainer``)."""

from __future__ import annotations

import torch
import trl

from alignkit.plugins.common.fast_path import CPUFastPathMixin
from alignkit.plugins.common.resume_state import ResumeStateMixin
from alignkit.plugins.reward.length_decorrelation import length_correlation_penalty, response_lengths
from alignkit.plugins.reward.reward_config import RewardConfig

__all__ = ["RewardConfig", "RewardTrainer"]


class RewardTrainer(CPUFastPathMixin, ResumeStateMixin, trl.RewardTrainer):
    """``trl.RewardTrainer`` with a reward–length decorrelation penalty and a CPU fast path.

    Seam: ``compute_loss``. It calls ``super().compute_loss(..., return_outputs=True)`` (Bradley–Terry loss, optional
    margin, ``center_rewards_coefficient`` and TRL's metrics all unchanged), then adds::

        loss += λ · ρ²,   ρ = Pearson( [r(x, y_w); r(x, y_l)],  [|y_w|; |y_l|] )   over the 2B sequences of the batch

    where |y| is the response length in tokens: the sequence length after the prefix the pair shares (the prompt),
    found from the token ids, so the prompt's length does not count (see
    :func:`alignkit.plugins.reward.length_decorrelation.response_lengths`). ρ² and not |ρ|: see
    :func:`alignkit.plugins.reward.length_decorrelation.length_correlation_penalty`. The penalty follows ODIN (Chen
    et al. 2024, https://arxiv.org/abs/2402.07319), which decorrelates a reward head from length with a Pearson loss;
    here it is applied to the single reward head. ρ is computed per device and micro-batch, so larger per-device
    batches give a less noisy estimate; with one pair per device it is ±1 or 0 and only its sign carries information.

    Logged: ``reward_length_corr`` (ρ, averaged across devices) whenever the coefficient is > 0.

    ``cpu_fast_path`` (:class:`~alignkit.plugins.common.fast_path.CPUFastPathMixin`): a reward model has no LM head,
    so only the frozen-base cast applies (under bf16 autocast, once per ``train()``).
    """

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        coef = self.args.length_decorrelation_coef
        if coef == 0:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        rewards = outputs.logits.squeeze(-1)  # (2B,): chosen first, then rejected (TRL's collator order)
        ids_c, ids_r = inputs["input_ids"].chunk(2)
        mask_c, mask_r = inputs["attention_mask"].chunk(2)
        len_c, len_r = response_lengths(ids_c, ids_r, mask_c, mask_r)
        penalty, rho = length_correlation_penalty(rewards, torch.cat([len_c, len_r]))
        loss = loss + coef * penalty

        mode = "train" if self.model.training else "eval"
        rho = self.accelerator.gather_for_metrics(rho.detach().reshape(1)).mean()
        self._metrics[mode]["reward_length_corr"].append(rho.item())
        return (loss, outputs) if return_outputs else loss
