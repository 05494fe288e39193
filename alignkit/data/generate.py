"""Batched greedy chat generation, for building data from a model's own answers (preference pairs, baselines).

Greedy on purpose: the output depends only on the model and the prompt, not on a sampler state or on which prompts
share a batch, so a cached dataset is reproducible. Prompts are sorted by length before batching (less padding) and
results returned in the original order. Padding is on the left, so every row's generation starts right after its
own prompt.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from typing import Any

from alignkit.errors import AlignkitError


@dataclass
class GenerationStats:
    prompts: int
    seconds: float
    cpu_seconds: float  # process CPU time: on a shared machine, wall time / cpu time shows the contention
    new_tokens: int
    hit_max_new_tokens: int  # replies cut at max_new_tokens without an end-of-turn token
    batch_size: int
    max_new_tokens: int
    torch_threads: int

    @property
    def prompts_per_second(self) -> float:
        return self.prompts / self.seconds if self.seconds else 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "prompts_per_second": round(self.prompts_per_second, 3),
            "tokens_per_second": round(self.tokens_per_second, 1),
        }


def generate_replies(
    model_path: str | os.PathLike,
    conversations: list[list[dict[str, str]]],
    *,
    batch_size: int = 16,
    max_new_tokens: int = 128,
    desc: str = "generating",
) -> tuple[list[str], GenerationStats]:
    """Greedy assistant replies to ``conversations`` (each a list of ``{role, content}``), with a tqdm bar.

    The model is loaded in fp32 on the CPU (or the first GPU when present)."""
    import torch
    from tqdm.auto import tqdm
    from transformers import AutoModelForCausalLM, GenerationConfig

    from alignkit.models import load_tokenizer
    from alignkit.stop_tokens import reply_length, stop_token_ids

    if batch_size < 1 or max_new_tokens < 1:
        raise AlignkitError(f"batch_size and max_new_tokens must be >= 1, got {batch_size} and {max_new_tokens}")
    tokenizer = load_tokenizer(str(model_path), padding_side="left")
    if tokenizer.chat_template is None:
        raise AlignkitError(f"model {model_path}: tokenizer has no chat template; conversational data needs one")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModelForCausalLM.from_pretrained(str(model_path), dtype=torch.float32, trust_remote_code=False)
    model = model.to(device).eval()
    stop = stop_token_ids(tokenizer, model)  # every end-of-turn id, as the eval generates (Qwen has two)
    # An explicit config: the checkpoint's generation_config may carry sampling defaults we do not want.
    config = GenerationConfig(
        do_sample=False,
        max_new_tokens=max_new_tokens,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=stop,
    )
    texts = [tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in conversations]
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    replies: list[str] = [""] * len(texts)
    new_tokens = hit_max = 0
    start, cpu_start = time.perf_counter(), time.process_time()
    with torch.inference_mode(), tqdm(total=len(texts), desc=desc, unit="prompt") as bar:
        for first in range(0, len(order), batch_size):
            idx = order[first : first + batch_size]
            batch = tokenizer([texts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False)
            out = model.generate(**batch.to(device), generation_config=config)
            generated = out[:, batch["input_ids"].shape[1] :]
            for row, i in zip(generated.tolist(), idx, strict=True):
                length, ended = reply_length(row, stop)
                hit_max += int(not ended)
                new_tokens += length
                replies[i] = tokenizer.decode(row[:length], skip_special_tokens=True).strip()
            bar.update(len(idx))
    stats = GenerationStats(
        prompts=len(texts),
        seconds=round(time.perf_counter() - start, 2),
        cpu_seconds=round(time.process_time() - cpu_start, 2),
        new_tokens=new_tokens,
        hit_max_new_tokens=hit_max,
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        torch_threads=torch.get_num_threads(),
    )
    return replies, stats
