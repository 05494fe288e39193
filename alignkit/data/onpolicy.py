"""On-policy preference pairs: sample N replies per prompt from a policy, score them, keep best vs worst.

The pairs of ``sharegpt-pairs-smol`` are off-policy (a ChatGPT reference against the model's greedy reply), so DPO
learns "ChatGPT's style against mine". Here both sides are the policy's own samples, ranked by a scorer -- the
recipe of iterative/online DPO (Xu et al. 2023, "Some things are more CRINGE than others"; Guo et al. 2024, "Direct
Language Model Alignment from Online AI Feedback"):

1. **Sample** N replies per prompt (:func:`alignkit.eval.generation.generate`, which batches, shares the chat
   template's prefix and caches). Each prompt is repeated N times in one call, so the N samples of a prompt are
   different rows of the same seeded batch; the result is a pure function of the inputs (and the chunk size).
2. **Score** every reply (:mod:`alignkit.data.response_scorers`: a reward model, a grader, or the LLM judge).
3. **Select** best vs worst (:mod:`alignkit.data.pair_selection`: margin, length and truncation rules).

Output rows are TRL conversational preference rows ``{id, prompt, chosen, rejected}`` plus ``chosen_score``,
``rejected_score``, ``chosen_tokens`` and ``rejected_tokens``; the manifest names the policy and the scorer and counts
what was kept and why the rest was dropped. The dataset is cached under a key of every input (prompts, policy and
scorer identities, sampling, selection rules).

Robustness: prompts are processed in chunks of ``chunk_size`` (:mod:`alignkit.data.onpolicy_samples`); each
finished chunk (samples + scores) is saved under ``<cache>/onpolicy-pairs/.samples-<key>/``, so an interrupted build
resumes where it stopped and gives the same dataset. Those samples are keyed without the selection rules: changing
only ``min_margin``, ``length_delta``, ``drop_truncated`` or ``chosen_complete`` re-selects without sampling again.

With ``greedy_candidate`` the policy's greedy reply joins the N samples as candidate N+1. Greedy decoding is how
the policy is evaluated, and a 135M model's greedy replies loop far more often than its samples do, so a pair whose
rejected side is the greedy loop teaches exactly what the evaluation sees.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

from alignkit.cache import cache_dir
from alignkit.data.model_refs import run_needs
from alignkit.data.onpolicy_samples import sample_and_score
from alignkit.data.pair_selection import DROP_REASONS, Candidate, SelectionRules, select_pair
from alignkit.data.store import BuildResult, cached_build, fingerprint_key
from alignkit.errors import AlignkitError
from alignkit.inference_precision import check_precision
from alignkit.pipeline import RunNeed

NAME = "onpolicy-pairs"
BUILDER_VERSION = 1  # greedy_candidate/chosen_complete default off: version-1 keys are unchanged
DEFAULT_SCORER = "run:rm-smol"


def required_runs(args: dict[str, Any], purpose: str) -> list[RunNeed]:
    """The runs a build with these builder ``args`` needs (``run:NAME`` as policy or scorer), for the pipeline."""
    scorer = str(args.get("scorer", DEFAULT_SCORER))
    refs = {"policy": args.get("policy", "base")}
    if scorer.startswith("llm:"):
        refs["scorer (LLM judge)"] = scorer[len("llm:") :]
    else:
        refs["scorer"] = scorer
    return run_needs(refs, purpose, trainers={"scorer": "reward"})


def deferrable_runs(args: dict[str, Any], purpose: str) -> list[RunNeed]:
    """The runs of :func:`required_runs` that sampling does without: the scorer's (``sample_only`` builds)."""
    policy = {need.name for need in run_needs({"policy": args.get("policy", "base")}, purpose)}
    return [need for need in required_runs(args, purpose) if need.name not in policy]


def _check(
    n_prompts, n_test, n_samples, temperature, top_p, max_new_tokens, chunk_size, prompt_offset, batch_size,
    scorer_batch_size,
) -> None:  # fmt: skip
    problems = [
        (n_prompts >= 1, f"n_prompts: must be >= 1, got {n_prompts}"),
        (n_test >= 0, f"n_test: must be >= 0, got {n_test}"),
        (n_samples >= 2, f"n_samples: must be >= 2 (a pair needs two replies), got {n_samples}"),
        (temperature > 0, f"temperature: must be > 0 (N greedy replies would be identical), got {temperature}"),
        (0 < top_p <= 1, f"top_p: must be in (0, 1], got {top_p}"),
        (max_new_tokens >= 1, f"max_new_tokens: must be >= 1, got {max_new_tokens}"),
        (chunk_size >= 1, f"chunk_size: must be >= 1, got {chunk_size}"),
        (prompt_offset >= 0, f"prompt_offset: must be >= 0, got {prompt_offset}"),
        (batch_size >= 1, f"batch_size: must be >= 1, got {batch_size}"),
        (scorer_batch_size >= 1, f"scorer_batch_size: must be >= 1, got {scorer_batch_size}"),
    ]
    for ok, message in problems:
        if not ok:
            raise AlignkitError(f"on-policy pairs: {message}")


def select_pairs(
    rows: list[dict[str, Any]], records: list[dict[str, Any]], rules: SelectionRules
) -> tuple[list[dict[str, Any]], dict[str, int], dict[str, int]]:
    """Preference rows from the scored samples, the count of each drop reason and response counts."""
    pairs: list[dict[str, Any]] = []
    counts = Counter({"prompts": len(rows), "kept": 0, **dict.fromkeys(DROP_REASONS, 0)})
    responses: Counter[str] = Counter()
    for row, rec in zip(rows, records, strict=True):
        candidates = [
            Candidate(text, score, tokens, cut)
            for text, score, tokens, cut in zip(
                rec["responses"], rec["scores"], rec["tokens"], rec["truncated"], strict=True
            )
        ]
        responses.update(
            total=len(candidates),
            truncated=sum(c.truncated for c in candidates),
            empty=sum(not c.text.strip() for c in candidates),
        )
        choice = select_pair(candidates, rules)
        if not choice.kept:
            counts[choice.dropped] += 1
            continue
        counts["kept"] += 1
        best, worst = candidates[choice.chosen], candidates[choice.rejected]
        pairs.append(
            {
                "id": row["id"],
                "prompt": row["prompt"],
                "chosen": [{"role": "assistant", "content": best.text.strip()}],
                "rejected": [{"role": "assistant", "content": worst.text.strip()}],
                "chosen_score": best.score,
                "rejected_score": worst.score,
                "chosen_tokens": best.tokens,
                "rejected_tokens": worst.tokens,
            }
        )
    return pairs, dict(counts), {k: responses[k] for k in ("total", "truncated", "empty")}


def build_onpolicy_pairs(
    n_prompts: int = 128,
    n_test: int = 0,
    *,
    prompts: str = "role:policy",
    policy: str = "base",
    scorer: str = DEFAULT_SCORER,
    n_samples: int = 4,
    temperature: float = 0.8,
    top_p: float = 0.95,
    max_new_tokens: int = 128,
    min_margin: float = 0.0,
    length_delta: int | None = None,
    drop_truncated: bool = False,
    chosen_complete: bool = False,
    greedy_candidate: bool = False,
    precision: str = "exact",
    seed: int = 0,
    prompt_offset: int = 0,
    batch_size: int = 64,
    chunk_size: int = 16,
    reference_column: str = "answer",
    scorer_batch_size: int = 8,
    source: str | os.PathLike | None = None,
    runs_root: str | os.PathLike = "runs",
    cache_root: str | os.PathLike | None = None,
    force: bool = False,
    sample_only: bool = False,
) -> BuildResult | None:
    """Build (or reuse) on-policy pairs (module docstring); the card builder of ``sharegpt-onpolicy-smol`` and the
    engine of ``alignkit pairs``.

    Args:
        n_prompts: train prompts, taken from ``prompts`` (:mod:`alignkit.data.onpolicy_prompts`) in seeded-hash
            order from ``prompt_offset`` on; ``n_test`` held-out prompts (0: an empty test split).
        policy: who samples: ``base``, an embedded alias, ``run:NAME``, a run directory or a checkpoint.
        scorer: ``run:NAME``/a reward-model path, ``grader:NAME``, or ``llm:MODEL`` (:mod:`~alignkit.data.
            response_scorers`); a grader reads ``reference_column``.
        n_samples, temperature, top_p, max_new_tokens, seed: sampling (N replies per prompt).
        greedy_candidate: also decode each prompt greedily and add that reply as one more candidate.
        precision: ``exact`` or ``fast``: the sampling policy's and the scorer's decoder matmuls in bf16 where the
            hardware has native bf16 (:mod:`alignkit.inference_precision`; their identities, hence the key, say so).
            The replies are samples either way; bf16 changes which ones, not how they are drawn.
        min_margin, length_delta, drop_truncated, chosen_complete: selection (:mod:`alignkit.data.pair_selection`).
        batch_size: generation rows per batch; chunk_size: prompts per saved chunk (both shape the seeded batches,
            so both are part of the key).
        source: the ShareGPT file for ``role:`` prompts (default: the wheel's); runs_root: where ``run:NAME`` lives.
        sample_only: only sample, into the generation cache, and return None: the scorer is not needed (nor
            checked), and a build with the same arguments afterwards only scores (``alignkit train`` samples so while
            the scorer's run trains in a side lane, :mod:`alignkit.lanes`).
    """
    from alignkit.data.model_refs import resolve_policy
    from alignkit.data.onpolicy_prompts import load_pool, pick
    from alignkit.data.response_scorers import parse_scorer

    _check(
        n_prompts, n_test, n_samples, temperature, top_p, max_new_tokens, chunk_size, prompt_offset, batch_size,
        scorer_batch_size,
    )  # fmt: skip
    try:
        rules = SelectionRules(
            min_margin=min_margin,
            length_delta=length_delta,
            drop_truncated=drop_truncated,
            chosen_complete=chosen_complete,
        )
    except ValueError as exc:
        raise AlignkitError(f"on-policy pairs: {exc}") from None
    check_precision(precision, "on-policy pairs: precision")
    score_with = None
    if not sample_only:
        score_with = parse_scorer(
            scorer, runs_root, batch_size=scorer_batch_size, purpose="on-policy pairs: scorer", precision=precision
        )
    spec = resolve_policy(policy, runs_root, purpose="on-policy pairs: policy").with_precision(precision)
    picked, pools = {}, {}
    for split, n, offset in (("train", n_prompts, prompt_offset), ("test", n_test, 0)):
        pool = load_pool(prompts, split, reference_column, source=source, cache_root=cache_root)
        if n and not pool.rows:
            hint = "; a prompt file has no held-out split, set n_test 0" if split == "test" and pool.is_file else ""
            raise AlignkitError(f"prompts '{prompts}': the {split} prompt set is empty; nothing to sample{hint}")
        if score_with is not None and score_with.needs_reference and n and not pool.has_reference:
            raise AlignkitError(
                f"scorer '{scorer}' grades against a reference column '{reference_column}', which prompts "
                f"'{prompts}' ({split}) lack (columns: {', '.join(pool.columns)}); set reference_column"
            )
        picked[split] = pick(pool.rows, n, seed, offset)
        if len(picked[split]) < n:
            raise AlignkitError(
                f"prompts '{prompts}': asked for {n} {split} prompts from offset {offset}, but only "
                f"{len(pool.rows)} exist"
            )
        pools[split] = pool.identity
    generation = {
        "max_new_tokens": max_new_tokens,
        "temperature": temperature,
        "top_p": top_p,
        "batch_size": batch_size,
    }
    if sample_only:
        _sample(picked, spec, generation, n_samples, seed, chunk_size, greedy_candidate)
        return None
    sample_fingerprint = {
        "builder": "alignkit.data.onpolicy:build_onpolicy_pairs",
        "version": BUILDER_VERSION,
        "prompts": pools,
        "ids": {split: _ids_hash(rows) for split, rows in picked.items()},
        "policy": spec.identity(),
        "scorer": score_with.identity(),
        "reference_column": reference_column if score_with.needs_reference else None,
        "generation": generation,
        "n_samples": n_samples,
        "seed": seed,
        "chunk_size": chunk_size,
    }
    if greedy_candidate:  # only when on, so builds without it keep their cache keys
        sample_fingerprint["greedy_candidate"] = True
    selection_key = {k: v for k, v in vars(rules).items() if k != "chosen_complete" or v}
    fingerprint = {**sample_fingerprint, "selection": selection_key}
    parent = (Path(cache_root) if cache_root is not None else cache_dir("datasets")) / NAME
    scratch = parent / f".samples-{fingerprint_key(sample_fingerprint)}"

    def produce() -> tuple[dict[str, list[dict[str, Any]]], dict[str, Any]]:
        from tqdm.auto import tqdm

        from alignkit.eval.metric_base import LazyModel

        if force:  # a forced build samples again instead of re-selecting saved samples
            shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True, exist_ok=True)
        lazy = LazyModel(spec)
        start = time.perf_counter()
        total = sum(len(rows) for rows in picked.values())
        try:
            with tqdm(total=total, desc=f"on-policy pairs: sample {n_samples} + score", unit="prompt") as bar:
                records = {
                    split: sample_and_score(
                        rows, split, spec=spec, model_fn=lazy, scorer=score_with, generation=generation,
                        n_samples=n_samples, seed=seed, chunk_size=chunk_size, scratch=scratch, bar=bar,
                        greedy_candidate=greedy_candidate,
                    )
                    for split, rows in picked.items()
                }  # fmt: skip
        finally:
            lazy.release()
            score_with.release()
        seconds = round(time.perf_counter() - start, 1)
        splits, selection, responses = {}, {}, {}
        for split, rows in picked.items():
            splits[split], selection[split], responses[split] = select_pairs(rows, records[split], rules)
        kept = selection["train"]["kept"]
        if not kept:
            dropped = {k: v for k, v in selection["train"].items() if k not in ("prompts", "kept") and v}
            raise AlignkitError(
                f"on-policy pairs: no pair kept from {n_prompts} prompts (dropped: {dropped}); relax min_margin, "
                "length_delta, drop_truncated or chosen_complete (the samples are saved: only selection reruns)"
            )
        greedy_text = " + 1 greedy" if greedy_candidate else ""
        report = [
            f"sampled {n_samples} replies{greedy_text} to {total} prompts with {policy} ({spec.name}), scored by "
            f"{scorer}, in {seconds:.0f} s; {responses['train']['truncated']}/{responses['train']['total']} train "
            f"replies cut at {max_new_tokens} tokens",
            f"kept {kept} of {n_prompts} train pairs (dropped {_dropped_text(selection['train'])})"
            + (f"; {selection['test']['kept']} of {n_test} test pairs" if n_test else "; no test split"),
        ]
        extra = {
            "builder": sample_fingerprint["builder"],
            "builder_version": BUILDER_VERSION,
            "prompts": prompts,
            "policy": {"ref": policy, **spec.describe()},
            "scorer": {"ref": scorer, **score_with.identity()},
            "generation": {
                **generation,
                "n_samples": n_samples,
                "greedy_candidate": greedy_candidate,
                "seed": seed,
                "chunk_size": chunk_size,
            },  # fmt: skip
            "selection_rules": vars(rules),
            "selection": selection,
            "responses": responses,
            "samples_directory": str(scratch),
            "sample_score_seconds": seconds,
            "report": report,
        }
        return splits, extra

    return cached_build(NAME, fingerprint, produce, cache_root=cache_root, force=force)


def _sample(picked, spec, generation, n_samples, seed, chunk_size, greedy_candidate) -> None:
    """The sampling of a build, without scoring: the replies go to the generation cache (``sample_only``)."""
    from tqdm.auto import tqdm

    from alignkit.eval.metric_base import LazyModel

    lazy = LazyModel(spec)
    total = sum(len(rows) for rows in picked.values())
    try:
        with tqdm(total=total, desc=f"on-policy pairs: sample {n_samples}", unit="prompt") as bar:
            for split, rows in picked.items():
                sample_and_score(
                    rows, split, spec=spec, model_fn=lazy, scorer=None, generation=generation, n_samples=n_samples,
                    seed=seed, chunk_size=chunk_size, scratch=Path(), bar=bar, greedy_candidate=greedy_candidate,
                )  # fmt: skip
    finally:
        lazy.release()


def _ids_hash(rows: list[dict[str, Any]]) -> str:
    return hashlib.sha256("\n".join(r["id"] for r in rows).encode()).hexdigest()


def _dropped_text(counts: dict[str, int]) -> str:
    parts = [f"{counts[reason]} {reason.replace('_', ' ')}" for reason in DROP_REASONS if counts.get(reason)]
    return ", ".join(parts) or "none"


build_onpolicy_pairs.required_runs = required_runs  # type: ignore[attr-defined]  # read by alignkit.pipeline
build_onpolicy_pairs.deferrable_runs = deferrable_runs  # type: ignore[attr-defined]
