"""DPO with R-DPO length regularisation and an adaptive β (drop-in for ``trl.DPOConfig``/``trl.DPOTrainer``)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
import trl

from alignkit.plugins.common.fast_path import CPUFastPathMixin
from alignkit.plugins.common.kl_callback import AdaptiveKLMixin
from alignkit.plugins.common.kl_estimators import kl_k2
from alignkit.plugins.common.repetition_penalty import ngram_repetition_rate
from alignkit.plugins.common.resume_state import ResumeStateMixin
from alignkit.plugins.dpo.dpo_config import DPOConfig
from alignkit.plugins.dpo.policy_samples import policy_reply_stats
from alignkit.plugins.dpo.rdpo import rdpo_reference_tilt, tilt_reference_logps

__all__ = ["DPOConfig", "DPOTrainer"]

REPETITION_NGRAM = 3  # n of the logged n-gram repetition rate (same quantity as TRL's repetition reward)


class DPOTrainer(CPUFastPathMixin, AdaptiveKLMixin, ResumeStateMixin, trl.DPOTrainer):
    """``trl.DPOTrainer`` with R-DPO, an adaptive β and a CPU fast path; every TRL loss type, ``ld_alpha`` and metric
    still apply.

    Seams: ``compute_loss``, which calls ``super().compute_loss`` inside a scoped forward hook, and
    ``compute_ref_log_probs`` (``precompute_ref_log_probs``), which only adds the fast path around TRL's. TRL 1.16
    computes the whole loss in one private method (``_compute_loss``) from two fused-head forwards, policy first, then
    reference; the hook reads both outputs' per-token log-probs and, for R-DPO, edits the reference ones (pinned by
    ``tests/test_seams.py``).

    R-DPO (Park et al. 2024, https://arxiv.org/abs/2403.19159, eq. 9)::

        loss = −log σ( β·[log π/π_ref(y_w) − log π/π_ref(y_l)] + α·(|y_w| − |y_l|) )

    applied as DPO against the length-tilted reference log π_ref'(y) = log π_ref(y) − (α/β)·|y|: the tilt of
    :func:`~alignkit.plugins.dpo.rdpo.rdpo_reference_tilt` (the one :func:`~alignkit.plugins.dpo.rdpo.rdpo_logits`
    uses) is subtracted at the first completion token (weight 1 under ``ld_alpha``), or from precomputed reference
    log-probs. For ``sigmoid`` this is exactly R-DPO; the other loss types see the same tilted log-ratios, and the
    logged ``rewards/*`` are the tilted implicit rewards.

    Adaptive β: per micro-batch the implicit KL is estimated as the mean over completion tokens of chosen and
    rejected of k2 = ½ (log π(y_t) − log π_ref(y_t))². The tokens come from the data, not from π, so neither k1 nor
    k3 is unbiased here anyway; k2 is ≥ 0, counts drift in both directions (chosen up, rejected down) and grows
    quadratically, not exponentially like k3 on heavily down-weighted rejected tokens. After each optimizer step the
    Ziegler et al. controller moves β (n = preference pairs seen), through the path GRPO, DPO and PPO share
    (:class:`~alignkit.plugins.common.kl_callback.AdaptiveKLMixin`, checkpointed as ``kl_controller.json``).

    Logged: ``beta``, ``kl_implicit``, ``lengths/chosen``, ``lengths/rejected``, ``repetition_rate/chosen``,
    ``repetition_rate/rejected`` (3-gram rate of the dataset completions); with ``policy_sample_steps`` also
    ``lengths/policy`` and ``repetition_rate/policy``, from greedy replies of the current policy to the batch's first
    prompts (:func:`alignkit.plugins.dpo.policy_samples.policy_reply_stats`), the one view of what DPO does to the
    model's own outputs.

    ``cpu_fast_path`` (:class:`~alignkit.plugins.common.fast_path.CPUFastPathMixin`): the policy and reference
    forwards of ``compute_loss`` run without padding, with each pair's shared prompt once, and project only the
    completion positions, through a CPU-shaped head; under bf16 autocast the frozen base is cast to bf16 once per
    ``train()``.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._policy_sampled_at = -1
        self._add_kl_controller(update_on_step_end=True)

    @contextlib.contextmanager
    def _fused_outputs(self, on_output: Callable[[int, object], object]) -> Iterator[None]:
        """Route each fused-head output (policy = call 0, reference = call 1) through ``on_output``."""
        calls = [0]

        def hook(module, args, output):
            if getattr(output, "log_probs", None) is None:  # e.g. the logits-only forward for return_outputs
                return None
            calls[0] += 1
            return on_output(calls[0] - 1, output)

        modules = {id(m): m for m in (self.model, self.ref_model) if m is not None}
        handles = [self.accelerator.unwrap_model(m).register_forward_hook(hook) for m in modules.values()]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def _log_policy_replies(self, model, inputs) -> None:
        """Every ``policy_sample_steps`` optimizer steps (first micro-batch): sample and log the policy's replies."""
        step = self.state.global_step
        if not self.model.training or step % self.args.policy_sample_steps or step == self._policy_sampled_at:
            return
        self._policy_sampled_at = step
        k = min(self.args.policy_sample_size, inputs["input_ids"].size(0) // 2)  # chosen rows come first
        tokenizer = getattr(self.processing_class, "tokenizer", self.processing_class)
        stats = policy_reply_stats(
            self.accelerator.unwrap_model(model), tokenizer, inputs["input_ids"][:k], inputs["completion_mask"][:k],
            self.args.policy_sample_max_new_tokens, REPETITION_NGRAM,
        )  # fmt: skip
        stats = self.accelerator.gather_for_metrics(stats.to(inputs["input_ids"].device)).mean(dim=0)
        self._metrics["train"]["lengths/policy"].append(stats[0].item())
        self._metrics["train"]["repetition_rate/policy"].append(stats[1].item())

    def compute_ref_log_probs(self, model, inputs):
        """Seam: TRL's reference forward for ``precompute_ref_log_probs`` (run once over the dataset, from TRL's
        ``__init__``), through the CPU fast path like the training forwards when it is on: the same log-probs within
        bf16 rounding, without padding and with each pair's prompt once."""
        with self.fast_head(share_pair_prefix=True):
            return super().compute_ref_log_probs(model, inputs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        with self.fast_head(share_pair_prefix=True):  # rows i and i + B/2 are a pair's chosen and rejected
            return self._compute_loss_with_plugins(model, inputs, return_outputs, num_items_in_batch)

    def _compute_loss_with_plugins(self, model, inputs, return_outputs, num_items_in_batch):
        args = self.args
        if args.policy_sample_steps:
            self._log_policy_replies(model, inputs)
        if not (args.rdpo_alpha > 0 or args.kl_target is not None or args.log_completion_stats):
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        mode = "train" if self.model.training else "eval"
        shift_mask = inputs["completion_mask"][:, 1:]  # (2B, T-1): chosen rows first, then rejected
        lengths = shift_mask.sum(dim=1)  # (2B,) completion tokens
        tilt = rdpo_reference_tilt(lengths, self.beta, args.rdpo_alpha)  # subtracted from log π_ref(y)
        if args.rdpo_alpha > 0 and self.precompute_ref_logps:
            tilt_c, tilt_r = tilt.chunk(2)
            inputs = {
                **inputs,
                "ref_chosen_logps": inputs["ref_chosen_logps"] - tilt_c,
                "ref_rejected_logps": inputs["ref_rejected_logps"] - tilt_r,
            }
        captured: dict[str, torch.Tensor] = {}

        def on_output(call: int, output):
            seq_len = shift_mask.size(1)
            if call == 0:
                captured["policy"] = output.log_probs[:, -seq_len:].detach()
            elif call == 1:
                captured["ref"] = output.log_probs[:, -seq_len:].detach()
                if args.rdpo_alpha > 0:
                    output.log_probs = tilt_reference_logps(output.log_probs, shift_mask, tilt)
            return output

        with self._fused_outputs(on_output):
            result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

        metrics = self._metrics[mode]
        n_pairs = shift_mask.size(0) // 2
        if "ref" in captured:
            k2 = kl_k2(captured["policy"].float(), captured["ref"].float())
            sums = torch.stack([(k2 * shift_mask).sum(), shift_mask.sum().float()])
            sums = self.accelerator.reduce(sums, reduction="sum")
            kl = (sums[0] / sums[1].clamp(min=1)).item()
            metrics["kl_implicit"].append(kl)
            if self._kl_callback is not None and mode == "train":
                self._kl_callback.record(kl, n_pairs * self.accelerator.num_processes)
        metrics["beta"].append(self.beta)
        ids = inputs["input_ids"][:, 1:]
        reps = [
            ngram_repetition_rate(row[m.bool()].tolist(), REPETITION_NGRAM)
            for row, m in zip(ids, shift_mask, strict=True)
        ]
        stats = torch.stack([lengths.float(), torch.tensor(reps, device=lengths.device)], dim=1)  # (2B, 2)
        stats = self.accelerator.gather_for_metrics(stats.view(2, n_pairs, 2).transpose(0, 1)).mean(dim=0)  # (2, 2)
        for row, name in enumerate(("chosen", "rejected")):
            metrics[f"lengths/{name}"].append(stats[row, 0].item())
            metrics[f"repetition_rate/{name}"].append(stats[row, 1].item())
        return result
