"""The ``win_rate`` metric: each model against the baseline (the first model), per prompt set, per judge.

Report shape: ``{"<model> vs <baseline>": {prompt_set: {judge: {"raw", "lc", "verdicts", ...extras}}}}``, where
``raw`` is :func:`~alignkit.eval.winrate.win_rate` (> 0.5: the model wins) and ``lc`` the length-controlled win rate.
Judges are looked up by name in :data:`~alignkit.eval.registries.JUDGES`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from alignkit.errors import AlignkitError
from alignkit.eval.judges import judge_pairs
from alignkit.eval.metric_base import EvalContext, Metric
from alignkit.eval.registries import JUDGES, METRICS
from alignkit.pipeline import RunNeed


@dataclass
class WinRateOptions:
    judges: list[str] = field(default_factory=lambda: ["rm", "llm", "grader"])  # names in registries.JUDGES
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

    def required_runs(self, where: str) -> list[RunNeed]:
        if "llm" not in self.judges or not self.llm_judge.startswith("run:"):
            return []
        name = self.llm_judge[len("run:") :]
        return [RunNeed(name, name, f"{where}.llm_judge")]


@METRICS.register("win_rate")
class WinRateMetric(Metric):
    options = WinRateOptions

    def prepare(self, ctx: EvalContext) -> None:
        if len(ctx.specs) < 2:
            ctx.notes.append("win_rate skipped: it needs at least two models (a baseline and a model to compare)")

    def score(self, ctx: EvalContext) -> None:
        from alignkit.eval.winrate import length_controlled_win_rate, win_rate

        base = ctx.specs[0]
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
                        by_set[name][jname] = {
                            **result.extras,
                            "raw": win_rate(result.verdicts),
                            "lc": length_controlled_win_rate(result.verdicts, a.n_tokens[rows], b.n_tokens[rows]),
                            "verdicts": result.verdicts,
                        }
        finally:
            ctx.release_aux_models()
