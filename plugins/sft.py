"""SFT with a token-level unlikelihood penalty on repeated tokens (drop-in for ``trl.SFTConfig``/``SFTTrainer``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import trl

from .unlikelihood import unlikelihood_loss

__all__ = ["SFTConfig", "SFTTrainer"]


@dataclass
class SFTConfig(trl.SFTConfig):
    """``trl.SFTConfig`` plus ``unlikelihood_alpha`` (0 = off, identical to TRL)."""

    unlikelihood_alpha: float = field(
        default=0.0,
        metadata={
            "help": "Weight α of the token-level unlikelihood penalty against repeating context tokens (Welleck et "
            "al. 2019): loss = NLL + α · mean_t Σ_{c ∈ C_t} −log(1 − p(c|x<t)). 0 disables it. Costs one extra "
            "forward pass that builds the full logits (TRL's fused LM head never materializes them)."
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


class SFTTrainer(trl.SFTTrainer):
    """``trl.SFTTrainer`` with unlikelihood training against repetition.

    Seam: ``compute_loss``. It calls ``super().compute_loss`` unchanged (TRL's NLL/DFT loss, aux loss, metrics), then,
    when ``unlikelihood_alpha > 0``, adds the token-level unlikelihood term of Welleck et al. 2019 (§4.1)::

        loss = L_TRL + α · L_UL,   L_UL = mean_t Σ_{c ∈ C_t} −log(1 − p_θ(c | x_{<t})),   C_t = {x_<t} \\ {x_t}

    (formula, shapes and the clamp in :func:`alignkit.plugins.unlikelihood.unlikelihood_loss`). TRL's fused LM head
    returns per-token log-probs but never the (B, T, V) logits, so the term takes one extra forward through the
    model's ordinary head. Under gradient accumulation with token-count normalisation (``num_items_in_batch``), the
    per-micro-batch mean is divided by the number of accumulation steps, as TRL does for the MoE aux loss.

    Logged: ``unlikelihood`` (L_UL, before α) and ``repetition_rate`` (fraction of target positions whose top-1
    prediction repeats a context token).
    """

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        alpha = self.args.unlikelihood_alpha
        if alpha == 0:
            return result
        loss, outputs = result if return_outputs else (result, None)
        model_inputs = {k: v for k, v in inputs.items() if k not in ("labels", "output_router_logits")}
        logits = model(**model_inputs).logits
        # Prompt-learning PEFT prepends virtual tokens to the outputs; keep the positions of the real tokens.
        logits = logits[:, -inputs["input_ids"].size(1) :]
        penalty, rep_rate = unlikelihood_loss(
            logits, inputs["input_ids"], inputs["labels"], inputs.get("attention_mask")
        )
        accumulating = num_items_in_batch is not None and self.model.training
        steps = self.current_gradient_accumulation_steps if accumulating else 1
        loss = loss + alpha * penalty / steps

        mode = "train" if self.model.training else "eval"
        stats = self.accelerator.gather_for_metrics(torch.stack([penalty.detach(), rep_rate]).unsqueeze(0))
        self._metrics[mode]["unlikelihood"].append(stats[:, 0].mean().item())
        self._metrics[mode]["repetition_rate"].append(stats[:, 1].mean().item())
        return (loss, outputs) if return_outputs else loss
