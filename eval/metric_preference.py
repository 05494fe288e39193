"""The ``preference`` metric: held-out chosen/rejected pairs, scored by each evaluated model while it is loaded.

Length-normalized log-likelihood accuracy for every model, and the DPO implicit reward for DPO runs (``beta`` from
``run.json``). Pair log-probs are cached per weights identity, so a trained model's reference pass reuses the base
model's pass from the same eval (the base *is* the reference of an adapter or a full fine-tune).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from alignkit.errors import AlignkitError
from alignkit.eval.metric_base import EvalContext, LazyModel, Metric, ModelFn
from alignkit.eval.model_spec import ModelSpec, spec_key
from alignkit.eval.prompt_sets import load_rows
from alignkit.eval.registries import METRICS

UNDEFINED_IMPLICIT_REWARD = (
    "not a DPO policy: with itself as the reference every implicit reward is 0, so accuracy and margin would read 0"
)


@dataclass
class PreferenceOptions:
    card: str  # a dataset card (or .jsonl file) of prompt/chosen/rejected rows
    split: str = "test"
    max_pairs: int = 64
    batch_size: int = 8
    max_length: int = 1024

    def limit_rows(self, size) -> None:
        self.max_pairs = size(self.max_pairs)


@METRICS.register("preference")
class PreferenceMetric(Metric):
    options = PreferenceOptions

    def prepare(self, ctx: EvalContext) -> None:
        o = self.opts
        rows = load_rows(o.card, o.split, o.max_pairs)
        missing = {"prompt", "chosen", "rejected"} - set(rows[0] if rows else {})
        if not rows or missing:
            raise AlignkitError(f"preference card '{o.card}': needs prompt/chosen/rejected rows, missing {missing}")
        self.columns = [r["prompt"] for r in rows], [r["chosen"] for r in rows], [r["rejected"] for r in rows]
        self.pair_cache: dict[str, Any] = {}

    def _logps(
        self, ctx: EvalContext, spec: ModelSpec, model_fn: ModelFn, desc: str, disable_adapter: bool = False
    ) -> dict[str, Any]:
        """:func:`alignkit.eval.preference.pair_logps` under ``spec``'s model, rows scored before reused
        (:mod:`alignkit.eval.score_cache`); ``disable_adapter``: with its PEFT adapter off (the implicit reference)."""
        from alignkit.eval.preference import pair_logps_from
        from alignkit.eval.score_cache import cached_completion_nlls

        o = self.opts

        def nlls(prompts, completions):
            return cached_completion_nlls(
                spec,
                model_fn,
                prompts,
                completions,
                max_length=o.max_length,
                batch_size=o.batch_size,
                desc=desc,
                use_cache=ctx.use_cache,
                disable_adapter=disable_adapter,
            )

        return pair_logps_from(nlls, *self.columns)

    def with_model(self, ctx: EvalContext, spec: ModelSpec, model_fn: ModelFn) -> None:
        from alignkit.eval.preference import preference_from_logps

        scoring = getattr(model_fn, "spec", spec)  # the harness's LazyModel scores in the suite's precision
        policy = self._logps(ctx, scoring, model_fn, f"preference {spec.name}")
        self.pair_cache[spec_key(spec)] = policy
        beta = spec.beta if spec.trainer == "dpo" else None
        if spec.trainer == "dpo" and beta is None:
            ctx.notes.append(f"{spec.name}: DPO run without 'beta' in run.json; implicit reward skipped")
        ref = None
        if beta is not None:
            ref = self.pair_cache.get(spec_key(spec.without_adapter()))
            if ref is None and spec.adapter is not None:  # the base with the adapter disabled
                ref = self._logps(ctx, scoring.without_adapter(), model_fn, f"reference {spec.name}", True)
            elif ref is None:  # full fine-tune: the reference is a separate checkpoint
                ref_lazy = LazyModel(scoring.without_adapter("reference"))
                ref = self._logps(ctx, ref_lazy.spec, ref_lazy, f"reference {spec.name}")
                ref_lazy.release()
        result = preference_from_logps(policy, ref, beta)
        if spec.trainer != "dpo" and any(s.trainer == "dpo" for s in ctx.specs):  # say why it is missing here
            result["implicit_reward"] = {"undefined": UNDEFINED_IMPLICIT_REWARD}
        ctx.per_model[spec.name]["preference"] = result
