"""Forward-pass economies of :class:`alignkit.plugins.ppo.PPOTrainer` (measured in bench/results/ppo_peer.md).

1.-2. **Compact LM head on the CPU; π_old from the sampling pass**: :mod:`alignkit.plugins.ppo.ppo_logps`
   (:func:`compact_fused_head`, :class:`SampledLogProbs`); this mixin uses them around each forward and rollout,
   and trusts sampled log-probs only after a check rollout agrees within ``SAMPLED_LOGP_TOLERANCE``.
3. **The shared prompt prefix once** (:mod:`alignkit.prefix_cache`, the module eval shares prompts with): reference,
   value and update forwards run the tokens that open every prompt of the batch once and the rows' remainders on
   its KV cache, after a one-time check of the mechanism against the plain forward. A separate critic backbone
   (``value_model_name_or_path``) does the same, checked once on its own.
4. **Sampling in the training's precision** (``autocast_generation``). TRL runs its log-prob forwards under
   accelerate's autocast, and accelerate wraps the prepared model's ``forward`` in it; but ``PeftModel.generate``
   steps the base model's own forward, so a LoRA/QLoRA policy samples in fp32 while it trains in bf16.
   ``_generate_single_turn`` runs under ``accelerator.autocast()`` instead (a no-op without mixed precision; not
   for vLLM, which samples in its own dtype), as a full-model policy already does. Off by default: on ppo-smol
   (bf16 CPU, bench/results/ppo_sampling_precision.md) it cut sampling to 0.72x CPU and 0.88x wall time, but whole
   optimizer steps took the same time (sampling is ~20 % of them, and the arms' samples differ), and the gap
   between the sampler's log-probs and the training forward's did not shrink (mean 0.030 vs 0.026 nats), so it
   buys speed only where sampling dominates, e.g. long completions.
5. **The analytic KL reading's inputs** (``kl_reading: analytic``): the sampling capture also keeps each position's
   top tokens, and the rollout's reference forward records the head rows it scored
   (:mod:`alignkit.plugins.ppo.ppo_analytic_kl`); no forward is added.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from torch import nn
from trl.models.utils import disable_gradient_checkpointing

from alignkit import prefix_cache
from alignkit.plugins.ppo.ppo_analytic_kl import TOP_K, HeadRows, record_head_rows
from alignkit.plugins.ppo.ppo_logps import SampledLogProbs, compact_fused_head

__all__ = ["SAMPLED_LOGP_TOLERANCE", "ForwardEconomies"]

logger = logging.getLogger(__name__)

# Largest |log π_sampled − log π_recomputed| (nats, any valid token) accepted on the check rollout. fp32 CPU runs
# agree to ~1e-5; bf16 autocast of the training forward differs by ~1e-2, so it keeps recomputing.
SAMPLED_LOGP_TOLERANCE = 1e-3


def _names(adapter: str | list[str] | None) -> list[str] | None:
    return [adapter] if isinstance(adapter, str) else None if adapter is None else list(adapter)


class ForwardEconomies:
    """Mixin for a ``trl.GRPOTrainer`` subclass: :func:`compact_fused_head` and the shared prompt prefix
    (``_prefix_split``, also used by the critic) around every log-prob forward, and π_old served from a
    :class:`SampledLogProbs` capture that ``_generate_and_score_completions`` sets up (see module doc).

    State: ``_sampled`` is the capture of the running rollout (consumed by the first policy forward on its completion
    ids); ``_sampled_trusted`` is None until the check rollout, then whether sampled log-probs are used;
    ``_prefix_trusted`` likewise for shared-prefix forwards (:mod:`alignkit.prefix_cache`), checked on the
    first forward that has a shared prefix; ``_critic_prefix_trusted`` for a separate critic backbone's.
    """

    _sampled: SampledLogProbs | None = None
    _sampled_trusted: bool | None = None
    _prefix_trusted: bool | None = None
    _critic_prefix_trusted: bool | None = None
    sampled_logp_gap: tuple[float, float] | None = None  # set by the check rollout, see _agrees
    _serve_sampled: bool = False  # this rollout's capture may serve π_old
    _rollout_sample: SampledLogProbs | None = None  # this rollout's capture, kept for the analytic KL reading
    _ref_rows: list[HeadRows] | None = None  # the rollout's reference head calls, for the analytic KL reading
    _policy_adapter: list[str] | None = None
    _tuner_layers: list[nn.Module] = []

    # The one-time checks' verdicts go into each checkpoint (alignkit.plugins.common.resume_state): a resumed run that
    # checked again would run the check's extra forward (dropout draws, other π_old) where the uninterrupted one
    # did not, and train differently from then on.
    def _resume_state(self) -> dict[str, Any]:
        checks = {"sampled_trusted": self._sampled_trusted, "prefix_trusted": self._prefix_trusted}
        if self._critic_prefix_trusted is not None:
            checks["critic_prefix_trusted"] = self._critic_prefix_trusted
        if self.sampled_logp_gap is not None:
            checks["sampled_logp_gap"] = list(self.sampled_logp_gap)
        return {**super()._resume_state(), "ppo_forward_checks": checks}

    def _restore_resume_state(self, state: dict[str, Any]) -> None:
        super()._restore_resume_state(state)
        checks = state.get("ppo_forward_checks", {})
        self._sampled_trusted = checks.get("sampled_trusted")
        self._prefix_trusted = checks.get("prefix_trusted")
        self._critic_prefix_trusted = checks.get("critic_prefix_trusted")
        gap = checks.get("sampled_logp_gap")
        self.sampled_logp_gap = tuple(gap) if gap is not None else None

    @contextmanager
    def _capture_sampling(self) -> Iterator[None]:
        """Around one rollout: capture the sampling log-probs when they may serve as π_old (enabled, not found
        unreliable) or when the analytic KL reading needs the policy's top tokens (``kl_reading``); not when
        transformers' ``generate`` does not sample (vLLM). For the analytic reading, also start recording the
        reference forward's head rows (:mod:`alignkit.plugins.ppo.ppo_analytic_kl`; taken by the KL reading)."""
        self._serve_sampled = self.args.old_logps_from_sampling and self._sampled_trusted is not False
        analytic = self.args.kl_reading == "analytic"
        if not (self._serve_sampled or analytic) or getattr(self, "use_vllm", False):
            yield
            return
        unwrapped = self.accelerator.unwrap_model(self.model)
        causal_lm = unwrapped.get_base_model() if hasattr(unwrapped, "get_base_model") else unwrapped
        self._policy_adapter = _names(getattr(unwrapped, "active_adapter", None))  # outside any adapter switch
        self._sampled = SampledLogProbs(self.temperature, top_k=TOP_K if analytic else 0)
        if analytic:
            self._rollout_sample, self._ref_rows = self._sampled, []
        try:
            with self._sampled.capture(unwrapped, causal_lm):
                yield
        finally:
            self._sampled = None

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        """GRPO's rollout, plus π_old ("old_per_token_logps") when GRPO skipped it (no update between rollout and
        loss; PPO still needs it for the KL reward), served from the sampling pass once trusted."""
        with self._capture_sampling():
            out = super()._generate_and_score_completions(inputs)
            if "old_per_token_logps" not in out:
                ids = torch.cat([out["prompt_ids"], out["completion_ids"]], dim=1)
                attn = torch.cat([out["prompt_mask"], out["completion_mask"]], dim=1)
                n, args = out["completion_ids"].size(1), self.args
                chunk = args.per_device_train_batch_size if self.model.training else args.per_device_eval_batch_size
                with torch.no_grad(), disable_gradient_checkpointing(self.model, args.gradient_checkpointing_kwargs):
                    out["old_per_token_logps"] = self._get_per_token_logps_and_entropies(
                        self.model, ids, attn, n, chunk
                    )[0]
        return out

    def _generate_single_turn(self, *args: Any, **kwargs: Any) -> Any:
        """GRPO's sampling seam, under the training's autocast when ``autocast_generation`` (module doc, item 4)."""
        use = self.args.autocast_generation and not getattr(self, "use_vllm", False)
        with self.accelerator.autocast() if use else nullcontext():
            return super()._generate_single_turn(*args, **kwargs)

    def _policy_adapter_active(self, model: nn.Module) -> bool:
        """Is this forward the policy's (not the reference: adapters disabled or a "ref" adapter)?"""
        if model is not self.model:
            return False
        layers = self._tuner_layers
        return not layers or (
            not layers[0].disable_adapters and _names(layers[0].active_adapter) == self._policy_adapter
        )

    def _prefix_split(self, input_ids, attention_mask, n_completion: int, critic_backbone: nn.Module | None = None):
        """``(input_ids, attention_mask, context)`` that run a (B, P + C) forward of the policy's backbone (or of
        ``critic_backbone``, a separate critic's) on the rows' shared prompt prefix once, or the inputs unchanged
        with a null context."""
        unwrapped = self.accelerator.unwrap_model(self.model)
        causal_lm = unwrapped.get_base_model() if hasattr(unwrapped, "get_base_model") else unwrapped
        which = "_prefix_trusted" if critic_backbone is None else "_critic_prefix_trusted"
        if (
            not self.args.share_prompt_prefix
            or getattr(self, which) is False
            or not prefix_cache.supported(unwrapped if critic_backbone is None else critic_backbone, True)
        ):
            return input_ids, attention_mask, nullcontext()
        split = prefix_cache.split_at_prefix(input_ids, attention_mask, n_completion)
        if split is None:
            return input_ids, attention_mask, nullcontext()
        backbone = critic_backbone or causal_lm.base_model
        if getattr(self, which) is None:  # once per run and backbone: does the mechanism reproduce the plain one?
            try:
                gap, tolerance = prefix_cache.check_against_plain(
                    backbone, input_ids, attention_mask, n_completion, split
                )
            except Exception as error:  # e.g. sharded parameters that only the wrapped model's forward gathers
                logger.warning("PPO: shared-prefix check failed (%s); not sharing the prompt prefix", error)
                gap, tolerance = float("inf"), 0.0
            setattr(self, which, gap <= tolerance)
            logger.info(
                "PPO: shared-prefix vs plain hidden states of the %s differ by %.1e (relative; tolerance %.0e): %s",
                "policy" if critic_backbone is None else "critic backbone", gap, tolerance,
                "sharing the prompt prefix" if gap <= tolerance else "not sharing it",
            )  # fmt: skip
            if gap > tolerance:
                return input_ids, attention_mask, nullcontext()
        prefix, ids, mask = split
        return ids, mask, prefix_cache.shared_prefix(backbone, prefix, ids.size(1))

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, *args, **kwargs):
        sampled = self._sampled
        serve = sampled is not None and self._serve_sampled
        if serve and not kwargs.get("compute_entropy") and self._policy_adapter_active(model):
            served = sampled.serve(input_ids[:, -logits_to_keep:], attention_mask[:, -logits_to_keep:])
            if served is not None:
                self._sampled = None  # one rollout, one use
                if self._sampled_trusted:
                    return served, None, None
                out = self._logps(model, input_ids, attention_mask, logits_to_keep, *args, **kwargs)
                self._sampled_trusted = self._agrees(out[0], served, attention_mask, SAMPLED_LOGP_TOLERANCE)
                return out
        return self._logps(model, input_ids, attention_mask, logits_to_keep, *args, **kwargs)

    def _logps(self, model, input_ids, attention_mask, logits_to_keep, *args, **kwargs):
        """GRPO's log-prob forward with the compact head, on the shared prompt prefix once when possible."""
        text_only = not args and all(v is None for k, v in kwargs.items() if k not in _PLAIN_KWARGS)
        ids, mask, shared = (input_ids, attention_mask, nullcontext())
        if text_only:
            ids, mask, shared = self._prefix_split(input_ids, attention_mask, logits_to_keep)
        record = self._ref_rows is not None and not self._policy_adapter_active(model)  # the rollout's reference
        with compact_fused_head(), shared, record_head_rows(self._ref_rows) if record else nullcontext():
            return super()._get_per_token_logps_and_entropies(model, ids, mask, logits_to_keep, *args, **kwargs)

    def _agrees(self, fast: torch.Tensor, reference: torch.Tensor, attention_mask, tolerance: float) -> bool:
        """Max |Δ| within ``tolerance``? Keeps ``(max |Δ|, mean |Δ|)`` over valid tokens as ``sampled_logp_gap``: how
        far the sampling pass's log-probs are from the training forward's (the sampler–learner mismatch)."""
        valid = attention_mask[:, -fast.size(1) :].bool()
        diff = (fast - reference)[valid].abs()
        gap = diff.max().item() if valid.any() else 0.0
        self.sampled_logp_gap = (gap, diff.mean().item() if valid.any() else 0.0)
        logger.info(
            "PPO: sampled vs recomputed old log-probs differ by up to %.1e nats (tolerance %.0e): %s", gap, tolerance,
            "using the sampled ones" if gap <= tolerance else "recomputing them every rollout",
        )  # fmt: skip
        return gap <= tolerance


# _get_per_token_logps_and_entropies keywords that do not carry images (anything else disables the prefix path).
_PLAIN_KWARGS = ("batch_size", "compute_entropy", "compute_aux_loss")
