"""The ``rm_score`` metric: every response scored by one reward model, with a bootstrap interval per prompt set.

The reward model is a checkpoint path, a hub id, or ``run:NAME`` (a reward run under the runs root). A missing
``run:NAME`` skips the metric with a note, unless the suite sets ``train_missing`` (``true``: the recipe called NAME;
or a recipe name/path): then the run is a prerequisite of the suite (:meth:`RmScoreOptions.required_runs`), which
``alignkit train`` (or ``alignkit eval --train-missing``) trains before evaluating. The eval itself never trains.

The scorer is memoized by (prompt, response), so the ``rm`` judge (:mod:`alignkit.eval.judge_builders`) reuses the
scores instead of running the reward model again.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignkit.errors import AlignkitError
from alignkit.eval.metric_base import EvalContext, Metric
from alignkit.eval.registries import METRICS
from alignkit.pipeline import RunNeed


@dataclass
class RmScoreOptions:
    reward_model: str  # a checkpoint path, a hub id, or run:NAME (= <runs root>/NAME)
    train_missing: bool | str | None = None  # run:NAME is a prerequisite: true = recipe NAME, or a recipe name/path
    batch_size: int = 8
    max_length: int = 1024

    def __post_init__(self) -> None:
        if not self.reward_model:
            raise AlignkitError("needs a 'reward_model' (a path or run:NAME)")
        self.reward_model = str(self.reward_model)
        if self.train_missing and not self.reward_model.startswith("run:"):
            raise AlignkitError(f"train_missing: needs reward_model run:NAME, got '{self.reward_model}'")

    def required_runs(self, where: str) -> list[RunNeed]:
        if not self.train_missing:
            return []
        name = self.reward_model[len("run:") :]
        recipe = self.train_missing if isinstance(self.train_missing, str) else name
        return [RunNeed(name, recipe, f"{where}.train_missing", trainer="reward")]


class MemoScorer:
    """Memoizes a ``scorer(prompts, completions)`` by (prompt, completion), so the RM judge reuses the RM scores."""

    def __init__(self, scorer: Callable[..., list[float]]):
        self.scorer, self.memo = scorer, {}
        self.__name__ = getattr(scorer, "__name__", "scorer")

    def __call__(self, prompts: list[Any], completions: list[str]) -> list[float]:
        keys = [(json.dumps(p, sort_keys=True), c) for p, c in zip(prompts, completions, strict=True)]
        todo = [i for i, k in enumerate(keys) if k not in self.memo]
        if todo:
            scores = self.scorer([prompts[i] for i in todo], [completions[i] for i in todo])
            self.memo.update({keys[i]: float(s) for i, s in zip(todo, scores, strict=True)})
        return [self.memo[k] for k in keys]


@METRICS.register("rm_score")
class RmScoreMetric(Metric):
    options = RmScoreOptions

    def prepare(self, ctx: EvalContext) -> None:
        from alignkit.eval.rm_score import resolve_reward_model

        ref = self.opts.reward_model
        self.resolved = resolve_reward_model(ref, ctx.runs_root)
        if self.resolved is None:
            run = Path(ctx.runs_root) / ref[len("run:") :]
            ctx.notes.append(
                f"rm_score and the rm judge skipped: reward model '{ref}' is not available ({run} has no finished "
                f"run); train it with `alignkit train {run.name}`"
            )

    def score(self, ctx: EvalContext) -> None:
        if self.resolved is None:
            return
        from alignkit.eval.rm_score import score_summary
        from alignkit.eval.score_cache import reward_scorer

        opts = self.opts
        scorer = reward_scorer(  # loads the reward model only for rows not scored before (alignkit.eval.score_cache)
            self.resolved,
            opts.reward_model,
            ctx.suite.precision,
            batch_size=opts.batch_size,
            max_length=opts.max_length,
            use_cache=ctx.use_cache,
        )
        ctx.reward_scorer = MemoScorer(scorer)
        for spec in ctx.specs:
            for name, pd in ctx.data.items():
                scores = ctx.reward_scorer(pd.prompts, ctx.gens[spec.name][name].responses)
                ctx.set_metrics(spec.name, name)["rm_score"] = {**score_summary(scores), "scores": scores}
