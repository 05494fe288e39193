"""Reward-model scores of (prompt, response) pairs with any ``AutoModelForSequenceClassification`` reward model.

:class:`RewardModelScorer` is a callable in TRL's reward-function signature, ``scorer(prompts, completions) ->
list[float]``, so one object serves as the RL reward, the eval metric (:func:`score_summary`) and the scorer of
:class:`alignkit.eval.judges.RewardModelJudge`. Each pair is rendered with the RM tokenizer's chat template as
``prompt + [assistant: response]``, exactly as TRL's ``RewardTrainer`` renders conversational rows, and the score is
the head's logit at the last non-padding token (``num_labels == 1``).

A reward model is named by a checkpoint path, a hub id, or ``run:NAME`` for a reward run under ``runs/NAME``
(``run.json`` gives the base and the PEFT adapter, whose ``modules_to_save`` carries the trained score head).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from alignkit import prefix_cache as prefix
from alignkit.chat_format import Messages, Prompt, as_messages, completion_text
from alignkit.errors import AlignkitError
from alignkit.eval.stats import mean_std_ci
from alignkit.inference_precision import apply_precision, load_dtype
from alignkit.prefix_cache import shared_prefix_len
from alignkit.runs import read_finished_run, run_is_finished


class RewardModelScorer:
    """``scorer(prompts, completions) -> list[float]``: batched, right-padded, truncated from the left to
    ``max_length`` tokens (the end of the exchange carries the response being judged)."""

    def __init__(self, model: Any, tokenizer: Any, batch_size: int = 8, max_length: int = 1024, name: str = "rm"):
        if getattr(model.config, "num_labels", 1) != 1:
            raise AlignkitError(f"reward model '{name}': has num_labels={model.config.num_labels}; expected 1")
        if model.config.pad_token_id is None:  # the head pools at the last non-pad token, so it must know pad
            model.config.pad_token_id = tokenizer.pad_token_id
        self.model, self.tokenizer = model.eval(), tokenizer
        self.batch_size, self.max_length = batch_size, max_length
        self.__name__ = f"rm_score[{name}]"

    def render(self, prompt: Prompt, completion: str | Messages) -> list[int]:
        messages = as_messages(prompt) + [{"role": "assistant", "content": completion_text(completion)}]
        if getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template(messages, tokenize=False)
        else:
            text = "\n".join(m["content"] for m in messages)
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        return ids[-self.max_length :]

    def __call__(self, prompts: Sequence[Prompt], completions: Sequence[str | Messages], **_: Any) -> list[float]:
        import torch
        from tqdm.auto import tqdm

        if len(prompts) != len(completions):
            raise AlignkitError(f"{self.__name__}: {len(completions)} completions for {len(prompts)} prompts")
        rows = [self.render(p, c) for p, c in zip(prompts, completions, strict=True)]
        order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
        scores = [0.0] * len(rows)
        device = next(self.model.parameters()).device
        self.tokenizer.padding_side = "right"
        # The template's shared opening is run once (alignkit.prefix_cache); each row keeps its last token.
        n_prefix = shared_prefix_len(rows, min(map(len, rows)) - 1) if rows and prefix.supported(self.model) else 0
        prefix_kv = prefix.prefix_cache(self.model, rows[0][:n_prefix]) if n_prefix else None
        starts = range(0, len(order), self.batch_size)
        with torch.inference_mode():
            for start in tqdm(starts, desc=self.__name__, unit="batch", leave=False):
                idx = order[start : start + self.batch_size]
                tails = [rows[i][n_prefix:] for i in idx]
                batch = dict(self.tokenizer.pad({"input_ids": tails}, return_tensors="pt").to(device))
                if prefix_kv is not None:  # right padding: positions continue from the prefix without gaps
                    head_mask = torch.ones((len(idx), n_prefix), dtype=batch["attention_mask"].dtype, device=device)
                    batch["attention_mask"] = torch.cat([head_mask, batch["attention_mask"]], dim=1)
                    batch[prefix.cache_kwarg(self.model)] = prefix.expand(prefix_kv, len(idx))
                    batch["use_cache"] = True
                # the head pools at each row's last non-pad token of `input_ids`, i.e. of the tails
                logits = self.model(**batch).logits[:, 0].float()  # (batch,)
                for i, s in zip(idx, logits.tolist(), strict=True):
                    scores[i] = s
        return scores


def resolve_reward_model(ref: str, runs_root: str | Path = "runs") -> tuple[str, str | None] | None:
    """``(base_path, adapter_dir or None)`` for a reward model reference, or ``None`` when it is not available.

    ``run:NAME`` means ``<runs_root>/NAME``; a run that does not exist or has not finished is "not available" (the
    harness skips the metric with a note) rather than an error, because the RM recipe is optional.
    """
    if ref.startswith("run:"):
        run_dir = Path(runs_root) / ref[len("run:") :]
        if not run_is_finished(run_dir):
            return None
        meta = read_finished_run(run_dir)
        if meta.get("trainer") not in (None, "reward"):
            raise AlignkitError(
                f"reward_model '{ref}': {run_dir / 'run.json'} is a '{meta.get('trainer')}' run, not a reward run"
            )
        if meta.get("model_dir"):
            return str(run_dir / meta["model_dir"]), None
        adapter = meta.get("adapter_dir")
        return meta["base_model"], str(run_dir / adapter) if adapter else None
    from alignkit.models import resolve_model_path

    return resolve_model_path(ref), None


def load_reward_scorer(
    base: str,
    adapter: str | None = None,
    batch_size: int = 8,
    max_length: int = 1024,
    name: str = "rm",
    precision: str = "exact",
) -> RewardModelScorer:
    """Load a reward model (base checkpoint + optional PEFT adapter) as a :class:`RewardModelScorer`, its weights in
    ``precision`` (:func:`alignkit.inference_precision.apply_precision`: the fast precision on a CPU moves only the
    decoder's matmuls to bf16, since a whole-model bf16 cast erases small LoRA updates and shifted every score of the
    smol reward run by ~-0.16)."""
    import torch
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    from alignkit.models import load_tokenizer

    dtype = load_dtype(precision)
    tokenizer = load_tokenizer(adapter if adapter and (Path(adapter) / "tokenizer_config.json").exists() else base)
    verbosity = hf_logging.get_verbosity()
    if adapter is not None:  # the base lacks the score head, which the adapter brings: its "MISSING" report is noise
        hf_logging.set_verbosity_error()
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            base,
            num_labels=1,
            dtype=dtype,
            pad_token_id=tokenizer.pad_token_id,
            use_safetensors=True,
            trust_remote_code=False,
        )
    finally:
        hf_logging.set_verbosity(verbosity)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    model.to(device="cuda" if torch.cuda.is_available() else "cpu", dtype=dtype)
    apply_precision(model, precision)
    return RewardModelScorer(model, tokenizer, batch_size=batch_size, max_length=max_length, name=name)


def score_summary(scores: Sequence[float], n_resamples: int = 1000, seed: int = 0) -> dict[str, float]:
    """``{"n", "mean", "std", "ci_low", "ci_high"}``: the mean with a 95% percentile-bootstrap interval."""
    return mean_std_ci(scores, n_resamples=n_resamples, seed=seed)
