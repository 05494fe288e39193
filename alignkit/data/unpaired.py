"""Unpaired preference rows (KTO's format) made from a preference card: each pair gives two rows,
``{prompt, completion: chosen, label: True}`` (desirable) and ``{prompt, completion: rejected, label: False}``.

A pair without an explicit ``prompt`` (the prompt inside chosen and rejected, as in UltraFeedback) is split at the
last turn, which must be the only one chosen and rejected differ in. The rows are shuffled with a seed: TRL's
KTOTrainer estimates its KL reference point from each row's prompt with another row's completion in the same
fixed-order batch, so a batch should mix prompts and labels rather than hold one pair's two halves in a row.

The build is cached under a key of the pairs' rows, so rebuilding the pairs (a new policy or scorer) rebuilds this;
the runs the pair card needs (``run:rm-smol`` of the on-policy card) are this card's runs too.
"""

from __future__ import annotations

import hashlib
import json
import random
from typing import Any

from alignkit.data.store import SPLITS, BuildResult, cached_build
from alignkit.errors import AlignkitError
from alignkit.pipeline import RunNeed

BUILDER_VERSION = 1


def unpair_rows(pairs: list[dict[str, Any]], where: str) -> list[dict[str, Any]]:
    """Two unpaired rows per preference pair, desirable first (module docstring)."""
    rows = []
    for i, pair in enumerate(pairs):
        chosen, rejected, prompt = pair["chosen"], pair["rejected"], pair.get("prompt")
        if prompt is None:
            if not (isinstance(chosen, list) and isinstance(rejected, list)) or chosen[:-1] != rejected[:-1]:
                raise AlignkitError(
                    f"{where}: pair {i} has no 'prompt' and chosen/rejected do not share every turn but the last"
                )
            prompt, chosen, rejected = chosen[:-1], chosen[-1:], rejected[-1:]
        rows.append({"prompt": prompt, "completion": chosen, "label": True})
        rows.append({"prompt": prompt, "completion": rejected, "label": False})
    return rows


def _pair_card_and_args(pairs: str, runs_root: str | None):
    from alignkit.data.cards import load_card
    from alignkit.pipeline import dataset_builder_args

    card = load_card(pairs)
    if card.format != "preference":
        raise AlignkitError(f"unpaired rows need a preference card; '{pairs}' is {card.format}")
    return card, (dataset_builder_args(card, runs_root) if runs_root is not None else {})


def build_unpaired(
    pairs: str, seed: int = 0, runs_root: str | None = None, force: bool = False, sample_only: bool = False
) -> BuildResult | None:
    """Unpaired rows of the preference card ``pairs`` (train and test split), cached (module docstring).

    ``sample_only``: only the pair card's own sample-only part (:func:`alignkit.pipeline.presample`: an on-policy
    card samples its replies before its scorer is trained, see :func:`deferrable_runs`); returns None."""
    from alignkit.data.cards import load_split

    card, builder_args = _pair_card_and_args(pairs, runs_root)
    if sample_only:
        from alignkit.pipeline import presample

        presample(card, runs_root if runs_root is not None else "runs")
        return None
    where = f"unpaired rows of card '{card.name}'"
    source = {split: [dict(r) for r in load_split(card, split, builder_args=builder_args)] for split in SPLITS}
    digest = hashlib.sha256(json.dumps(source, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()
    fingerprint = {"builder": "unpaired", "version": BUILDER_VERSION, "pairs": card.name, "rows": digest, "seed": seed}

    def produce():
        out = {}
        for split, rows in source.items():
            unpaired = unpair_rows(rows, f"{where}, split {split}")
            random.Random(f"{seed}-{split}").shuffle(unpaired)
            out[split] = unpaired
        counts = {split: {"pairs": len(rows)} for split, rows in source.items()}
        return out, {"pairs_card": card.name, "pairs": counts}

    return cached_build(f"unpaired-{card.name}", fingerprint, produce, force=force)


def required_runs(args: dict[str, Any], purpose: str) -> list[RunNeed]:
    """The runs the pair card needs (e.g. the on-policy card's scorer run:rm-smol) are this card's runs too."""
    from alignkit.pipeline import dataset_runs

    if "pairs" not in args:
        raise AlignkitError(f"{purpose}: source.args needs 'pairs' (a preference card)")
    return dataset_runs(args["pairs"])


def deferrable_runs(args: dict[str, Any], purpose: str) -> list[RunNeed]:
    """The pair card's deferrable runs: what its build can do without at first (the on-policy card's scorer, while
    it samples), so ``alignkit train`` samples a KTO recipe's replies while the side lane trains that scorer."""
    from alignkit.data.cards import load_card
    from alignkit.pipeline import declared_deferrable_runs

    if "pairs" not in args:
        raise AlignkitError(f"{purpose}: source.args needs 'pairs' (a preference card)")
    return declared_deferrable_runs(load_card(args["pairs"]))


build_unpaired.required_runs = required_runs  # type: ignore[attr-defined]  # read by alignkit.pipeline
build_unpaired.deferrable_runs = deferrable_runs  # type: ignore[attr-defined]
