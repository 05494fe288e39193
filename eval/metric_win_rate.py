"""The ``win_rate`` metric: each model against the baseline (the first model), per prompt set, per judge.

Report shape: ``{"<model> vs <baseline>": {prompt_set: {judge: {"raw", "lc", "verdicts", "judge", ...extras}}}}``,
where ``raw`` is :func:`~alignkit.eval.winrate.win_rate` (> 0.5: the model wins), ``lc`` the length-controlled win
rate and ``judge`` what the report states beside it: who judged (:class:`~alignkit.eval.judge_info.JudgeInfo`), its
held-out pair accuracy, and whether it saw a training prompt of either compared model
(:mod:`alignkit.eval.provenance`). On a graded prompt set every other judge also carries
``agreement_with_grader`` (same pairs, same verdict). Judges are looked up by name in
:data:`~alignkit.eval.registries.JUDGES`.

The ``rm`` judge is ``rm_judge`` (held out from training) when set, else the proxy ``metrics.rm_score.reward_model``;
a held-out judge's own score of every response is kept too, as ``rm_judge_score`` beside the proxy's ``rm_score``
(the proxy rising while the judge does not is reward over-optimisation).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignkit.errors import AlignkitError
from alignkit.eval.judges import judge_pairs
from alignkit.eval.metric_base import EvalContext, Metric
from alignkit.eval.registries import JUDGES, METRICS
from alignkit.pipeline import RunNeed


@dataclass
class WinRateOptions:
    judges: list[str] = field(default_factory=lambda: ["rm", "llm", "grader"])  # names in registries.JUDGES
    rm_judge: str | None = None  # the rm judge: a path, hub id or run:NAME; None: rm_score's model (the proxy)
    heldout_pairs: int = 64  # test pairs of the rm judge's own card on which its pair accuracy is measured
    llm_judge: str = "smollm2-135m-instruct"  # a path, alias, hub id or run:NAME (a chat model)
    llm_max_prompts: int | None = None  # rows per prompt set the llm judge reads (it is the costliest)
    tie_band: float = 0.0  # score differences within +-tie_band are ties (rm and grader judges)
    batch_size: int = 8

    def __post_init__(self) -> None:
        if not isinstance(self.judges, list):
            raise AlignkitError(f"judges: must be a list of judge names, got {self.judges!r}")
        for name in self.judges:
            JUDGES.get(name)
        self.tie_band = float(self.tie_band)
        self.llm_judge = str(self.llm_judge)
        if self.rm_judge is not None:
            self.rm_judge = str(self.rm_judge)
        if self.heldout_pairs < 1:
            raise AlignkitError(f"heldout_pairs: must be >= 1, got {self.heldout_pairs}")

    def limit_rows(self, size) -> None:
        self.heldout_pairs = size(self.heldout_pairs)

    def required_runs(self, where: str) -> list[RunNeed]:
        needs = []
        if "rm" in self.judges and self.rm_judge and self.rm_judge.startswith("run:"):
            name = self.rm_judge[len("run:") :]
            needs.append(RunNeed(name, name, f"{where}.rm_judge", trainer="reward"))
        if "llm" in self.judges and self.llm_judge.startswith("run:"):
            name = self.llm_judge[len("run:") :]
            needs.append(RunNeed(name, name, f"{where}.llm_judge"))
        return needs


class _Lineages:
    """Training prompts per run directory, once per eval (:func:`~alignkit.eval.provenance.run_training_prompts`)."""

    def __init__(self, runs_root: Path):
        self.runs_root, self.cache = runs_root, {}

    def __call__(self, run_dir: str) -> Any:
        from alignkit.eval.provenance import run_training_prompts

        if run_dir not in self.cache:
            self.cache[run_dir] = run_training_prompts(run_dir, self.runs_root)
        return self.cache[run_dir]


def judge_facts(info: Any, compared: list[Any], prompts: list[Any], lineages: _Lineages) -> dict[str, Any]:
    """What the report states beside a win rate: the judge (``info``), whether it saw a training prompt of any of
    the ``compared`` specs' runs (a spec that is not a run counts only when it is the evaluated model), and how many
    of the set's eval ``prompts`` it trained on."""
    from alignkit.eval.provenance import Overlap, TrainingPrompts, overlap, prompt_key

    evaluated, *baseline = compared
    seen = None
    if not info.trained:
        result = Overlap(False, "a rule: it trained on nothing")
    elif info.run_dir is None:
        result = Overlap(None, f"unknown: '{info.model}' is not a run, so its training data is unknown")
    elif evaluated.run_dir is None:
        result = Overlap(None, f"unknown: '{evaluated.name}' is not a run, so its training data is unknown")
    else:
        judge = lineages(info.run_dir)
        theirs = TrainingPrompts()
        for spec in [evaluated, *baseline]:
            if spec.run_dir is not None:
                theirs.add(lineages(spec.run_dir))
        result = overlap(judge, theirs, info.model, " / ".join(s.name for s in compared if s.run_dir))
        if not judge.unknown:
            seen = sum(prompt_key({"prompt": p}) in judge.texts for p in prompts)
    held_out = not info.same_as_proxy and result.value is False
    return {
        **info.as_dict(),
        "saw_training_prompts": result.value,
        "saw_training_detail": result.detail,
        "shared_prompt_ids": result.shared_ids,
        "shared_prompt_texts": result.shared_texts,
        "eval_prompts_in_judge_training": seen,
        "held_out": held_out,
    }


@METRICS.register("win_rate")
class WinRateMetric(Metric):
    options = WinRateOptions

    def prepare(self, ctx: EvalContext) -> None:
        if len(ctx.specs) < 2:
            ctx.notes.append("win_rate skipped: it needs at least two models (a baseline and a model to compare)")

    def score(self, ctx: EvalContext) -> None:
        from alignkit.eval.rm_score import score_summary
        from alignkit.eval.winrate import length_controlled_win_rate, verdict_agreement, win_rate

        base = ctx.specs[0]
        lineages = _Lineages(ctx.runs_root)
        judges: dict[str, Any] = {}
        try:
            for spec in ctx.specs[1:]:
                by_set = ctx.win_rates.setdefault(f"{spec.name} vs {base.name}", {})
                for name, pd in ctx.data.items():
                    a, b = ctx.gens[spec.name][name], ctx.gens[base.name][name]
                    by_set[name] = {}
                    for jname in self.opts.judges:
                        built = JUDGES.get(jname)(self.opts, ctx, pd)
                        if built is None:
                            continue
                        rows = slice(0, built.max_rows)
                        refs = pd.references[rows] if pd.references is not None else None
                        result = judge_pairs(built.judge, pd.prompts[rows], a.responses[rows], b.responses[rows], refs)
                        ctx.notes += [f"{jname} judge on {name}: {note}" for note in result.notes]
                        entry = by_set[name][jname] = {
                            **result.extras,
                            "raw": win_rate(result.verdicts),
                            "lc": length_controlled_win_rate(result.verdicts, a.n_tokens[rows], b.n_tokens[rows]),
                            "verdicts": result.verdicts,
                        }
                        if built.info is not None:
                            entry["judge"] = judge_facts(built.info, [spec, base], pd.prompts[rows], lineages)
                            judges[jname] = built.info.as_dict()
                        if built.scorer is not None and built.info is not None and not built.info.same_as_proxy:
                            for model in (spec.name, base.name):
                                scores = built.scorer(pd.prompts, ctx.gens[model][name].responses)
                                ctx.set_metrics(model, name)["rm_judge_score"] = {
                                    **score_summary(scores),
                                    "judge": built.info.model,
                                    "scores": scores,
                                }
                    grader = by_set[name].get("grader")
                    for jname, entry in by_set[name].items():
                        if grader is not None and jname != "grader":
                            entry["agreement_with_grader"] = verdict_agreement(entry["verdicts"], grader["verdicts"])
            if judges:
                ctx.sections["judges"] = judges
        finally:
            ctx.release_aux_models()
