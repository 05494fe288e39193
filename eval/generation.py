"""Generate once, score many times: batched chat generation with a JSONL cache.

Every metric that looks at responses (RM score, perplexity under a reference, diversity, win rate) reads the same
generations, so they are produced once per (model weights, prompt set, generation config) and cached as JSONL under
``cache_dir("generations")/<key>.jsonl``. The key is the SHA-256 of

* the model identity (:meth:`alignkit.eval.model_spec.ModelSpec.identity`: base path + weight file stamps + adapter
  content hash),
* the prompts (as chat messages),
* the full :class:`GenerationConfig` (batch size included: left padding changes fp rounding, so a greedy output may
  differ in rare near-ties between batch sizes, and the cache must never mix them).

Decoding runs in the decode engine (:mod:`alignkit.decoding`: preallocated KV cache, finished rows leave the batch and
waiting rows take their place, exact top-p without a full sort). It is greedy by default, and token-identical to
``model.generate`` up to fp rounding. Sampling draws from one stream per prompt, seeded from ``(seed, prompt index)``,
so the same inputs give the same outputs whatever the batch. Models the engine does not support
(:func:`alignkit.decoding.supported`: sliding-window or hybrid caches, prompt-learning adapters) fall back to
``model.generate`` with an explicit ``transformers.GenerationConfig`` (sampling there is seeded per batch from
``(seed, batch index)``). Never the checkpoint's ``generation_config.json``: instruct checkpoints ship sampling
defaults (temperature, top-k, repetition penalty) that would otherwise leak into an eval that claims to be greedy.

``stop_loops`` (off by default) stops a greedy reply once it ends in a repeated cycle
(:func:`alignkit.stop_tokens.loop_stop_length`) and marks it ``looping``. ``generate(..., return_logprobs=True)``
also returns each generated token's id and log-probability under the model's raw distribution (a DPO pair builder
can reuse them as reference log-probs); they are stored in the cache only when asked for, and are not part of the key
(the tokens do not depend on them).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, NamedTuple

from alignkit import prefix_cache as prefix
from alignkit.cache import cache_dir
from alignkit.chat_format import Prompt, as_messages, prompt_text
from alignkit.errors import AlignkitError
from alignkit.eval.model_spec import ModelSpec, load_model
from alignkit.io import atomic_write_text
from alignkit.prefix_cache import shared_prefix_len
from alignkit.stop_tokens import loop_stop_length, reply_length, stop_token_ids

logger = logging.getLogger(__name__)

# 2: shared-prefix prefill (same outputs up to fp rounding, see alignkit.prefix_cache)
# 3: decode engine (alignkit.decoding): per-prompt sampling streams, stop_loops, looping / log-probs in the rows
CACHE_VERSION = 3


@dataclass(frozen=True)
class GenerationConfig:
    """Decoding settings; every field is part of the cache key."""

    max_new_tokens: int = 128
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = field(default=0, metadata={"min": 0})  # 0 = off; "min": a suite may give 0 (eval/suite.py)
    seed: int = field(default=0, metadata={"min": 0})
    batch_size: int = 16
    stop_loops: bool = False  # greedy only: stop a reply that ends in a repeated cycle, marked `looping`

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise AlignkitError(f"generation.max_new_tokens: must be >= 1, got {self.max_new_tokens}")
        if self.batch_size < 1:
            raise AlignkitError(f"generation.batch_size: must be >= 1, got {self.batch_size}")
        if self.do_sample and self.temperature <= 0:
            raise AlignkitError(f"generation.temperature: must be > 0 when sampling, got {self.temperature}")
        if self.do_sample and not 0 < self.top_p <= 1:
            raise AlignkitError(f"generation.top_p: must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise AlignkitError(f"generation.top_k: must be >= 0 (0 = off), got {self.top_k}")
        if self.stop_loops and self.do_sample:
            raise AlignkitError("generation.stop_loops: greedy decoding only (do_sample: false); samples leave loops")

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "generation") -> GenerationConfig:
        known = {f.name for f in fields(cls)}
        for key in data:
            if key not in known:
                raise AlignkitError(f"{source}: unknown generation key '{key}' (known: {', '.join(sorted(known))})")
        return cls(**data)


@dataclass
class Generations:
    """Responses for one prompt set, aligned with the prompts; ``n_tokens`` counts generated tokens before EOS.

    ``token_ids`` and ``logprobs`` (only with ``return_logprobs=True``): every generated id, the end-of-turn id
    included when the reply has one, and its log-probability under the model's raw (untempered) distribution.
    """

    responses: list[str]
    n_tokens: list[int]
    truncated: list[bool]  # no end-of-turn token: cut at max_new_tokens, or by the loop stop
    looping: list[bool]  # cut by the loop stop (generation.stop_loops); always False without it
    cache_path: Path
    from_cache: bool = field(default=False)
    token_ids: list[list[int]] | None = None
    logprobs: list[list[float]] | None = None


class Decoded(NamedTuple):
    """What :func:`_run_generation` returns, in the prompts' order."""

    responses: list[str]
    n_tokens: list[int]
    truncated: list[bool]
    looping: list[bool]
    token_ids: list[list[int]]
    logprobs: list[list[float]] | None


def cache_key(spec: ModelSpec, prompts: Sequence[Prompt], config: GenerationConfig) -> str:
    payload = {
        "version": CACHE_VERSION,
        "model": spec.identity(),
        "prompts": [as_messages(p) for p in prompts],
        "config": asdict(config),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def _rows_digest(lines: list[str]) -> str:
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


def _read_cache(path: Path, n: int, need_logprobs: bool = False) -> Generations | None:
    """The cached generations, or ``None`` (regenerate): a missing entry silently, a corrupt one (unparseable,
    wrong row count, checksum of the rows differs from the one in its meta line) with a one-line warning."""
    if not path.exists():
        return None
    try:
        # split on "\n" only: a reply may hold U+2028 and the like, which splitlines() would also split on
        lines = [line for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]
        parsed = [json.loads(line) for line in lines]
        meta = next((r["meta"] for r in parsed if "meta" in r), {})
        body = [line for line, r in zip(lines, parsed, strict=True) if "meta" not in r]
        rows = [r for r in parsed if "meta" not in r]
        problem = None
        if len(rows) != n:
            problem = f"{len(rows)} rows, {n} prompts"
        elif meta.get("rows_sha256") not in (None, _rows_digest(body)):  # entries written before checksums: None
            problem = "its rows do not match their checksum"
    except (UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        problem = f"unreadable: {type(exc).__name__}"
    if problem is not None:
        logger.warning("generation cache %s is corrupt (%s); regenerating", path, problem)
        return None
    if need_logprobs and not all("logprobs" in r for r in rows):  # stored without them: regenerate with them
        return None
    rows.sort(key=lambda r: r["index"])
    stored = all("logprobs" in r for r in rows)
    return Generations(
        responses=[r["response"] for r in rows],
        n_tokens=[r["n_tokens"] for r in rows],
        truncated=[r["truncated"] for r in rows],
        looping=[r["looping"] for r in rows],
        cache_path=path,
        from_cache=True,
        token_ids=[r["token_ids"] for r in rows] if stored else None,
        logprobs=[r["logprobs"] for r in rows] if stored else None,
    )


def generate(
    spec: ModelSpec,
    prompts: Sequence[Prompt],
    config: GenerationConfig = GenerationConfig(),
    use_cache: bool = True,
    model_fn: Callable[[], tuple[Any, Any]] | None = None,
    desc: str | None = None,
    return_logprobs: bool = False,
) -> Generations:
    """Responses of ``spec`` to ``prompts`` (strings or chat messages), from the cache when possible.

    Args:
        model_fn: returns ``(model, tokenizer)``; called only on a cache miss, so a harness can share one loaded
            model across prompt sets without loading it when everything is cached. Defaults to
            :func:`alignkit.eval.model_spec.load_model`.
        use_cache: ``False`` ignores an existing entry (the fresh result still replaces it).
        return_logprobs: also fill ``token_ids`` and ``logprobs`` (and store them); a cached entry without them is
            regenerated.
    """
    if not prompts:
        raise AlignkitError(f"model '{spec.name}': the prompt set is empty; nothing to generate")
    key = cache_key(spec, prompts, config)
    path = cache_dir("generations") / f"{key}.jsonl"
    if use_cache:
        cached = _read_cache(path, len(prompts), return_logprobs)
        if cached is not None:
            return cached
    model, tokenizer = (model_fn or (lambda: load_model(spec)))()
    run = _run_generation(model, tokenizer, prompts, config, desc or spec.name, return_logprobs=return_logprobs)
    lines = []
    for i, p in enumerate(prompts):
        row = {"index": i, "prompt": as_messages(p), "response": run.responses[i], "n_tokens": run.n_tokens[i]}
        row.update(truncated=run.truncated[i], looping=run.looping[i])
        if return_logprobs:
            row.update(token_ids=run.token_ids[i], logprobs=run.logprobs[i])
        lines.append(json.dumps(row, ensure_ascii=False))
    meta = {"model": spec.name, "base": spec.base, "adapter": spec.adapter, "config": asdict(config)}
    meta["rows_sha256"] = _rows_digest(lines)
    atomic_write_text(path, "".join(line + "\n" for line in [json.dumps({"meta": meta}, ensure_ascii=False), *lines]))
    return Generations(
        run.responses,
        run.n_tokens,
        run.truncated,
        run.looping,
        path,
        from_cache=False,
        token_ids=run.token_ids if return_logprobs else None,
        logprobs=run.logprobs if return_logprobs else None,
    )


def generate_with_model(
    model: Any, tokenizer: Any, prompts: Sequence[Prompt], config: GenerationConfig = GenerationConfig(), desc="policy"
) -> Decoded:
    """Replies of an already loaded ``model`` to ``prompts``, uncached: the path :func:`generate` takes on a cache
    miss (decode engine with the shared prompt prefix, else ``model.generate``), for weights that change under the
    caller, e.g. a policy during training (:mod:`alignkit.eval.winrate_callback`).

    The model is put in eval mode for the call (dropout off) and restored; the tokenizer's padding side too."""
    was_training, padding_side = model.training, tokenizer.padding_side
    model.eval()
    try:
        return _run_generation(model, tokenizer, prompts, config, desc)
    finally:
        model.train(was_training)
        tokenizer.padding_side = padding_side


def _run_generation(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Prompt],
    config: GenerationConfig,
    desc: str,
    return_logprobs: bool = False,
) -> Decoded:
    """Generation for ``prompts`` in their order: the decode engine when it supports ``model``, else
    ``model.generate`` (:func:`_generate_with_hf`)."""
    from tqdm.auto import tqdm

    from alignkit import decoding

    encoded = [tokenizer.encode(prompt_text(tokenizer, p), add_special_tokens=False) for p in prompts]
    stop = stop_token_ids(tokenizer, model)
    bar = tqdm(total=len(prompts), desc=f"generate {desc}", unit="prompt", leave=False)
    try:
        if decoding.supported(model):
            sampler = decoding.Sampler(config.do_sample, config.temperature, config.top_p, config.top_k, config.seed)
            out = decoding.decode(
                model,
                encoded,
                config.max_new_tokens,
                stop,
                slots=config.batch_size,
                sampler=sampler,
                stop_loops=config.stop_loops,
                return_logprobs=return_logprobs,
                pad_id=tokenizer.pad_token_id or 0,
                on_done=bar.update,
            )
            rows, logprobs, looping, cut_after = out.tokens, out.logprobs, out.looping, False
        else:
            rows, logprobs = _generate_with_hf(model, tokenizer, encoded, config, stop, return_logprobs, bar.update)
            looping, cut_after = [False] * len(rows), config.stop_loops
    finally:
        bar.close()
    responses, n_tokens, truncated, token_ids = [], [], [], []
    for i, row in enumerate(rows):
        n, ended = reply_length(row, stop)
        cut = loop_stop_length(row[:n]) if cut_after else None
        if cut is not None:  # model.generate ran on past the loop; the engine would have stopped here
            n, ended, looping[i] = cut, False, True
        responses.append(tokenizer.decode(row[:n], skip_special_tokens=True).strip())
        n_tokens.append(n)
        truncated.append(not ended)
        token_ids.append(list(row[: n + ended]))
        if logprobs is not None:
            logprobs[i] = logprobs[i][: n + ended]
    return Decoded(responses, n_tokens, truncated, looping, token_ids, logprobs)


def _generate_with_hf(
    model: Any,
    tokenizer: Any,
    encoded: Sequence[Sequence[int]],
    config: GenerationConfig,
    stop: Sequence[int],
    return_logprobs: bool = False,
    on_done: Callable[[int], None] | None = None,
) -> tuple[list[list[int]], list[list[float]] | None]:
    """``model.generate`` in left-padded batches of ``config.batch_size``, longest prompts first, with the shared
    chat-template prefix prefilled once (and, on a CPU, the rows prefilled unpadded: :func:`prefix.prefill_rows`).

    Returns every row's generated ids (padding after the end-of-turn id included) and, if asked, their raw
    log-probs. The path for models the decode engine does not support, and the baseline of
    ``bench/generation_speed.py``.
    """
    import torch
    from transformers import GenerationConfig as HFGenerationConfig

    tokenizer.padding_side = "left"  # decoder-only models continue from the last position of every row
    # Longest first: similar lengths share a batch (less padding), and an out-of-memory shows up on batch one.
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
    sampling = dict(temperature=config.temperature, top_p=config.top_p, top_k=config.top_k) if config.do_sample else {}
    hf_config = HFGenerationConfig(
        max_new_tokens=config.max_new_tokens,
        do_sample=config.do_sample,
        eos_token_id=list(stop),
        pad_token_id=tokenizer.pad_token_id,
        return_dict_in_generate=True,
        output_logits=return_logprobs,
        **sampling,
    )
    device = next(model.parameters()).device
    # The template's shared opening (system turn, user header) is prefilled once; each row keeps >= 1 own token.
    n_prefix = shared_prefix_len(encoded, min(map(len, encoded)) - 1) if prefix.supported(model) else 0
    prefix_kv = prefix.prefix_cache(model, encoded[0][:n_prefix]) if n_prefix else None
    # On a GPU one padded prefill beats many small forwards; on a CPU padding costs compute like real tokens.
    ragged = device.type == "cpu" and prefix.supported(model)
    rows: dict[int, list[int]] = {}
    logprobs: dict[int, list[float]] = {}
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
            out = model.generate(**batch, **extra, generation_config=hf_config)
            generated = out.sequences[:, batch["input_ids"].shape[1] :]
            if return_logprobs:  # raw logits of every step, (rows, steps, vocab) -> log p of the chosen ids
                logits = torch.stack(out.logits, dim=1).float()
                chosen = torch.log_softmax(logits, -1).gather(2, generated[:, :, None]).squeeze(2)
            for j, i in enumerate(idx):
                rows[i] = generated[j].tolist()
                if return_logprobs:
                    logprobs[i] = chosen[j].tolist()
            if on_done is not None:
                on_done(len(idx))
    ordered = [rows[i] for i in range(len(encoded))]
    return ordered, ([logprobs[i] for i in range(len(encoded))] if return_logprobs else None)
