"""Length and repetition of the policy's own replies during preference training (DPO never samples on its own).

DPO can learn to prefer longer or loopier replies while its loss looks fine; the dataset's chosen/rejected lengths
cannot show that, only samples from the current policy can. :func:`policy_reply_stats` greedily continues the
prompts of a training batch with the current weights and measures the replies with the same n-gram repetition rate
the other trainers log (:func:`alignkit.plugins.penalties.ngram_repetition_rate`). Replies stop and are measured
as eval's are (:mod:`alignkit.stop_tokens`).

It does not share the chat template's prompt prefix (:mod:`alignkit.prefix_cache`), although the prompts do share
it (24 of ~38 tokens with SmolLM2's template): the saving is one prefill of (k - 1) x 24 tokens in a call that then
runs ``policy_sample_max_new_tokens`` (64) decode steps. At the default k = 2 prompts that is ~1 % of the call
after paying the prefix's own one-row forward; a quick check on SmolLM2-135M (1 thread, loaded cores) measured
shared/plain 0.86 at k = 2 and 1.06 at k = 8, i.e. noise. Not worth a second generation path inside a training
step.
"""

from __future__ import annotations

from typing import Any

import torch

from alignkit.plugins.common.repetition_penalty import ngram_repetition_rate
from alignkit.stop_tokens import reply_length, stop_token_ids

__all__ = ["left_padded_prompts", "policy_reply_stats"]


def left_padded_prompts(
    input_ids: torch.Tensor, completion_mask: torch.Tensor, pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The prompt part of right-padded (prompt + completion) rows, left-padded for generation.

    A row's prompt is every token before its first completion token (TRL's preference collator puts the prompt first
    and marks the completion in ``completion_mask``). Shapes: (B, T), (B, T) → ids (B, P), attention mask (B, P),
    P = the longest prompt.
    """
    starts = completion_mask.long().argmax(dim=1).tolist()  # first completion position of each row
    width = max(starts)
    ids = torch.full((len(starts), width), pad_id, dtype=input_ids.dtype, device=input_ids.device)
    mask = torch.zeros((len(starts), width), dtype=torch.long, device=input_ids.device)
    for row, start in enumerate(starts):
        if start:
            ids[row, width - start :] = input_ids[row, :start]
            mask[row, width - start :] = 1
    return ids, mask


@torch.no_grad()
def policy_reply_stats(
    model: torch.nn.Module,
    tokenizer: Any,
    input_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    max_new_tokens: int,
    ngram: int = 3,
) -> torch.Tensor:
    """Greedy replies of ``model`` to the prompts of these rows → (B, 2): reply length in tokens (before the first
    stop token) and its n-gram repetition rate.

    Greedy so that the statistic moves only when the policy does, not with sampling noise. The model is put in eval
    mode for the call (no dropout) and restored to its previous mode afterwards.
    """
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    stop_ids = stop_token_ids(tokenizer, model)
    ids, mask = left_padded_prompts(input_ids, completion_mask, pad_id)
    was_training = model.training
    model.eval()
    try:
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=stop_ids,
            pad_token_id=pad_id,
        )
    finally:
        model.train(was_training)
    replies = [row[: reply_length(row, stop_ids)[0]] for row in out[:, ids.size(1) :].tolist()]
    return torch.tensor([[len(r), ngram_repetition_rate(r, ngram)] for r in replies], dtype=torch.float32)
