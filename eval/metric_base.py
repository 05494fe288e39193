"""What a metric is to the harness: three hooks on a shared context, called in the harness's fixed order.

The harness (:mod:`alignkit.eval.harness`) loads each evaluated model once, so a metric's work is split by what it
needs loaded::

    prepare(ctx)                      preflight: load its data and check its inputs (user errors before any compute)
    with_model(ctx, spec, model_fn)   while one evaluated model is loaded: model_fn() -> (model, tokenizer)
    score(ctx)                        after every model has generated: scores of the generations, judges, benchmarks

A metric writes its numbers into ``ctx.per_model[model]`` (per model) or ``ctx.set_metrics(model, prompt_set)`` (per
prompt set), and user-facing remarks into ``ctx.notes``. It is registered by name in
:data:`alignkit.eval.registries.METRICS`, with the options dataclass that the suite's mapping parses into.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from alignkit.eval.model_spec import ModelSpec, load_model

if TYPE_CHECKING:  # annotations only
    from alignkit.eval.generation import Generations
    from alignkit.eval.prompt_sets import PromptData
    from alignkit.eval.suite import Suite

ModelFn = Callable[[], tuple[Any, Any]]


class LazyModel:
    """``(model, tokenizer)`` of a spec, loaded on first call; :meth:`release` frees it."""

    def __init__(self, spec: ModelSpec):
        self.spec, self.value = spec, None

    def __call__(self) -> tuple[Any, Any]:
        if self.value is None:
            self.value = load_model(self.spec)
        return self.value

    def use_precision(self, precision: str) -> None:
        """Score from now on in ``precision`` (:mod:`alignkit.inference_precision`): a loaded model is switched in
        place (:func:`~alignkit.inference_precision.apply_precision`), a model not loaded yet loads in it. The
        harness generates in the exact precision, then switches."""
        from alignkit.inference_precision import apply_precision

        self.spec = self.spec.with_precision(precision)
        if self.value is not None:
            apply_precision(self.value[0], precision)

    def release(self) -> None:
        self.value = None
        gc.collect()


@dataclass
class EvalContext:
    """Everything the metrics of one eval share: inputs, generations, results and notes."""

    suite: Suite
    specs: list[ModelSpec]  # the first is the baseline
    data: dict[str, PromptData]  # prompt set name -> prompts
    runs_root: Path
    gens: dict[str, dict[str, Generations]] = field(default_factory=dict)  # model -> prompt set -> generations
    per_model: dict[str, dict[str, Any]] = field(default_factory=dict)  # the report's "metrics"
    win_rates: dict[str, Any] = field(default_factory=dict)  # the report's "win_rates"
    notes: list[str] = field(default_factory=list)
    reward_scorer: Callable[..., list[float]] | None = None  # set by rm_score, reused by the rm judge
    aux_models: dict[str, LazyModel] = field(default_factory=dict)  # loaded models other than the evaluated ones
    judges: dict[str, Any] = field(default_factory=dict)  # judges built once per eval (a loaded judge RM), by name
    sections: dict[str, Any] = field(default_factory=dict)  # extra top-level report keys a metric contributes
    use_cache: bool = True  # False (--no-cache): recompute cached generations and scores (alignkit.eval.score_cache)

    def __post_init__(self) -> None:
        for spec in self.specs:
            self.gens.setdefault(spec.name, {})
            self.per_model.setdefault(spec.name, {"sets": {name: {} for name in self.data}})

    def set_metrics(self, model: str, prompt_set: str) -> dict[str, Any]:
        """The dict that holds ``model``'s metrics on ``prompt_set``."""
        return self.per_model[model]["sets"][prompt_set]

    def aux_model(self, spec: ModelSpec) -> tuple[Any, Any]:
        """``(model, tokenizer)`` of a helper model (a judge, a reference), loaded once by name until
        :meth:`release_aux_models`."""
        if spec.name not in self.aux_models:
            self.aux_models[spec.name] = LazyModel(spec)
        return self.aux_models[spec.name]()

    def release_aux_models(self) -> None:
        for lazy in self.aux_models.values():
            lazy.release()
        self.aux_models.clear()
        self.judges.clear()
        gc.collect()


class Metric:
    """Base class of a registered metric: ``options`` is the dataclass its suite mapping parses into; every hook
    does nothing unless overridden. ``section`` is where the suite holds the options: under ``metrics:``, or a
    top-level key of that name (``lm_eval``)."""

    options: ClassVar[type]
    section: ClassVar[str] = "metrics"

    def __init__(self, opts: Any):
        self.opts = opts

    def prepare(self, ctx: EvalContext) -> None:
        """Preflight: load data, resolve models, add notes; raise user errors here, before any compute."""

    def with_model(self, ctx: EvalContext, spec: ModelSpec, model_fn: ModelFn) -> None:
        """Called once per evaluated model while it is loaded (``model_fn()`` loads it on first use)."""

    def score(self, ctx: EvalContext) -> None:
        """Called once after every model has generated its responses."""
