"""The KL reading of a PPO rollout: what the adaptive controller is fed once per rollout, and the ``kl`` metrics.

Mixed into :class:`alignkit.plugins.ppo.ppo_trainer.PPOTrainer` (before ``GRPOTrainer``); uses the trainer's
``args``, ``accelerator``, ``state``, ``_metrics`` and ``_kl_callback`` (:class:`~alignkit.plugins.common.kl_callback.
AdaptiveKLMixin`).
"""

from __future__ import annotations

import torch

from alignkit.plugins.common.kl_estimators import kl_k3

__all__ = ["RolloutKLReading", "standard_error"]


def standard_error(x: torch.Tensor) -> float:
    """SE of the mean of the 1-D sample ``x``: std(x) / √n (0 for a single value)."""
    return (x.std() / len(x) ** 0.5).item() if len(x) > 1 else 0.0


class RolloutKLReading:
    def _read_rollout_kl(
        self, kl: torch.Tensor, old_logps: torch.Tensor, ref_logps: torch.Tensor, mask: torch.Tensor, mode: str
    ) -> None:
        """Feed the controller this rollout's sequence KL and log it.

        Args:
            kl: (B, T) the reward's per-token estimate (``kl_estimator``); old_logps, ref_logps: (B, T) π_old and
                reference log-probs of the sampled tokens; mask: (B, T) valid completion tokens.

        The controller reads the sequence KL (Σ_t over a sequence, mean over the rollout's sequences) with k3,
        whatever estimator the reward uses: both are unbiased for KL(π_old‖π_ref), and k3's per-token variance is
        O(KL_t²) against k1's O(KL_t), so its rollout mean has a smaller standard error (both logged: ``kl/seq_se``,
        ``kl/in_reward_seq_se``; bench/results/efficacy.md). One controller update per rollout, counted in sequences
        (Ziegler et al.'s unit), and none from a rollout sampled before the run's first update: a fresh LoRA policy
        is the reference (B = 0), so its KL ≈ 0 says nothing about β and would only push β down before training.
        """
        reading = kl if self.args.kl_estimator == "k3" else kl_k3(old_logps, ref_logps)
        seq_kls = self.accelerator.gather((reading * mask).sum(1))
        seq_kl = seq_kls.mean().item()
        if mode == "train" and self.state.global_step > 0 and self._kl_callback is not None:
            self._kl_callback.record(seq_kl, mask.size(0) * self.accelerator.num_processes)
            self._kl_callback.flush()
        metrics = self._metrics[mode]
        metrics["kl"].append(seq_kl)
        # Standard error of that reading: one rollout's KL is a noisy sample mean (the controller sees it as is).
        metrics["kl/seq_se"].append(standard_error(seq_kls))
        # The same KL as the reward's estimator sums it (equal to `kl` with kl_estimator k3): what β multiplies.
        in_reward = seq_kls if reading is kl else self.accelerator.gather((kl * mask).sum(1))
        metrics["kl/in_reward"].append(in_reward.mean().item())
        metrics["kl/in_reward_seq_se"].append(standard_error(in_reward))
