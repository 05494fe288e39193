"""The KL reading of a PPO rollout: what the adaptive controller is fed once per rollout, and the ``kl`` metrics.

Mixed into :class:`alignkit.plugins.ppo.ppo_trainer.PPOTrainer` (before ``GRPOTrainer``); uses the trainer's
``args``, ``accelerator``, ``state``, ``_metrics`` and ``_kl_callback`` (:class:`~alignkit.plugins.common.kl_callback.
AdaptiveKLMixin`), and, for ``kl_reading: analytic``, the capture that
:class:`~alignkit.plugins.ppo.ppo_forward.ForwardEconomies` keeps (``_rollout_sample``, ``_ref_rows``).
"""

from __future__ import annotations

import logging

import torch

from alignkit.plugins.common.kl_estimators import kl_k3
from alignkit.plugins.ppo.ppo_analytic_kl import analytic_kl

logger = logging.getLogger(__name__)

__all__ = ["RolloutKLReading", "standard_error"]


def standard_error(x: torch.Tensor) -> float:
    """SE of the mean of the 1-D sample ``x``: std(x) / √n (0 for a single value)."""
    return (x.std() / len(x) ** 0.5).item() if len(x) > 1 else 0.0


class RolloutKLReading:
    _analytic_missing_warned = False

    def _take_analytic_kl(self, out: dict, ref_logps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """This rollout's per-token analytic KL and tail mass (B, C), from the capture and the reference rows that
        :class:`~alignkit.plugins.ppo.ppo_forward.ForwardEconomies` kept (``kl_reading: analytic``), or None."""
        rows, sample = self._ref_rows, self._rollout_sample
        self._ref_rows = self._rollout_sample = None
        if self.args.kl_reading != "analytic":
            return None
        ids, mask = out["completion_ids"], out["completion_mask"]
        top = sample.serve_top(ids, mask) if sample is not None else None
        result = analytic_kl(top, rows, ref_logps, ids, mask) if top is not None and rows else None
        if result is None and not self._analytic_missing_warned:
            logger.warning(
                "PPO: no analytic KL reading for this rollout (the sampling pass or the reference forward was not "
                "captured); the controller reads k3 instead (counted in kl/analytic_missing)"
            )
            self._analytic_missing_warned = True
        return result

    def _read_rollout_kl(
        self,
        kl: torch.Tensor,
        old_logps: torch.Tensor,
        ref_logps: torch.Tensor,
        mask: torch.Tensor,
        mode: str,
        analytic: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> None:
        """Feed the controller this rollout's sequence KL and log it.

        Args:
            kl: (B, T) the reward's per-token estimate (``kl_estimator``); old_logps, ref_logps: (B, T) π_old and
                reference log-probs of the sampled tokens; mask: (B, T) valid completion tokens; analytic: (B, T)
                per-token analytic KL and tail mass (:meth:`_take_analytic_kl`) with ``kl_reading: analytic``.

        The controller reads the sequence KL (Σ_t over a sequence, mean over the rollout's sequences) with
        ``kl_reading``: k3 (whatever estimator the reward uses: both are unbiased for KL(π_old‖π_ref), and k3's
        per-token variance is O(KL_t²) against k1's O(KL_t), so its rollout mean has a smaller standard error; both
        logged: ``kl/seq_se``, ``kl/in_reward_seq_se``; bench/results/efficacy.md), or the analytic per-position KL
        (:mod:`~alignkit.plugins.ppo.ppo_analytic_kl`; k3 then logged as ``kl/k3``; a rollout without it reads k3).
        One controller update per rollout, counted in sequences (Ziegler et al.'s unit), and none from a rollout
        sampled before the run's first update: a fresh LoRA policy is the reference (B = 0), so its KL ≈ 0 says
        nothing about β and would only push β down before training.
        """
        k3 = kl if self.args.kl_estimator == "k3" else kl_k3(old_logps, ref_logps)
        reading = k3 if analytic is None else analytic[0]
        seq_kls = self.accelerator.gather((reading * mask).sum(1))
        seq_kl = seq_kls.mean().item()
        if mode == "train" and self.state.global_step > 0 and self._kl_callback is not None:
            self._kl_callback.record(seq_kl, mask.size(0) * self.accelerator.num_processes)
            self._kl_callback.flush()
        metrics = self._metrics[mode]
        metrics["kl"].append(seq_kl)
        # Standard error of that reading: one rollout's KL is a noisy sample mean (the controller sees it as is).
        metrics["kl/seq_se"].append(standard_error(seq_kls))
        if self.args.kl_reading == "analytic":
            k3_seq = seq_kls if analytic is None else self.accelerator.gather((k3 * mask).sum(1))
            metrics["kl/k3"].append(k3_seq.mean().item())
            metrics["kl/k3_seq_se"].append(standard_error(k3_seq))
            metrics["kl/analytic_missing"].append(float(analytic is None))
            if analytic is not None:  # share of π's mass outside its top k, mean over valid tokens
                tail = self.accelerator.gather(torch.stack([(analytic[1] * mask).sum(), mask.sum()]).unsqueeze(0))
                metrics["kl/analytic_tail"].append((tail[:, 0].sum() / tail[:, 1].sum().clamp(min=1)).item())
        # The same KL as the reward's estimator sums it (equal to k3's with kl_estimator k3): what β multiplies.
        in_reward = self.accelerator.gather((kl * mask).sum(1))
        metrics["kl/in_reward"].append(in_reward.mean().item())
        metrics["kl/in_reward_seq_se"].append(standard_error(in_reward))
