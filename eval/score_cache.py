"""Per-row scores kept on disk by the scoring model's identity, so a second eval of the same models recomputes nothing.

Where it pays: ``make pipeline`` compares every method against the base and then against SFT, the same models on the
same prompts; ``make eval`` after ``make``; a rerun after a report was deleted. The generations were already cached
(:mod:`alignkit.eval.generation`); this caches what the scoring passes compute from them:

- ``nll``: the summed completion NLL and token count of one (prompt, completion) row under a causal LM
  (:func:`alignkit.eval.perplexity.completion_nlls`), behind the held-out perplexity, the response perplexity under
  the reference and the preference log-probs (:func:`cached_completion_nlls`);
- ``reward``: a reward model's scalar score of a row (:class:`StoredScorer`), behind ``rm_score`` and the rm judge.

Key: the kind, the scorer's identity (:meth:`alignkit.eval.model_spec.ModelSpec.identity`: base path and weight-file
stamps, adapter content hash, and for the fast precision its dtype and numerics version) and every setting that
changes a number (``max_length``, ``stride``, ``batch_size``: the batch composition changes padding, hence fp
rounding). Rows are keyed by a hash of the prompt (as messages) and the completion. Only the missing rows are
computed, in one batched pass, and the model is loaded only then. A row's value can depend on the rows scored beside
it (padding, and the shared prompt prefix computed once per call), by fp rounding in the exact precision and by bf16
rounding in the fast one: on the pipeline's comparison against SFT (below) every perplexity, preference and chat RM
number was identical with and without stored scores, and the arithmetic set's RM means (short, near-identical rows)
moved by at most 0.038 of their 95% CI half-width.

Measured (2026-12-03, AMD EPYC, 2 threads, the finished runs of the 06:30 ``make pipeline``, generations cached):
the vs-SFT comparison (the second ``alignkit eval`` of :func:`alignkit.stages.eval_commands`) took 259.0 s with
``$ALIGNKIT_CACHE/scores`` empty, and 40.9 s run again after the vs-base comparison (257.4 s) had stored the scores.

``use_cache=False`` (``alignkit eval --no-cache``) recomputes every row and stores the fresh values; so does
``ALIGNKIT_SCORE_CACHE=0``, for benches that time the scoring passes (bench/eval_precision.py) while reusing the
generations.

Files: ``cache_dir("scores")/<kind>-<key>.json``, ``{"meta": {...}, "rows": {row hash: value}}``, merged with what is
on disk and written atomically; an unreadable file is ignored with a warning and rewritten.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from alignkit.cache import cache_dir
from alignkit.chat_format import as_messages
from alignkit.io import atomic_write_json

logger = logging.getLogger(__name__)
VERSION = 1


def row_key(prompt: Any, completion: Any) -> str:
    text = json.dumps([as_messages(prompt), completion], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


class ScoreStore:
    """The stored rows of one scorer (``kind``, ``identity``, ``settings``)."""

    def __init__(self, kind: str, identity: dict[str, Any], settings: dict[str, Any]):
        self.meta = {"version": VERSION, "kind": kind, "identity": identity, "settings": settings}
        key = hashlib.sha256(json.dumps(self.meta, sort_keys=True, default=str).encode()).hexdigest()[:32]
        self.path = cache_dir("scores") / f"{kind}-{key}.json"

    def _read(self) -> dict[str, Any]:
        if not self.path.exists():
            return {}
        try:
            rows = json.loads(self.path.read_text(encoding="utf-8"))["rows"]
            if not isinstance(rows, dict):
                raise TypeError("rows is not a mapping")
            return rows
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("score cache %s is unreadable (%s); recomputing it", self.path, exc)
            return {}

    def lookup(
        self, prompts: Sequence[Any], completions: Sequence[Any], compute: Callable[[list[int]], list[Any]], reuse=True
    ) -> list[Any]:
        """The value of every row: stored ones as stored, the others from ``compute(indices)`` (one call, unique
        rows only), then stored."""
        keys = [row_key(p, c) for p, c in zip(prompts, completions, strict=True)]
        reuse = reuse and os.environ.get("ALIGNKIT_SCORE_CACHE", "1") != "0"
        rows = self._read() if reuse else {}
        todo: dict[str, int] = {}
        for i, k in enumerate(keys):
            if k not in rows and k not in todo:
                todo[k] = i
        if todo:
            values = compute(list(todo.values()))
            fresh = dict(zip(todo, values, strict=True))
            merged = {**self._read(), **fresh}  # another process may have added rows meanwhile
            atomic_write_json(self.path, {"meta": self.meta, "rows": merged})
            rows = {**rows, **fresh}
        return [rows[k] for k in keys]


def cached_completion_nlls(
    spec: Any,
    model_fn: Callable[[], tuple[Any, Any]],
    prompts: Sequence[Any],
    completions: Sequence[Any],
    max_length: int = 1024,
    stride: int | None = None,
    batch_size: int = 8,
    desc: str = "score completions",
    use_cache: bool = True,
    disable_adapter: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`alignkit.eval.perplexity.completion_nlls` of the rows under ``spec``'s model, stored rows reused.

    ``model_fn()`` loads ``(model, tokenizer)``; it is called only when some row is missing. ``disable_adapter``:
    score with the PEFT adapter switched off (TRL's implicit reference); ``spec`` must then name that reference."""
    from contextlib import nullcontext

    from alignkit.eval.perplexity import completion_nlls

    def compute(idx: list[int]) -> list[list[float]]:
        model, tokenizer = model_fn()
        with model.disable_adapter() if disable_adapter else nullcontext():
            nll, count = completion_nlls(
                model,
                tokenizer,
                [prompts[i] for i in idx],
                [completions[i] for i in idx],
                max_length,
                stride,
                batch_size,
                desc,
            )
        return [[float(a), int(b)] for a, b in zip(nll, count, strict=True)]

    settings = {"max_length": max_length, "stride": stride, "batch_size": batch_size}
    store = ScoreStore("nll", spec.identity(), settings)
    values = store.lookup(prompts, completions, compute, reuse=use_cache)
    return np.array([v[0] for v in values], dtype=float), np.array([v[1] for v in values], dtype=np.int64)


class StoredScorer:
    """A reward scorer ``(prompts, completions) -> scores`` whose rows are stored; the reward model is loaded (by
    ``load()``) only for rows not stored yet."""

    def __init__(self, load: Callable[[], Callable[..., list[float]]], store: ScoreStore, use_cache: bool = True):
        self.load, self.store, self.use_cache, self.scorer = load, store, use_cache, None
        self.__name__ = "stored_scorer"

    def __call__(self, prompts: list[Any], completions: list[str]) -> list[float]:
        def compute(idx: list[int]) -> list[float]:
            if self.scorer is None:
                self.scorer = self.load()
            return [float(s) for s in self.scorer([prompts[i] for i in idx], [completions[i] for i in idx])]

        return self.store.lookup(prompts, completions, compute, reuse=self.use_cache)


def reward_scorer(
    resolved: tuple[str, str | None],
    name: str,
    precision: str,
    batch_size: int = 8,
    max_length: int = 1024,
    use_cache: bool = True,
) -> StoredScorer:
    """The reward model ``resolved`` = (base, adapter) as a :class:`StoredScorer` (see
    :func:`alignkit.eval.rm_score.load_reward_scorer` for how it loads)."""
    from alignkit.eval.model_spec import ModelSpec
    from alignkit.eval.rm_score import load_reward_scorer

    identity = ModelSpec("rm", resolved[0], resolved[1], precision=precision).identity()
    store = ScoreStore("reward", identity, {"max_length": max_length, "batch_size": batch_size})

    def load():
        return load_reward_scorer(
            *resolved, batch_size=batch_size, max_length=max_length, name=name, precision=precision
        )

    return StoredScorer(load, store, use_cache)
