"""The ``perplexity`` metric, both conventions of :mod:`alignkit.eval.perplexity`:

(a) ``heldout``: each evaluated model's perplexity on held-out reference answers (while the model is loaded);
(b) ``reference_model``: each model's own responses scored under one reference model (``base``: the baseline's base
    checkpoint; or any model path/name; ``none`` or absent: off).
"""

from __future__ import annotations

from dataclasses import dataclass

from alignkit.errors import AlignkitError
from alignkit.eval.metric_base import EvalContext, LazyModel, Metric, ModelFn
from alignkit.eval.model_spec import ModelSpec
from alignkit.eval.prompt_sets import load_prompt_set
from alignkit.eval.registries import METRICS


@dataclass
class HeldoutOptions:
    card: str  # a dataset card (or .jsonl file) whose rows carry a reference answer
    split: str = "test"
    max_samples: int = 64


@dataclass
class PerplexityOptions:
    heldout: HeldoutOptions | None = None
    reference_model: str | None = None
    max_length: int = 1024
    stride: int | None = None
    batch_size: int = 8

    def limit_rows(self, size) -> None:
        if self.heldout is not None:
            self.heldout.max_samples = size(self.heldout.max_samples)


@METRICS.register("perplexity")
class PerplexityMetric(Metric):
    options = PerplexityOptions

    def _ppl(
        self, ctx: EvalContext, spec: ModelSpec, model_fn: ModelFn, prompts: list, completions: list, desc: str
    ) -> dict[str, float]:
        """Perplexity of the rows under ``spec``'s model, rows scored before reused (alignkit.eval.score_cache)."""
        from alignkit.eval.perplexity import perplexity_summary
        from alignkit.eval.score_cache import cached_completion_nlls

        o = self.opts
        nll, count = cached_completion_nlls(
            spec, model_fn, prompts, completions, o.max_length, o.stride, o.batch_size, desc, ctx.use_cache
        )
        return perplexity_summary(nll, count)

    def prepare(self, ctx: EvalContext) -> None:
        from alignkit.eval.suite import PromptSet

        self.heldout = None
        h = self.opts.heldout
        if h is not None:
            ps = PromptSet(name="heldout", card=h.card, split=h.split, max_prompts=h.max_samples)
            self.heldout = load_prompt_set(ps)
            if self.heldout.completions is None:
                raise AlignkitError(
                    f"suite {ctx.suite.path}: held-out card '{h.card}' has rows without a reference answer"
                )

    def with_model(self, ctx: EvalContext, spec: ModelSpec, model_fn: ModelFn) -> None:
        if self.heldout is not None:
            scoring = getattr(model_fn, "spec", spec)  # the harness's LazyModel scores in the suite's precision
            ctx.per_model[spec.name]["perplexity_heldout"] = self._ppl(
                ctx, scoring, model_fn, self.heldout.prompts, self.heldout.completions, f"held-out ppl {spec.name}"
            )

    def score(self, ctx: EvalContext) -> None:
        ref = self.opts.reference_model
        if ref in (None, "none"):
            return
        from alignkit.models import resolve_model_path

        base = ctx.specs[0]
        ref_spec = (
            base.without_adapter("reference") if ref == "base" else ModelSpec("reference", resolve_model_path(ref))
        ).with_precision(ctx.suite.precision)
        lazy = LazyModel(ref_spec)  # loaded only if some response is not scored yet
        for spec in ctx.specs:
            for name, pd in ctx.data.items():
                responses = ctx.gens[spec.name][name].responses
                ppl = self._ppl(ctx, ref_spec, lazy, pd.prompts, responses, f"response ppl {spec.name}/{name}")
                ctx.set_metrics(spec.name, name)["perplexity_responses"] = {**ppl, "reference_model": ref_spec.base}
        lazy.release()
