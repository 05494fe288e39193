"""Cheaper log-probs for :class:`alignkit.plugins.ppo.ppo_trainer.PPOTrainer` (measured in bench/results/ppo_peer.md);
wired in by :class:`alignkit.plugins.ppo.ppo_forward.ForwardEconomies`.

1. **Compact LM head on the CPU.** TRL 1.16's fused LM head scores only the labelled positions on Triton devices but
   every position elsewhere, because on XLA-like devices a changing number of positions recompiles. Eager CPU has no
   such cost, and in PPO the prompt is most of the sequence (47 of 63 tokens in the peer bench), so projecting it
   through the (vocab × hidden) head and folding its softmax is wasted work, forward and backward.
   :func:`compact_fused_head` (now shared with SFT and DPO in :mod:`alignkit.plugins.common.fast_path`, re-exported
   here) runs TRL's own compact path on the CPU too. Per-token results are unchanged.
2. **π_old from the sampling pass.** Sampling already computes the policy's next-token logits at every completion
   position; :class:`SampledLogProbs` keeps log softmax(logits / T) of each sampled token, so the rollout does not need
   a second policy forward for the old log-probs. The loss still uses TRL's forward, whose numerics can differ from
   cached-attention sampling (autocast, position ids of absolute-position models). So the first rollout computes both
   and the sampled values are used from then on only if every valid token agrees within ``SAMPLED_LOGP_TOLERANCE``;
   otherwise π_old is recomputed, as before.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from alignkit.plugins.common.fast_path import compact_fused_head

__all__ = ["SampledLogProbs", "compact_fused_head"]


class SampledLogProbs:
    """Collects log π(y_t | y_<t) of the sampled tokens during one ``generate`` call of ``model``.

    A forward hook on the causal LM reads the last position's logits of every call and keeps
    ``pending = log_softmax(logits / T)`` (B, V); the next decode call's single input token (B, 1) is the token that
    was sampled from it. The last token is read from the returned sequences. Memory is one (B, V) table, not the
    (B, C, V) scores. ``logps`` is (B, C) for the C generated positions (padding after EOS included, as generated), or
    None when the calls did not follow prefill → one-token decode steps (e.g. assisted decoding, vLLM, tool loops).
    With ``top_k`` it also keeps ``top``: each position's k likeliest tokens and their log-probs, (B, C, k) each,
    which :mod:`alignkit.plugins.ppo.ppo_analytic_kl` needs for the KL over the next-token distributions.
    """

    def __init__(self, temperature: float, top_k: int = 0):
        self.temperature = temperature
        self.top_k = top_k  # > 0: also keep each position's k likeliest tokens (``top``), for the analytic KL
        self.logps: torch.Tensor | None = None
        self.completion_ids: torch.Tensor | None = None
        self.top: tuple[torch.Tensor, torch.Tensor] | None = None  # (B, C, k) log-probs and token ids
        self._steps: list[torch.Tensor] = []
        self._top_steps: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._pending: torch.Tensor | None = None
        self._valid = True
        self._decoding = False
        self._generate_calls = 0

    def _hook(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        logits = getattr(output, "logits", None)
        if ids is None or logits is None:
            self._valid = False
            return
        if ids.size(1) == 1 and self._pending is not None:
            self._steps.append(self._pending.gather(1, ids.to(self._pending.device)).squeeze(1))
            self._decoding = True
        elif self._decoding:  # several new tokens after decoding started: not plain sampling
            self._valid = False
        self._pending = torch.log_softmax(logits[:, -1].float() / self.temperature, dim=-1)
        if self.top_k:
            self._top_steps.append(self._pending.topk(min(self.top_k, self._pending.size(-1)), dim=-1))

    @contextmanager
    def capture(self, generating_model: nn.Module, causal_lm: nn.Module) -> Iterator[SampledLogProbs]:
        """Wrap ``generating_model.generate``; each call hooks ``causal_lm`` (whose forward generate steps) while
        it runs. More than one generate call in the block (e.g. tool loops) invalidates the capture."""
        original_generate = generating_model.generate
        had_attribute = "generate" in vars(generating_model)

        def generate(*args: Any, **kwargs: Any) -> Any:
            self._generate_calls += 1
            handle = causal_lm.register_forward_hook(self._hook, with_kwargs=True)
            try:
                out = original_generate(*args, **kwargs)
            finally:
                handle.remove()
            self._finish(out, kwargs["input_ids"] if "input_ids" in kwargs else args[0])
            return out

        generating_model.generate = generate
        try:
            yield self
        finally:
            if had_attribute:
                generating_model.generate = original_generate
            else:
                del generating_model.generate  # back to the class's method

    def _finish(self, out: Any, prompt_ids: torch.Tensor) -> None:
        sequences = out if isinstance(out, torch.Tensor) else getattr(out, "sequences", None)
        if sequences is None or self._pending is None or self._generate_calls > 1:
            self._valid = False
        else:
            width = sequences.size(1) - prompt_ids.size(1)
            last = self._pending.gather(1, sequences[:, -1:].to(self._pending.device)).squeeze(1)
            steps = torch.stack([*self._steps, last], dim=1)
            # With deferred stop checks generate may run (and then undo) extra steps: keep the first `width`.
            self._valid &= steps.size(1) >= width
            self.logps, self.completion_ids = steps[:, :width], sequences[:, prompt_ids.size(1) :]
            if self.top_k and len(self._top_steps) >= width:
                self.top = tuple(torch.stack(t[:width], dim=1) for t in zip(*self._top_steps, strict=True))
        self._pending, self._steps, self._top_steps = None, [], []

    def serve_top(self, completion_ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(B, C', k) top-k log-probs and ids aligned to the trainer's ``completion_ids`` (zeros on padding), or None
        if they were not kept or the sampled tokens differ (see :meth:`serve`)."""
        if self.top is None or self.serve(completion_ids, mask) is None:
            return None
        width, valid = completion_ids.size(1), mask.bool().unsqueeze(-1)
        logps, ids = (t[:, :width].to(completion_ids.device) for t in self.top)
        if logps.size(1) < width:
            pad = (0, 0, 0, width - logps.size(1))
            logps, ids = nn.functional.pad(logps, pad), nn.functional.pad(ids, pad)
        return logps.masked_fill(~valid, 0.0), ids.masked_fill(~valid, 0)

    def serve(self, completion_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor | None:
        """(B, C') log-probs aligned to the trainer's (B, C') padded ``completion_ids``, or None if they differ."""
        if not self._valid or self.logps is None or self.logps.size(0) != completion_ids.size(0):
            return None
        width = completion_ids.size(1)
        logps = self.logps[:, :width].to(completion_ids.device)
        ids = self.completion_ids[:, :width].to(completion_ids.device)
        if logps.size(1) < width:  # the trainer padded further (pad_to_multiple_of)
            pad = width - logps.size(1)
            logps, ids = nn.functional.pad(logps, (0, pad)), nn.functional.pad(ids, (0, pad))
        valid = mask.bool()
        if not torch.equal(ids[valid], completion_ids[valid]):
            return None
        return logps.masked_fill(~valid, 0.0)
