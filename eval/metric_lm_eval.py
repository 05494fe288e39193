"""The ``lm_eval`` suite section: lm-eval tasks on every model (:func:`alignkit.eval.lm_eval_bridge.run_tasks`).

A failure of one model's tasks is noted in the report, never hidden, and the rest of the report is kept.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

from alignkit.errors import AlignkitError
from alignkit.eval.metric_base import EvalContext, Metric
from alignkit.eval.registries import METRICS


@dataclass
class LmEvalOptions:
    tasks: list[str] = field(default_factory=list)  # lm-eval task names (eval/tasks/ holds offline ones); [] = off
    limit: int | float | None = None
    batch_size: int | str = 8
    num_fewshot: int | None = field(default=None, metadata={"min": 0})  # 0 = zero-shot
    mode: Literal["peft", "merge"] = "peft"  # merge: the adapter merged into a temporary checkpoint


@METRICS.register("lm_eval")
class LmEvalMetric(Metric):
    options = LmEvalOptions
    section = "lm_eval"  # a top-level suite key, not one under metrics:

    def score(self, ctx: EvalContext) -> None:
        if not self.opts.tasks:
            return
        try:
            from alignkit.eval.lm_eval_bridge import run_tasks
        except ImportError as exc:
            ctx.notes.append(f"lm_eval skipped: the lm-eval bridge is unavailable ({exc})")
            return
        opts = {k: v for k, v in asdict(self.opts).items() if k != "tasks"}
        for spec in ctx.specs:
            try:
                ctx.per_model[spec.name]["lm_eval"] = run_tasks(spec.base, spec.adapter, list(self.opts.tasks), **opts)
            except AlignkitError as exc:  # keep the rest of the report; the failure is stated, never hidden
                ctx.notes.append(f"lm_eval FAILED for {spec.name}: {exc}")
