"""Model references of data builders: ``base``, an embedded alias, ``run:NAME``, a run directory, a checkpoint path or
a hub id, resolved to an :class:`~alignkit.eval.model_spec.ModelSpec` (nothing is loaded).

``run:NAME`` is ``<runs_root>/NAME``, trained by the recipe ``NAME``: a builder that needs it declares a
:class:`~alignkit.pipeline.RunNeed` (see :func:`run_needs`), so ``alignkit train`` trains it first; a plain data
build with the run missing stops with one line naming the ``alignkit train`` command.
"""

from __future__ import annotations

from pathlib import Path

from alignkit.errors import AlignkitError
from alignkit.eval.model_spec import ModelSpec
from alignkit.pipeline import RunNeed
from alignkit.runs import run_is_finished

RUN_PREFIX = "run:"


def run_needs(refs: dict[str, str | None], purpose: str, trainers: dict[str, str] | None = None) -> list[RunNeed]:
    """The runs named by ``run:NAME`` among ``refs`` (field name -> reference), for :func:`alignkit.pipeline.
    ensure_runs`; ``trainers`` maps a field to the trainer its run must use (a reward model: ``reward``)."""
    needs = []
    for field_name, ref in refs.items():
        if isinstance(ref, str) and ref.startswith(RUN_PREFIX):
            name = ref[len(RUN_PREFIX) :]
            needs.append(RunNeed(name, name, f"{purpose}: {field_name}", (trainers or {}).get(field_name)))
    return needs


def require_finished_run(ref: str, runs_root: str | Path, purpose: str) -> Path:
    """``<runs_root>/NAME`` for ``run:NAME``, or a one-line error naming the command that trains it."""
    name = ref[len(RUN_PREFIX) :]
    if not name:
        raise AlignkitError(f"{purpose}: '{ref}' names no run; write run:NAME")
    run_dir = Path(runs_root) / name
    if not run_is_finished(run_dir):
        how = RunNeed(name, name, purpose).train_command(runs_root)
        raise AlignkitError(
            f"{purpose} needs {ref}, which is not finished in {Path(runs_root)}/: train it with `{how}` "
            "(`alignkit train` on a recipe that uses this data trains it by itself)"
        )
    return run_dir


def resolve_policy(ref: str, runs_root: str | Path = "runs", purpose: str = "policy") -> ModelSpec:
    """The causal LM a reference names: ``base`` (the embedded default), an embedded alias, ``run:NAME`` or a run
    directory (its trained model: base + adapter, or the full model), a checkpoint directory or a hub id."""
    from alignkit.eval.model_spec import resolve_target, run_specs
    from alignkit.models import DEFAULT_MODEL, EMBEDDED_MODELS, resolve_model_path

    if not ref:
        raise AlignkitError(f"{purpose}: no model given")
    if ref == "base":
        ref = DEFAULT_MODEL
    if ref in EMBEDDED_MODELS:
        return ModelSpec(name=ref, base=resolve_model_path(ref))
    if ref.startswith(RUN_PREFIX):
        return run_specs(require_finished_run(ref, runs_root, purpose))[1]
    try:
        kind, value = resolve_target(ref, runs_root)
    except AlignkitError as exc:
        raise AlignkitError(f"{purpose}: {exc}") from None
    return run_specs(value)[1] if kind == "run" else value
