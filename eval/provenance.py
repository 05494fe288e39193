"""Which prompts a run trained on, and whether a judge saw any of an evaluated run's training prompts.

"A judge never grades its own pupil" (DESIGN.md, Measuring honestly) is checked here, on data, not assumed. A run's
*training prompts* are:

* the rows of its dataset card's train split that it trained on (``run.json`` ``dataset``; the subset of
  ``max_train_samples`` rows drawn with the training ``seed``, from ``resolved_config.json``, exactly as
  :func:`alignkit.train.build_trainer` draws it; the whole train split when that file is missing);
* plus, recursively, the training prompts of every run its data or its weights came from: each ``run:NAME`` named in
  the card's ``source`` (e.g. the scorer that labelled on-policy pairs, or the policy that sampled them) and a
  ``model_name_or_path`` of ``run:NAME`` (a warm start).

Builder cards are read from their existing build, never rebuilt (:func:`alignkit.data.store.reuse_only`). Prompts
are compared twice: by the rows' ``id`` column (where both sides have one) and by the first user turn's
text, whitespace-normalized and case-folded (so a prompt copied under a new id still counts). Anything that cannot be
read (no ``run.json``, a card that does not load, a model path with no run behind it) makes the answer *unknown*,
with the reason; an overlap found elsewhere still answers *yes*.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignkit.errors import AlignkitError
from alignkit.runs import read_run


@dataclass
class TrainingPrompts:
    """The prompts behind a run: ids (rows that carry one), normalized texts, what was read and what could not be."""

    ids: set[str] = field(default_factory=set)
    texts: set[str] = field(default_factory=set)
    sources: list[str] = field(default_factory=list)  # "rm-smol: card sharegpt-pairs-smol train, 96 rows"
    unknown: list[str] = field(default_factory=list)  # why part of the lineage could not be read

    def add(self, other: TrainingPrompts) -> None:
        self.ids |= other.ids
        self.texts |= other.texts
        self.sources += other.sources
        self.unknown += other.unknown


def normalize(text: str) -> str:
    return " ".join(text.split()).casefold()


def prompt_key(row: dict[str, Any]) -> str | None:
    """The normalized text of a row's first user turn (``prompt``, ``messages`` or an implicit-prompt ``chosen``)."""
    for column in ("prompt", "messages", "chosen"):
        value = row.get(column)
        if isinstance(value, str) and column == "prompt":
            return normalize(value)
        if isinstance(value, list):
            for message in value:
                if isinstance(message, dict) and message.get("role") == "user":
                    return normalize(str(message.get("content") or ""))
    return None


def run_refs(node: Any) -> list[str]:
    """Every ``run:NAME`` string inside a card's ``source`` (builder args nest freely), as NAMEs."""
    if isinstance(node, str):
        return [node[len("run:") :]] if node.startswith("run:") and len(node) > len("run:") else []
    if isinstance(node, dict):
        return [name for v in node.values() for name in run_refs(v)]
    if isinstance(node, (list, tuple)):
        return [name for v in node for name in run_refs(v)]
    return []


def _train_subset(run_dir: Path) -> tuple[int | None, int, str]:
    """``(max_samples, seed, how)`` the run drew its train rows with (see the module docstring)."""
    path = run_dir / "resolved_config.json"
    try:
        resolved = json.loads(path.read_text(encoding="utf-8"))
        return resolved["recipe"].get("max_train_samples"), int(resolved["training"].get("seed", 42)), "as trained"
    except (OSError, ValueError, KeyError, TypeError):
        return None, 42, "the whole split: no resolved_config.json gives the run's subset"


def card_prompts(
    card_ref: str,
    split: str,
    max_samples: int | None = None,
    seed: int = 42,
    builder_args: dict[str, Any] | None = None,
) -> TrainingPrompts:
    """Ids and prompt texts of a card's split (the ``max_samples`` subset that :func:`load_split` draws). A builder
    card is read from its existing build only (:func:`alignkit.data.store.reuse_only`): a missing build is an error
    here, never minutes of generation. ``builder_args`` as ``alignkit train`` passed them (a builder that reads runs
    finds them in the run tree of the run that trained on it, not in ./runs)."""
    from alignkit.data.cards import load_card, load_split
    from alignkit.data.store import reuse_only

    card = load_card(card_ref)
    with reuse_only():
        try:  # the card keeps only mapped columns; map the source's 'id' too when it has one
            with_ids = dataclasses.replace(card, columns={**card.columns, "id": "id"})
            rows = list(load_split(with_ids, split, max_samples=max_samples, seed=seed, builder_args=builder_args))
        except AlignkitError as exc:
            if "'id'" not in str(exc):
                raise
            rows = list(load_split(card, split, max_samples=max_samples, seed=seed, builder_args=builder_args))
    out = TrainingPrompts()
    for row in rows:
        if row.get("id") is not None:
            out.ids.add(str(row["id"]))
        key = prompt_key(row)
        if key is not None:
            out.texts.add(key)
    return out


def run_training_prompts(
    run_dir: str | Path, runs_root: str | Path, _seen: frozenset[str] = frozenset()
) -> TrainingPrompts:
    """The training prompts of a run and of every run its data or weights came from (module docstring)."""
    run_dir = Path(run_dir)
    out = TrainingPrompts()
    key = str(run_dir.resolve())
    if key in _seen:  # a cycle in the lineage: already counted
        return out
    seen = _seen | {key}
    try:
        meta = read_run(run_dir)
    except AlignkitError as exc:
        meta, why = None, str(exc)
    else:
        why = f"{run_dir} has no run.json"
    if meta is None:
        out.unknown.append(why)
        return out
    card_ref = meta.get("dataset")
    if not card_ref:
        out.unknown.append(f"{run_dir / 'run.json'} names no dataset")
        return out
    max_samples, seed, how = _train_subset(run_dir)
    try:
        from alignkit.data.cards import load_card
        from alignkit.pipeline import dataset_builder_args

        card = load_card(card_ref)
        # train built it with runs_root = the run's parent (alignkit.train), so read it from there
        part = card_prompts(card_ref, "train", max_samples, seed, dataset_builder_args(card, run_dir.parent))
    except (AlignkitError, OSError, ImportError) as exc:
        out.unknown.append(f"run {run_dir.name}: cannot read card '{card_ref}' ({exc})")
        return out
    rows = max(len(part.ids), len(part.texts))
    part.sources.append(f"{run_dir.name}: card {card.name} train, {rows} prompts ({how})")
    out.add(part)
    upstream = run_refs(card.source)
    model = str(meta.get("model_name_or_path") or "")
    upstream += run_refs(model)
    for name in dict.fromkeys(upstream):
        out.add(run_training_prompts(Path(runs_root) / name, runs_root, seen))
    return out


@dataclass
class Overlap:
    """Whether a judge saw any training prompt of an evaluated run: ``value`` True / False / None (unknown)."""

    value: bool | None
    detail: str
    shared_ids: int = 0
    shared_texts: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def overlap(judge: TrainingPrompts, evaluated: TrainingPrompts, judge_name: str, run_name: str) -> Overlap:
    """Compare two lineages: any shared id or prompt text is a yes; none, with a gap in either lineage, unknown."""
    ids, texts = judge.ids & evaluated.ids, judge.texts & evaluated.texts
    if ids or texts:
        return Overlap(
            True,
            f"{judge_name} trained on {len(ids)} prompt ids / {len(texts)} prompt texts that {run_name} "
            f"(or a run behind its data) trained on",
            len(ids),
            len(texts),
        )
    gaps = judge.unknown + evaluated.unknown
    if gaps:
        return Overlap(None, f"unknown: {gaps[0]}")
    if not (judge.texts or judge.ids) or not (evaluated.texts or evaluated.ids):
        return Overlap(None, "unknown: a lineage holds no prompts")
    return Overlap(
        False,
        f"disjoint: {len(judge.texts)} judge training prompts ({'; '.join(judge.sources)}) vs "
        f"{len(evaluated.texts)} ({'; '.join(evaluated.sources)})",
    )


def judge_saw_training(
    judge_run: str | Path | None,
    evaluated_run: str | Path | None,
    runs_root: str | Path,
    judge_name: str = "the judge",
    run_name: str = "the evaluated model",
    why_no_judge_run: str = "the judge is not a run, so its training data is unknown",
) -> Overlap:
    """Whether the judge trained by ``judge_run`` saw a training prompt of ``evaluated_run`` (either may be None:
    a model path with no run metadata, which makes the answer unknown)."""
    if judge_run is None:
        return Overlap(None, f"unknown: {why_no_judge_run}")
    if evaluated_run is None:
        return Overlap(None, f"unknown: {run_name} is not a run, so its training data is unknown")
    judge = run_training_prompts(judge_run, runs_root)
    evaluated = run_training_prompts(evaluated_run, runs_root)
    return overlap(judge, evaluated, judge_name, run_name)
