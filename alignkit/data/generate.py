"""Greedy chat replies of a checkpoint, for building data from a model's own answers (preference pairs, baselines).

Greedy on purpose: the output depends only on the model and the prompt, not on a sampler state, so a cached dataset
is reproducible. The replies come from the eval's generation (:func:`alignkit.eval.generation.generate`: the decode
engine of :mod:`alignkit.decoding`, where finished rows leave the batch, with the shared prompt prefix computed
once), in fp32: one way to generate in alignkit, and the same replies as ``model.generate`` up to fp rounding.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
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
    batch_size: int = 64,
    max_new_tokens: int = 128,
    desc: str = "generating",
    precision: str = "exact",
) -> tuple[list[str], GenerationStats]:
    """Greedy assistant replies to ``conversations`` (each a list of ``{role, content}``), with a progress bar.

    ``batch_size`` is the number of rows decoded together. ``precision``: ``exact`` loads the model in fp32;
    ``fast`` runs the decoder's matmuls in bf16 where the CPU has native bf16
    (:func:`alignkit.inference_precision.bf16_matmuls`)."""
    import torch

    from alignkit.eval.generation import GenerationConfig, generate
    from alignkit.eval.model_spec import ModelSpec

    if batch_size < 1 or max_new_tokens < 1:
        raise AlignkitError(f"batch_size and max_new_tokens must be >= 1, got {batch_size} and {max_new_tokens}")
    spec = ModelSpec(name=Path(model_path).name, base=str(model_path)).with_precision(precision)
    config = GenerationConfig(do_sample=False, max_new_tokens=max_new_tokens, batch_size=batch_size)
    start, cpu_start = time.perf_counter(), time.process_time()
    out = generate(spec, conversations, config, desc=desc)
    stats = GenerationStats(
        prompts=len(conversations),
        seconds=round(time.perf_counter() - start, 2),
        cpu_seconds=round(time.process_time() - cpu_start, 2),
        new_tokens=sum(out.n_tokens),
        hit_max_new_tokens=sum(out.truncated),
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        torch_threads=torch.get_num_threads(),
    )
    return out.responses, stats
