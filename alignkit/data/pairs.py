"""Embedded preference pairs: chosen = ShareGPT's reference answer, rejected = the embedded model's own answer.

Prompts come from the ShareGPT SFT set (:mod:`alignkit.data.sharegpt`) and keep its split, so a prompt held out
from SFT is also held out from DPO/reward training. Train prompts come from one prompt role (``train_role``):
``proxy`` for ``sharegpt-pairs-smol`` (the proxy reward model ``rm-smol``), ``judge`` for
``sharegpt-judge-pairs-smol`` (the held-out judge ``rm-judge-smol``), so the two reward models never share a training
prompt, and neither shares one with the policy (role ``policy``). Test pairs come from the test split for both.
The model answers greedily (see :mod:`alignkit.data.generate` for why), which makes "rejected" the model's single
most likely answer: the one a preference update should move away from.

Known bias: rejected answers are cut at ``max_new_tokens`` (96 tokens ~ 400 characters) while references are under
800 characters, so many rejected answers end mid-sentence (and greedy decoding of a 135M model often loops); the
manifest counts the cut ones (``hit_max_new_tokens``).

Cost: the 128 replies of a default card (96 new tokens, batch 64, fp32, 2 threads, AMD EPYC avx512_bf16) took 47.7 s
through the decode engine against 82.7 s through ``model.generate`` at batch 16, with the same 128 replies
(2026-12-03, a one-off side-by-side of the two code paths, each in a fresh process; bench/generation_speed.py is the
kept comparison of the engine with ``model.generate``); sizes are arguments (tests build 4 pairs).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from alignkit.data.sharegpt import build_sft, rows_of_role
from alignkit.data.splits import unit_interval
from alignkit.data.store import BuildResult, cached_build
from alignkit.errors import AlignkitError

NAME = "sharegpt-pairs-smol"
JUDGE_NAME = "sharegpt-judge-pairs-smol"
CARD_OF_ROLE = {"proxy": NAME, "judge": JUDGE_NAME}  # the cache name of each train role's pairs
BUILDER_VERSION = 3  # 2: train prompts from one prompt role (proxy or judge); 3: replies from the decode engine


def model_identity(model_path: str | os.PathLike) -> dict[str, Any]:
    """What identifies a checkpoint for caching: its config plus the name, size and mtime of every file.

    Conservative: re-materializing the same weights changes mtimes and so triggers a rebuild, never a stale reuse."""
    path = Path(model_path)
    if not (path / "config.json").exists():
        raise AlignkitError(f"model path {path} is not a checkpoint directory (no config.json)")
    files = sorted(p for p in path.iterdir() if p.is_file())
    return {
        "name": path.name,
        "config": (path / "config.json").read_text(encoding="utf-8"),
        "files": [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files],
    }


def _pick(rows: list[dict[str, Any]], n: int, seed: int) -> list[dict[str, Any]]:
    # Order by a hash of the id, not by position: adding rows to the SFT set does not reshuffle the chosen prompts.
    return sorted(rows, key=lambda r: unit_interval(r["id"], salt=f"pairs-{seed}"))[:n]


def assemble_pairs(
    picked: dict[str, list[dict[str, Any]]], replies: dict[str, str]
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, int]]:
    """SFT rows per split + the model's reply per id -> preference rows per split, and counts of dropped pairs.

    A pair is dropped when the reply is empty (after stripping) or equal to the reference: neither teaches a
    preference."""
    splits: dict[str, list[dict[str, Any]]] = {split: [] for split in picked}
    dropped = {"empty": 0, "same as reference": 0}
    for split, rows in picked.items():
        for row in rows:
            user, reference = row["messages"]
            rejected = replies[row["id"]].strip()
            if not rejected:
                dropped["empty"] += 1
                continue
            if rejected == reference["content"].strip():
                dropped["same as reference"] += 1
                continue
            splits[split].append(
                {
                    "id": row["id"],
                    "prompt": [user],
                    "chosen": [reference],
                    "rejected": [{"role": "assistant", "content": rejected}],
                }
            )
    return splits, dropped


def build_pairs(
    n_train: int = 128,
    n_test: int = 64,
    *,
    model_path: str | os.PathLike | None = None,
    source: str | os.PathLike | None = None,
    batch_size: int = 64,
    max_new_tokens: int = 96,
    seed: int = 0,
    train_role: str = "proxy",
    precision: str = "exact",
    cache_root: str | os.PathLike | None = None,
    force: bool = False,
) -> BuildResult:
    """Build (or reuse) conversational preference pairs ``{id, prompt, chosen, rejected}``.

    ``model_path`` defaults to the embedded SmolLM2-135M-Instruct; ``source`` is the ShareGPT file (default: the
    wheel's); train prompts come from the prompt role ``train_role`` (``proxy`` or ``judge``). The cache key covers
    the SFT set, the model, the sizes, the role and the generation settings, ``precision`` among them (``fast``: the
    decoder's matmuls in bf16 where the CPU has native bf16, :mod:`alignkit.inference_precision`; the key records
    what it means on this machine)."""
    from alignkit.inference_precision import FAST_NUMERICS, check_precision, effective_precision
    from alignkit.models import materialize_embedded

    check_precision(precision, f"{CARD_OF_ROLE.get(train_role, 'pairs')}: precision")

    if train_role not in CARD_OF_ROLE:
        raise AlignkitError(f"train_role: must be one of {', '.join(CARD_OF_ROLE)}, got {train_role!r}")
    name = CARD_OF_ROLE[train_role]
    path = Path(model_path) if model_path is not None else materialize_embedded()
    sft = build_sft(source, cache_root=cache_root)
    generation = {"do_sample": False, "max_new_tokens": max_new_tokens, "batch_size": batch_size}
    if effective_precision(precision) == "fast":  # exact keeps the keys of the pair sets built before this option
        generation |= {"precision": "fast", "fast_numerics": FAST_NUMERICS}
    fingerprint = {
        "builder": "alignkit.data.pairs:build_pairs",
        "version": BUILDER_VERSION,
        "sft": sft.manifest["key"],
        "model": model_identity(path),
        "n_train": n_train,
        "n_test": n_test,
        "seed": seed,
        "train_role": train_role,
        "generation": generation,
    }

    def produce() -> tuple[dict[str, list[dict[str, Any]]], dict[str, Any]]:
        from alignkit.data.generate import generate_replies

        picked = {
            "train": _pick(rows_of_role(sft, train_role), n_train, seed),
            "test": _pick(sft.rows("test"), n_test, seed),
        }
        for split, want, pool in (("train", n_train, f"role {train_role}"), ("test", n_test, "test split")):
            if len(picked[split]) < want:
                raise AlignkitError(
                    f"{name}: asked for {want} {split} pairs but the ShareGPT SFT {pool} has only "
                    f"{len(picked[split])} prompts"
                )
        everything = picked["train"] + picked["test"]
        replies, stats = generate_replies(
            path,
            [row["messages"][:1] for row in everything],
            batch_size=batch_size,
            max_new_tokens=max_new_tokens,
            desc=f"{name}: rejected answers",
            precision=precision,
        )
        splits, dropped = assemble_pairs(picked, dict(zip((row["id"] for row in everything), replies, strict=True)))
        report = [
            f"generated {stats.prompts} answers with {path.name} in {stats.seconds:.0f} s "
            f"({stats.prompts_per_second:.2f} prompts/s, {stats.tokens_per_second:.0f} new tokens/s, "
            f"batch {batch_size}, {stats.torch_threads} threads); {stats.hit_max_new_tokens} cut at "
            f"{max_new_tokens} tokens",
            f"kept {len(splits['train'])} train + {len(splits['test'])} test pairs; dropped {dropped}",
        ]
        extra = {
            "builder": fingerprint["builder"],
            "builder_version": BUILDER_VERSION,
            "model_path": str(path),
            "sft_directory": str(sft.directory),
            "generation": {**generation, **stats.as_dict()},
            "dropped": dropped,
            "report": report,
        }
        return splits, extra

    return cached_build(name, fingerprint, produce, cache_root=cache_root, force=force)
