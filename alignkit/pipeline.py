"""Prerequisite runs: a run that another step needs (``run:NAME``) is trained from its recipe when missing, once.

An eval suite may score with a reward model or judge with a model that is itself a training run (``run:rm-smol`` =
``runs/rm-smol``). Such a run is a dependency, like a dataset card's build: it is built on first use and reused. The
step that needs it says so with a :class:`RunNeed` (run name, recipe, who needs it); :func:`ensure_runs` trains the
missing ones before that step starts. ``alignkit train`` calls it before it evaluates; ``alignkit eval`` calls it
only when asked (``--train-missing``), and otherwise names the ``alignkit train`` command to run.

The chain is general: name -> recipe -> train. Any step that needs a run (an eval's reward model or judge, a recipe
that starts from another run) describes it the same way. A dataset card does too: a card whose builder samples
from or scores with a run (``policy: run:NAME``, ``scorer: run:rm-smol`` of an on-policy pair card) declares those
runs with a ``required_runs(args, purpose)`` attribute on its builder function; :func:`dataset_runs` reads it, and
``alignkit train`` trains them before it builds the recipe's data. A builder that can do its first part without some
of them (the on-policy card samples before it needs its scorer) also has ``deferrable_runs(args, purpose)`` and a
``sample_only`` argument: :func:`deferrable_runs` and :func:`presample` let ``alignkit train`` run that part while
those runs train in a side lane (:mod:`alignkit.lanes`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignkit.errors import AlignkitError
from alignkit.runs import run_is_finished


@dataclass(frozen=True)
class RunNeed:
    """A run that some step needs: ``<runs_root>/name``, trained by ``recipe`` (a recipe name or YAML path).

    ``purpose`` says who needs it, for messages (e.g. ``suite smol.yaml: metrics.rm_score``); ``trainer``, when
    set, is the trainer the recipe must use (a reward model must come from a ``reward`` recipe).
    """

    name: str
    recipe: str
    purpose: str
    trainer: str | None = None

    def train_command(self, runs_root: str | Path) -> str:
        """The command that trains this run by hand."""
        final = Path(runs_root) / self.name
        if self.recipe == self.name and Path(runs_root) == Path("runs"):
            return f"alignkit train {self.name}"
        return f"alignkit train {self.recipe} output_dir={final}"


@dataclass
class PendingRun:
    """A missing run and its parsed recipe (output_dir already pointing at ``<runs_root>/name``)."""

    need: RunNeed
    recipe: Any  # alignkit.recipe.Recipe
    final: Path

    @property
    def interrupted(self) -> bool:
        """An earlier attempt left ``NAME.partial``: training resumes it."""
        return self.final.with_name(self.final.name + ".partial").exists()


def missing_runs(needs: list[RunNeed], runs_root: str | Path) -> list[PendingRun]:
    """The needed runs that have not finished, each with its recipe parsed and checked (an unknown recipe, a bad
    key or the wrong trainer is a one-line error here, before anything trains). A run needed twice counts once."""
    from alignkit.recipe import load_recipe

    pending: dict[str, PendingRun] = {}
    for need in needs:
        final = Path(runs_root) / need.name
        if need.name in pending or run_is_finished(final):
            continue
        recipe = load_recipe(need.recipe, [f"output_dir={final}"])
        if need.trainer is not None and recipe.args.trainer != need.trainer:
            raise AlignkitError(
                f"{need.purpose}: recipe '{need.recipe}' trains '{recipe.args.trainer}', not {need.trainer}"
            )
        pending[need.name] = PendingRun(need, recipe, final)
    return list(pending.values())


def missing_run_error(pending: PendingRun, runs_root: str | Path) -> AlignkitError:
    """The one-line error for a step that may not train ``pending`` itself."""
    need = pending.need
    how = need.train_command(runs_root) + (" --resume" if pending.interrupted else "")
    return AlignkitError(
        f"{need.purpose} needs run:{need.name}, which is not finished in {Path(runs_root)}/: "
        f"train it with `{how}` (or pass --train-missing)"
    )


def train_runs(pending: list[PendingRun]) -> list[Path]:
    """Train each pending run into its directory, saying so on one line; an interrupted attempt is resumed."""
    if not pending:
        return []
    from alignkit.train import train  # here, not at the top: steps that train nothing never import training

    done = []
    for run in pending:
        resume = run.interrupted
        how = "resuming the interrupted attempt" if resume else "once; later steps reuse it"
        print(
            f"alignkit: {run.need.purpose} needs run:{run.need.name}, which is missing; "
            f"training recipe {run.recipe.name} into {run.final} ({how})",
            flush=True,
        )
        done.append(train(run.recipe, resume=resume))
    return done


def ensure_runs(needs: list[RunNeed], runs_root: str | Path) -> list[Path]:
    """Train every needed run that is missing (see the module docstring); returns the directories trained now."""
    return train_runs(missing_runs(needs, runs_root))


def dataset_runs(card_ref: Any, overrides: dict[str, Any] | None = None) -> list[RunNeed]:
    """The runs a dataset card's builder needs with its ``source.args`` (updated by ``overrides``); ``[]`` for a
    card that needs none (every hub, file and plain builder card)."""
    from alignkit.data.cards import DatasetCard, import_object, load_card

    card = card_ref if isinstance(card_ref, DatasetCard) else load_card(card_ref)
    if card.source_kind != "builder":
        return []
    declare = getattr(import_object(card.source["builder"], card), "required_runs", None)
    if declare is None:
        return []
    return declare({**card.source.get("args", {}), **(overrides or {})}, f"dataset card {card.name}")


def declared_deferrable_runs(card: Any) -> list[RunNeed]:
    """The runs ``card``'s builder says it can wait for while it samples (its ``deferrable_runs`` hook); ``[]`` for a
    card without one."""
    from alignkit.data.cards import import_object

    if card.source_kind != "builder":
        return []
    declare = getattr(import_object(card.source["builder"], card), "deferrable_runs", None)
    if declare is None:
        return []
    return declare(card.source.get("args", {}), f"dataset card {card.name}")


def deferrable_runs(card: Any, needs: list[RunNeed], runs_root: str | Path) -> list[RunNeed]:
    """The missing runs of ``needs`` that ``card``'s builder can wait for while it samples (its
    ``deferrable_runs``), when every other missing run is one of them too (a missing policy must train first, so
    nothing is deferred then); ``[]`` otherwise."""
    later = {need.name for need in declared_deferrable_runs(card)}
    missing = [run.need for run in missing_runs(needs, runs_root)]
    if not missing or any(need.name not in later for need in missing):
        return []
    return missing


def presample(card: Any, runs_root: str | Path) -> None:
    """Run the part of ``card``'s build that needs none of its :func:`deferrable_runs` (``sample_only``)."""
    from alignkit.data.cards import build

    build(card, **dataset_builder_args(card, runs_root), sample_only=True)


def dataset_builder_args(card_ref: Any, runs_root: str | Path) -> dict[str, Any]:
    """Builder arguments that tie a card's build to this run tree: ``runs_root`` for a builder that reads runs."""
    from alignkit.data.cards import DatasetCard, import_object, load_card

    card = card_ref if isinstance(card_ref, DatasetCard) else load_card(card_ref)
    if card.source_kind != "builder":
        return {}
    builder = import_object(card.source["builder"], card)
    return {"runs_root": str(runs_root)} if hasattr(builder, "required_runs") else {}
