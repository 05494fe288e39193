"""The suite's judges by name (:data:`alignkit.eval.registries.JUDGES`): ``rm``, ``llm`` and ``grader``.

A builder is ``builder(win_rate_options, ctx, prompt_data) -> SuiteJudge | None``; ``None`` means the judge does
not apply to that prompt set (no reward model available, an ungraded set), and the win-rate metric leaves it out
there. Every judge built here follows :class:`~alignkit.eval.judges.PairwiseJudge` and carries a
:class:`~alignkit.eval.judge_info.JudgeInfo` (who judges, and how well on its own held-out pairs), which the report
states beside every win rate.

The ``rm`` judge is ``win_rate.rm_judge`` when the suite names one: a reward model held out from training (the
proxy that labels training pairs is ``metrics.rm_score.reward_model``; DESIGN.md: a judge never grades its own
pupil). Without ``rm_judge`` it falls back to the proxy, and the report says so in bold.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignkit.errors import AlignkitError
from alignkit.eval.judge_info import JudgeInfo, heldout_pair_accuracy, not_measured
from alignkit.eval.judges import GraderJudge, PairwiseJudge, PairwiseLLMJudge, RewardModelJudge, hf_preference_fn
from alignkit.eval.metric_base import EvalContext
from alignkit.eval.model_spec import ModelSpec
from alignkit.eval.prompt_sets import PromptData
from alignkit.eval.registries import JUDGES


@dataclass
class SuiteJudge:
    judge: PairwiseJudge
    max_rows: int | None = None  # judge only the first rows of each prompt set (a costly judge); None: all
    info: JudgeInfo | None = None
    scorer: Callable[..., list[float]] | None = None  # a reward-model judge's (memoized) scorer, for its scores


def _run_dir(ref: str, runs_root: Any) -> str | None:
    return str(Path(runs_root) / ref[len("run:") :]) if ref.startswith("run:") else None


def _run_card(run_dir: str | None) -> str | None:
    """The dataset card a run trained on (its ``run.json`` ``dataset``), or None."""
    from alignkit.runs import read_run

    if run_dir is None:
        return None
    try:
        return (read_run(Path(run_dir)) or {}).get("dataset")
    except AlignkitError:
        return None


def _rm_judge(opts: Any, ctx: EvalContext) -> SuiteJudge | None:
    """Load the rm judge once per eval: ``rm_judge``, else the proxy's (memoized) scorer; measure its held-out
    pair accuracy on its own card's test split."""
    from alignkit.eval.metric_rm_score import MemoScorer
    from alignkit.eval.rm_score import resolve_reward_model
    from alignkit.eval.score_cache import reward_scorer

    rm_score = ctx.suite.metric("rm_score")
    proxy = rm_score.reward_model if rm_score is not None else None
    ref = opts.rm_judge or proxy
    if ref is None:
        ctx.notes.append("rm judge skipped: the suite names no reward model (win_rate.rm_judge or rm_score)")
        return None
    resolved = resolve_reward_model(ref, ctx.runs_root)
    if resolved is None:
        if opts.rm_judge:  # the proxy's absence is already noted by rm_score
            ctx.notes.append(f"rm judge skipped: reward model '{ref}' is not available (no finished run)")
        return None
    same = proxy is not None and (ref == proxy or resolve_reward_model(proxy, ctx.runs_root) == resolved)
    if same and ctx.reward_scorer is not None:
        scorer = ctx.reward_scorer
    else:
        size = dict(batch_size=rm_score.batch_size, max_length=rm_score.max_length) if rm_score else {}
        scorer = MemoScorer(reward_scorer(resolved, ref, ctx.suite.precision, use_cache=ctx.use_cache, **size))
    run_dir = _run_dir(ref, ctx.runs_root)
    card = _run_card(run_dir)
    if card is None:
        accuracy = not_measured(f"'{ref}' has no run metadata naming its dataset card, so no held-out pairs")
    else:
        try:
            identity = ModelSpec("judge", resolved[0], resolved[1], precision=ctx.suite.precision).identity()
            accuracy = heldout_pair_accuracy(scorer, card, "test", opts.heldout_pairs, identity)
        except (AlignkitError, OSError, ValueError, KeyError) as exc:  # a card that cannot load: say why instead
            accuracy = not_measured(f"card '{card}' test split could not be scored ({type(exc).__name__}: {exc})")
    info = JudgeInfo("rm", ref, "reward model", run_dir, proxy=proxy, same_as_proxy=same, heldout_accuracy=accuracy)
    return SuiteJudge(RewardModelJudge(scorer, tie_band=opts.tie_band), info=info, scorer=scorer)


@JUDGES.register("rm")
def reward_model_judge(opts: Any, ctx: EvalContext, pd: PromptData) -> SuiteJudge | None:
    """Reward-score difference under ``rm_judge`` (else ``rm_score``'s proxy model, whose scores are reused)."""
    if "rm" not in ctx.judges:
        ctx.judges["rm"] = _rm_judge(opts, ctx)
    return ctx.judges["rm"]


@JUDGES.register("grader")
def grader_judge(opts: Any, ctx: EvalContext, pd: PromptData) -> SuiteJudge | None:
    """The prompt set's grader on both answers; graded prompt sets only."""
    if pd.references is None:
        return None
    from alignkit.plugins.graders import get_grader

    info = JudgeInfo(
        "grader",
        f"grader:{pd.spec.grader}",
        "grader",
        trained=False,
        heldout_accuracy=not_measured("a rule against the reference answer; nothing trained"),
    )
    return SuiteJudge(GraderJudge(get_grader(pd.spec.grader), tie_band=opts.tie_band), info=info)


def judge_model_spec(ref: str, runs_root: Any) -> ModelSpec:
    """The LLM judge's model: ``run:NAME`` (the trained model of ``<runs_root>/NAME``), a path, alias or hub id."""
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
    model, tok = ctx.aux_model(judge_model_spec(opts.llm_judge, ctx.runs_root).with_precision(ctx.suite.precision))
    judge = PairwiseLLMJudge(hf_preference_fn(model, tok, batch_size=opts.batch_size))
    info = JudgeInfo(
        "llm",
        opts.llm_judge,
        "LLM",
        _run_dir(opts.llm_judge, ctx.runs_root),
        heldout_accuracy=not_measured("not measured for an LLM judge; see its order agreement"),
    )
    return SuiteJudge(judge, max_rows=opts.llm_max_prompts, info=info)
