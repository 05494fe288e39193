"""Generate once, score many times: batched chat generation with a JSONL cache.

Every metric that looks at responses (RM score, perplexity under a reference, diversity, win rate) reads the same
generations, so they are produced once per (model weights, prompt set, generation config) and cached as JSONL under
``cache_dir("generations")/<key>.jsonl``. The key is the SHA-256 of

* the model identity (:meth:`alignkit.eval.model_spec.ModelSpec.identity`: base path + weight file stamps + adapter
  content hash),
* the prompts (as chat messages),
* the full :class:`GenerationConfig` (batch size included: left padding changes fp rounding, so a greedy output may
  differ in rare near-ties between batch sizes, and the cache must never mix them).

Decoding is greedy by default. Sampling is seeded per batch from ``(seed, batch index)`` over a deterministic
(length-sorted) order, so the same inputs give the same outputs. We pass an explicit ``transformers.GenerationConfig``
rather than the checkpoint's ``generation_config.json``: instruct checkpoints ship sampling defaults (temperature,
top-k, repetition penalty) that would otherwise leak into an eval that claims to be greedy.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from alignkit import prefix_cache as prefix
from alignkit.cache import cache_dir
from alignkit.chat_format import Prompt, as_messages, prompt_text
from alignkit.errors import AlignkitError
from alignkit.eval.model_spec import ModelSpec, load_model
from alignkit.io import atomic_write_text
from alignkit.prefix_cache import shared_prefix_len
from alignkit.stop_tokens import reply_length, stop_token_ids

CACHE_VERSION = 2  # 2: shared-prefix prefill (same outputs up to fp rounding, see alignkit.prefix_cache)


@dataclass(frozen=True)
class GenerationConfig:
    """Decoding settings; every field is part of the cache key."""

    max_new_tokens: int = 128
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0
    batch_size: int = 16

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise AlignkitError(f"generation.max_new_tokens: must be >= 1, got {self.max_new_tokens}")
        if self.batch_size < 1:
            raise AlignkitError(f"generation.batch_size: must be >= 1, got {self.batch_size}")
        if self.do_sample and self.temperature <= 0:
            raise AlignkitError(f"generation.temperature: must be > 0 when sampling, got {self.temperature}")

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "generation") -> GenerationConfig:
        known = {f.name for f in fields(cls)}
        for key in data:
            if key not in known:
                raise AlignkitError(f"{source}: unknown generation key '{key}' (known: {', '.join(sorted(known))})")
        return cls(**data)


@dataclass
class Generations:
    """Responses for one prompt set, aligned with the prompts; ``n_tokens`` counts generated tokens before EOS."""

    responses: list[str]
    n_tokens: list[int]
    truncated: list[bool]  # hit max_new_tokens without an end-of-turn token
    cache_path: Path
    from_cache: bool = field(default=False)


def cache_key(spec: ModelSpec, prompts: Sequence[Prompt], config: GenerationConfig) -> str:
    payload = {
        "version": CACHE_VERSION,
        "model": spec.identity(),
        "prompts": [as_messages(p) for p in prompts],
        "config": asdict(config),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def _read_cache(path: Path, n: int) -> Generations | None:
    if not path.exists():
        return None
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = [r for r in rows if "meta" not in r]
    if len(rows) != n:  # cannot happen with atomic writes, unless someone edited the file: regenerate
        return None
    rows.sort(key=lambda r: r["index"])
    return Generations(
        responses=[r["response"] for r in rows],
        n_tokens=[r["n_tokens"] for r in rows],
        truncated=[r["truncated"] for r in rows],
        cache_path=path,
        from_cache=True,
    )


def generate(
    spec: ModelSpec,
    prompts: Sequence[Prompt],
    config: GenerationConfig = GenerationConfig(),
    use_cache: bool = True,
    model_fn: Callable[[], tuple[Any, Any]] | None = None,
    desc: str | None = None,
) -> Generations:
    """Responses of ``spec`` to ``prompts`` (strings or chat messages), from the cache when possible.

    Args:
        model_fn: returns ``(model, tokenizer)``; called only on a cache miss, so a harness can share one loaded
            model across prompt sets without loading it when everything is cached. Defaults to
            :func:`alignkit.eval.model_spec.load_model`.
        use_cache: ``False`` ignores an existing entry (the fresh result still replaces it).
    """
    if not prompts:
        raise AlignkitError(f"model '{spec.name}': the prompt set is empty; nothing to generate")
    key = cache_key(spec, prompts, config)
    path = cache_dir("generations") / f"{key}.jsonl"
    if use_cache:
        cached = _read_cache(path, len(prompts))
        if cached is not None:
            return cached
    model, tokenizer = (model_fn or (lambda: load_model(spec)))()
    responses, n_tokens, truncated = _run_generation(model, tokenizer, prompts, config, desc or spec.name)
    meta = {"meta": {"model": spec.name, "base": spec.base, "adapter": spec.adapter, "config": asdict(config)}}
    rows = [
        {"index": i, "prompt": as_messages(p), "response": r, "n_tokens": k, "truncated": t}
        for i, (p, r, k, t) in enumerate(zip(prompts, responses, n_tokens, truncated, strict=True))
    ]
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in [meta, *rows]))
    return Generations(responses, n_tokens, truncated, path, from_cache=False)


def _run_generation(
    model: Any, tokenizer: Any, prompts: Sequence[Prompt], config: GenerationConfig, desc: str
) -> tuple[list[str], list[int], list[bool]]:
    """Batched, left-padded generation; returns ``(responses, n_tokens, truncated)`` in the prompts' order."""
    import torch
    from tqdm.auto import tqdm
    from transformers import GenerationConfig as HFGenerationConfig

    tokenizer.padding_side = "left"  # decoder-only models continue from the last position of every row
    encoded = [tokenizer.encode(prompt_text(tokenizer, p), add_special_tokens=False) for p in prompts]
    # Longest first: similar lengths share a batch (less padding), and an out-of-memory shows up on batch one.
    order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
    stop = stop_token_ids(tokenizer, model)
    sampling = dict(temperature=config.temperature, top_p=config.top_p, top_k=config.top_k) if config.do_sample else {}
    hf_config = HFGenerationConfig(
        max_new_tokens=config.max_new_tokens,
        do_sample=config.do_sample,
        eos_token_id=stop,
        pad_token_id=tokenizer.pad_token_id,
        **sampling,
    )
    device = next(model.parameters()).device
    # The template's shared opening (system turn, user header) is prefilled once; each row keeps >= 1 own token.
    n_prefix = shared_prefix_len(encoded, min(map(len, encoded)) - 1) if prefix.supported(model) else 0
    prefix_kv = prefix.prefix_cache(model, encoded[0][:n_prefix]) if n_prefix else None
    # On a GPU one padded prefill beats many small forwards; on a CPU padding costs compute like real tokens.
    ragged = device.type == "cpu" and prefix.supported(model)
    out: dict[int, tuple[str, int, bool]] = {}
    bar = tqdm(total=len(prompts), desc=f"generate {desc}", unit="prompt", leave=False)
    with torch.inference_mode():
        for b, start in enumerate(range(0, len(order), config.batch_size)):
            idx = order[start : start + config.batch_size]
            batch = tokenizer.pad({"input_ids": [encoded[i][n_prefix:] for i in idx]}, return_tensors="pt").to(device)
            if prefix_kv is not None:  # [prefix | left padding | row]: generate skips the cached positions
                head = torch.tensor([encoded[idx[0]][:n_prefix]], device=device).expand(len(idx), -1)
                batch["input_ids"] = torch.cat([head, batch["input_ids"]], dim=1)
                batch["attention_mask"] = torch.cat([torch.ones_like(head), batch["attention_mask"]], dim=1)
            cache = None
            if ragged:  # CPU: prefill row by row, unpadded (see prefix.prefill_rows)
                tails = [encoded[i][n_prefix:] for i in idx]
                cache = prefix.prefill_rows(model, prefix_kv, n_prefix, tails, tokenizer.pad_token_id or 0)
            if cache is None and prefix_kv is not None:
                cache = prefix.expand(prefix_kv, len(idx))
            extra = {prefix.cache_kwarg(model): cache} if cache is not None else {}
            if config.do_sample:
                torch.manual_seed(config.seed * 100_003 + b)
            generated = model.generate(**batch, **extra, generation_config=hf_config)
            generated = generated[:, batch["input_ids"].shape[1] :]
            for row, i in zip(generated.tolist(), idx, strict=True):
                n, ended = reply_length(row, stop)
                text = tokenizer.decode(row[:n], skip_special_tokens=True).strip()
                out[i] = (text, n, not ended)
            bar.update(len(idx))
    bar.close()
    return (
        [out[i][0] for i in range(len(prompts))],
        [out[i][1] for i in range(len(prompts))],
        [out[i][2] for i in range(len(prompts))],
    )
