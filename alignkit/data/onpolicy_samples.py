"""Sampling and scoring for on-policy pairs, in resumable chunks of prompts (see :mod:`alignkit.data.onpolicy`).

Each chunk's prompts are repeated N times in one :func:`alignkit.eval.generation.generate` call, so the N samples of
a prompt are different rows of the same seeded batch; the chunk's seed is a hash of (seed, split, chunk index), so
the samples are a pure function of the inputs. A finished chunk (samples + scores) is written atomically to the
scratch directory, and a rerun reuses it instead of sampling and scoring again.

Without a scorer (``scorer=None``) only the sampling runs: the replies land in the generation cache
(:func:`alignkit.eval.generation.generate` keys them by policy, prompts and config), so a later build with the scorer
finds them there and only scores. ``alignkit train`` uses this to sample while the scorer itself is still training
in a side lane (:mod:`alignkit.lanes`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from alignkit.io import atomic_write_json


def _chunk_seed(seed: int, split: str, chunk: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{split}:{chunk}".encode()).digest()[:4], "big")


def sample_and_score(
    rows: list[dict[str, Any]],
    split: str,
    *,
    spec: Any,
    model_fn: Any,
    scorer: Any | None,
    generation: dict[str, Any],
    n_samples: int,
    seed: int,
    chunk_size: int,
    scratch: Path,
    bar: Any,
    greedy_candidate: bool = False,
) -> list[dict[str, Any]]:
    """Per prompt ``{id, responses, tokens, truncated, scores}`` (N each, N + 1 with ``greedy_candidate``: the
    greedy reply last), chunk by chunk; a chunk saved by an earlier, interrupted build is reused. With ``scorer`` None
    the chunks are only sampled (into the generation cache; module docstring), nothing is saved and ``[]`` returned."""
    from alignkit import lanes
    from alignkit.eval.generation import GenerationConfig, generate

    records: list[dict[str, Any]] = []
    for c, start in enumerate(range(0, len(rows), chunk_size)):
        lanes.checkpoint()  # a side lane that has ended gives its thread back here (alignkit.lanes)
        chunk = rows[start : start + chunk_size]
        ids = [r["id"] for r in chunk]
        path = scratch / f"{split}-{c:05d}.json"
        if scorer is not None and path.exists():
            saved = json.loads(path.read_text(encoding="utf-8"))
            if saved.get("ids") == ids:
                records += saved["records"]
                bar.update(len(chunk))
                continue
        prompts = [r["prompt"] for r in chunk]
        config = GenerationConfig(do_sample=True, seed=_chunk_seed(seed, split, c), **generation)
        gens = generate(
            spec, [p for p in prompts for _ in range(n_samples)], config, model_fn=model_fn, desc=spec.name
        )

        def grouped(values: list[Any], n: int = len(chunk)) -> list[list[Any]]:
            return [values[i * n_samples : (i + 1) * n_samples] for i in range(n)]

        responses, n_tokens, truncated = grouped(gens.responses), grouped(gens.n_tokens), grouped(gens.truncated)
        if greedy_candidate:
            greedy_config = GenerationConfig(
                do_sample=False, max_new_tokens=config.max_new_tokens, batch_size=config.batch_size
            )
            greedy = generate(spec, prompts, greedy_config, model_fn=model_fn, desc=f"{spec.name} greedy")
            for k in range(len(chunk)):
                responses[k] = [*responses[k], greedy.responses[k]]
                n_tokens[k] = [*n_tokens[k], greedy.n_tokens[k]]
                truncated[k] = [*truncated[k], greedy.truncated[k]]
        if scorer is None:
            bar.update(len(chunk))
            continue
        references = [r["reference"] for r in chunk] if scorer.needs_reference else None
        scores = scorer.score(prompts, responses, references)
        new = [
            {"id": i, "responses": resp, "tokens": tok, "truncated": cut, "scores": sc}
            for i, resp, tok, cut, sc in zip(ids, responses, n_tokens, truncated, scores, strict=True)
        ]
        atomic_write_json(path, {"ids": ids, "records": new})
        records += new
        bar.update(len(chunk))
    return records
