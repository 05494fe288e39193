"""The suite's judges by name (:data:`alignkit.eval.registries.JUDGES`): ``rm``, ``llm`` and ``grader``.

A builder is ``builder(win_rate_options, ctx, prompt_data) -> SuiteJudge | None``; ``None`` means the judge does
not apply to that prompt set (no reward model available, an ungraded set), and the win-rate metric leaves it out
there. Every judge built here follows :class:`~alignkit.eval.judges.PairwiseJudge`; what is special about one
(the LLM judge's two orders) lives in its class, not in the harness.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from alignkit.eval.judges import GraderJudge, PairwiseJudge, PairwiseLLMJudge, RewardModelJudge, hf_preference_fn
from alignkit.eval.metric_base import EvalContext
from alignkit.eval.model_spec import ModelSpec
from alignkit.eval.prompt_sets import PromptData
from alignkit.eval.registries import JUDGES


@dataclass
class SuiteJudge:
    judge: PairwiseJudge
    max_rows: int | None = None  # judge only the first rows of each prompt set (a costly judge); None: all


@JUDGES.register("rm")
def reward_model_judge(opts: Any, ctx: EvalContext, pd: PromptData) -> SuiteJudge | None:
    """Reward-score difference under ``rm_score``'s reward model (its memoized scores are reused)."""
    if ctx.reward_scorer is None:
        return None
    return SuiteJudge(RewardModelJudge(ctx.reward_scorer, tie_band=opts.tie_band))


@JUDGES.register("grader")
def grader_judge(opts: Any, ctx: EvalContext, pd: PromptData) -> SuiteJudge | None:
    """The prompt set's grader on both answers; graded prompt sets only."""
    if pd.references is None:
        return None
    from alignkit.plugins.graders import get_grader

    return SuiteJudge(GraderJudge(get_grader(pd.spec.grader), tie_band=opts.tie_band))


def judge_model_spec(ref: str, runs_root: Any) -> ModelSpec:
    """The LLM judge's model: ``run:NAME`` (the trained model of ``<runs_root>/NAME``), a path, alias or hub id."""
    from pathlib import Path

    if ref.startswith("run:"):
        from alignkit.eval.model_spec import run_specs

        trained = run_specs(Path(runs_root) / ref[len("run:") :])[1]
        return ModelSpec(**{**vars(trained), "name": "judge"})
    from alignkit.models import resolve_model_path

    return ModelSpec("judge", resolve_model_path(ref))


@JUDGES.register("llm")
def llm_judge(opts: Any, ctx: EvalContext, pd: PromptData) -> SuiteJudge:
    """A chat model asked "1 or 2?" in both answer orders (:class:`PairwiseLLMJudge`); it reads two full answers per
    order, the costliest judge, so ``llm_max_prompts`` may cap its rows. The model loads once per eval."""
    model, tok = ctx.aux_model(judge_model_spec(opts.llm_judge, ctx.runs_root))
    judge = PairwiseLLMJudge(hf_preference_fn(model, tok, batch_size=opts.batch_size))
    return SuiteJudge(judge, max_rows=opts.llm_max_prompts)
