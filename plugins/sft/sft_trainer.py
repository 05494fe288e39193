"""SFT with a token-level unlikelihood penalty on repeated tokens (drop-in for ``trl.SFTConfig``/``SFTTrainer``)."""

from __future__ import annotations

import torch
import trl

from alignkit.plugins.common.fast_path import CPUFastPathMixin
from alignkit.plugins.common.resume_state import ResumeStateMixin
from alignkit.plugins.sft.fused_head import (
    capture_fused_forward,
    context_logprobs,
    head_transform,
    sampled_repetition_rate,
)
from alignkit.plugins.sft.sft_config import SFTConfig
from alignkit.plugins.sft.unlikelihood import unlikelihood_from_context_logprobs, unlikelihood_loss

__all__ = ["SFTConfig", "SFTTrainer"]

REPETITION_SAMPLE = 32  # target positions per micro-batch projected through the full head for `repetition_rate`


class SFTTrainer(CPUFastPathMixin, ResumeStateMixin, trl.SFTTrainer):
    """``trl.SFTTrainer`` with unlikelihood training against repetition and a CPU fast path.

    Seam: ``compute_loss``. It calls ``super().compute_loss`` unchanged (TRL's NLL/DFT loss, aux loss, metrics), then,
    when ``unlikelihood_alpha > 0``, adds the token-level unlikelihood term of Welleck et al. 2019 (§4.1)::

        loss = L_TRL + α · L_UL,   L_UL = mean_t Σ_{c ∈ C_t} −log(1 − p_θ(c | x_{<t})),   C_t = {x_<t} \\ {x_t}

    (formula, shapes and the clamp in :mod:`alignkit.plugins.sft.unlikelihood`). TRL 1.16's fused LM head never builds
    the (B, T, V) logits, and L_UL does not need them: scoped forward hooks keep the final hidden states and the target
    log-probs of TRL's own forward, and :func:`~alignkit.plugins.sft.fused_head.context_logprobs` gets the candidates'
    log-probs from the head rows of the context tokens, with the softmax normaliser log Z = z_target − log p(target)
    (its gradient flows through the fused head's backward). No second forward; extra cost O(B·T²·H). With
    ``label_smoothing_factor`` or ``compute_loss_func`` TRL's loss bypasses the fused head, and the term falls back to
    one extra forward that builds the logits. Under gradient accumulation with token-count normalisation
    (``num_items_in_batch``), the per-micro-batch mean is divided by the number of accumulation steps, as TRL does for
    the MoE aux loss.

    Logged: ``unlikelihood`` (L_UL, before α) and ``repetition_rate`` (fraction of target positions whose top-1
    prediction repeats a context token; on the fused path measured on up to 32 evenly spaced target positions per
    micro-batch, see :func:`~alignkit.plugins.sft.fused_head.sampled_repetition_rate`).

    ``cpu_fast_path`` (:class:`~alignkit.plugins.common.fast_path.CPUFastPathMixin`): the fused head projects only the
    labelled positions, through a CPU-shaped head; under bf16 autocast the frozen base is cast to bf16 once per
    ``train()``.
    """

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        # Unlikelihood reads the backbone's (B, T, H) hidden states, which a packed forward would not give it.
        with self.fast_head(pack=self.args.unlikelihood_alpha == 0):
            return self._compute_loss_with_plugins(model, inputs, return_outputs, num_items_in_batch)

    def _compute_loss_with_plugins(self, model, inputs, return_outputs, num_items_in_batch):
        alpha = self.args.unlikelihood_alpha
        if alpha == 0:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        bypasses_fused_head = self.compute_loss_func is not None or (
            self.label_smoother is not None and self.args.loss_type == "nll"
        )
        if bypasses_fused_head:
            result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            penalty, rep_rate = self._unlikelihood_extra_forward(model, inputs)
        else:
            top = self.accelerator.unwrap_model(model)
            base = top.get_base_model() if hasattr(top, "get_base_model") else top  # PEFT
            with capture_fused_forward(top, base.base_model) as captured:
                result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            penalty, rep_rate = self._unlikelihood_fused(base, inputs, captured)

        loss, outputs = result if return_outputs else (result, None)
        accumulating = num_items_in_batch is not None and self.model.training
        steps = self.current_gradient_accumulation_steps if accumulating else 1
        loss = loss + alpha * penalty / steps

        mode = "train" if self.model.training else "eval"
        stats = self.accelerator.gather_for_metrics(torch.stack([penalty.detach(), rep_rate]).unsqueeze(0))
        self._metrics[mode]["unlikelihood"].append(stats[:, 0].mean().item())
        self._metrics[mode]["repetition_rate"].append(stats[:, 1].mean().item())
        return (loss, outputs) if return_outputs else loss

    def _unlikelihood_fused(self, base, inputs, captured) -> tuple[torch.Tensor, torch.Tensor]:
        """L_UL and the sampled repetition rate from the hidden states and log-probs of TRL's fused forward."""
        ids, labels, mask = inputs["input_ids"], inputs["labels"], inputs.get("attention_mask")
        seq_len = ids.size(1)
        if seq_len < 2:
            zero = captured["log_probs"].sum() * 0.0
            return zero, zero.detach()
        head = base.get_output_embeddings()
        # Prompt-learning PEFT prepends virtual tokens; keep the positions of the real tokens (as TRL's head does, the
        # hidden states move to the head's device).
        hidden = captured["hidden"][:, -seq_len:-1].to(head.weight.device)
        target_logprobs = captured["log_probs"][:, -(seq_len - 1) :]
        scale, softcap = head_transform(base.config.get_text_config())
        device, dtype, enabled = captured["autocast"]
        with torch.autocast(device, dtype=dtype, enabled=enabled):
            ctx_logp = context_logprobs(hidden, head.weight, head.bias, ids, target_logprobs, scale, softcap)
            rep_rate = sampled_repetition_rate(hidden, head.weight, head.bias, ids, labels, mask, REPETITION_SAMPLE)
        penalty = unlikelihood_from_context_logprobs(ctx_logp, ids, labels, mask)
        return penalty, rep_rate

    def _unlikelihood_extra_forward(self, model, inputs) -> tuple[torch.Tensor, torch.Tensor]:
        """L_UL and the repetition rate from one extra forward that builds the full logits."""
        model_inputs = {k: v for k, v in inputs.items() if k not in ("labels", "output_router_logits")}
        logits = model(**model_inputs).logits
        # Prompt-learning PEFT prepends virtual tokens to the outputs; keep the positions of the real tokens.
        logits = logits[:, -inputs["input_ids"].size(1) :]
        return unlikelihood_loss(logits, inputs["input_ids"], inputs["labels"], inputs.get("attention_mask"))
