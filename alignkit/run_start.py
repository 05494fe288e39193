"""A recipe that starts from another run: ``model_name_or_path: run:NAME``.

The start is the finished run ``<runs_root>/NAME``: its full model (``model/``), or its LoRA adapter merged into the
adapter's base. That merged checkpoint is the new run's base model, so it is also its reference model (TRL's
reference of a PEFT policy is the policy with its adapter switched off) and what ``alignkit eval`` compares the new
run against. Merging beats stacking a second adapter: the reference then costs no extra forward bookkeeping, and
QLoRA recipes quantize the merged start exactly as they would a hub model.

Merged starts are cached under ``$ALIGNKIT_CACHE/models/runs/NAME-<key>``, keyed by the start's weights
(:func:`alignkit.eval.model_spec.spec_key`), so retraining the start gives a new key and nothing is written into
the start's own run directory.

States of the start run, and what ``alignkit train`` does about each:

- missing (no directory, no ``NAME.partial``): trained first from the recipe ``NAME``, once, saying so (the
  prerequisite path of :mod:`alignkit.pipeline`);
- interrupted (``NAME.partial``) or not finished: a one-line error naming ``alignkit train NAME --resume``; the
  start is never resumed or retrained silently behind the user's back;
- finished but broken (weights missing): the one-line error of :func:`alignkit.runs.read_finished_run`.

``config.yaml`` and ``run.json`` record the chain of starts: this run's start first, then that run's start, down
to a model that is not a run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignkit.errors import AlignkitError
from alignkit.pipeline import RunNeed
from alignkit.runs import read_finished_run

RUN_PREFIX = "run:"
START_FILE = "config.yaml"


@dataclass
class StartModel:
    """What a recipe's ``model_name_or_path`` resolved to: a loadable ``path``, and the runs it came from."""

    path: str
    chain: list[dict[str, Any]] = field(default_factory=list)  # this run's start first; [] for a non-run model


def start_run_name(model_ref: str | None) -> str | None:
    """``NAME`` for ``run:NAME``, else ``None``; ``run:`` alone is a one-line error."""
    if not isinstance(model_ref, str) or not model_ref.startswith(RUN_PREFIX):
        return None
    name = model_ref[len(RUN_PREFIX) :].strip()
    if not name or "/" in name:
        raise AlignkitError(f"model_name_or_path: '{model_ref}' must name a run as run:NAME (a recipe name)")
    return name


def start_needs(recipe: Any, runs_root: str | Path) -> list[RunNeed]:
    """The start run as a prerequisite (``[]`` when the recipe starts from a model), after checking that it may be
    trained here: it is not this recipe's own run, and no interrupted or unfinished attempt of it exists."""
    name = start_run_name(recipe.model_args.model_name_or_path)
    if name is None:
        return []
    purpose = f"{recipe.path}: model_name_or_path"
    if name == Path(recipe.training_args.output_dir).name or name == recipe.name:
        raise AlignkitError(f"{purpose}: run:{name} is the run this recipe trains; a run cannot start from itself")
    run_dir = Path(runs_root) / name
    partial = run_dir.with_name(name + ".partial")
    if partial.exists():
        raise AlignkitError(
            f"{purpose} starts from run:{name}, whose training was interrupted ({partial}); finish it with "
            f"`alignkit train {name} --resume` (or remove {partial} to train it afresh)"
        )
    if run_dir.exists():
        try:
            read_finished_run(run_dir)
        except AlignkitError as exc:
            raise AlignkitError(
                f"{purpose} starts from run:{name}, which is not finished or is broken ({exc}); finish it with "
                f"`alignkit train {name} --resume`, or retrain it with --overwrite"
            ) from None
        return []  # finished: nothing to train
    from alignkit.recipe import list_recipes

    if name not in list_recipes():
        raise AlignkitError(
            f"{purpose}: run:{name} does not exist in {runs_root}/ and no recipe '{name}' can train it "
            f"(`alignkit list`); train it first: `alignkit train {name}` with a recipe of that name"
        )
    return [RunNeed(name, name, purpose)]


def _chain_of(run_dir: Path) -> list[dict[str, Any]]:
    import yaml

    config = run_dir / START_FILE
    if not config.is_file():
        return []
    data = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
    return list(data.get("start_chain") or [])


def resolve_start(model_ref: str, runs_root: str | Path, trainer: str) -> StartModel:
    """The checkpoint a finished start run provides (merging its adapter once, cached) and the chain of starts."""
    from alignkit.cache import cache_dir
    from alignkit.eval.model_spec import run_specs, spec_key

    name = start_run_name(model_ref)
    run_dir = Path(runs_root) / name
    try:
        meta = read_finished_run(run_dir)
    except AlignkitError as exc:
        raise AlignkitError(f"model_name_or_path: run:{name}: {exc}") from None
    if meta.get("trainer") == "reward" and trainer != "reward":
        raise AlignkitError(
            f"model_name_or_path: run:{name} is a reward model; a {trainer} recipe starts from a causal LM run"
        )
    _, trained = run_specs(run_dir)
    if trained.adapter is None:
        path = Path(trained.base)
    else:
        path = cache_dir("models", "runs") / f"{name}-{spec_key(trained)}"
        if not (path / "config.json").is_file():
            _merge(trained.base, trained.adapter, path, reward=meta.get("trainer") == "reward")
    link = {
        "run": name,
        "run_dir": str(run_dir),
        "recipe": meta.get("recipe"),
        "trainer": meta.get("trainer"),
        "model_name_or_path": meta.get("model_name_or_path"),
        "adapter": trained.adapter,
        "merged_into": str(path),
    }
    return StartModel(str(path), [link, *_chain_of(run_dir)])


def _merge(base: str, adapter: str, out: Path, reward: bool) -> None:
    from alignkit.models import load_tokenizer
    from alignkit.onpolicy_rounds import merge_adapter

    tokenizer_dir = adapter if (Path(adapter) / "tokenizer_config.json").is_file() else base
    print(f"alignkit: merging the start's adapter {adapter} into {base} -> {out} (once)", flush=True)
    merge_adapter(base, adapter, out, load_tokenizer(tokenizer_dir), reward=reward)
