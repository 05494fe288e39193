"""Facts about every prompt set's responses (length, truncation, grader accuracy), and the ``diversity`` metric.

The facts need no suite key: every report shows how long the responses were, how many hit ``max_new_tokens``, and,
on a graded prompt set, how many the set's grader accepts. ``diversity`` (distinct-n, self-BLEU, repetition) is
enabled by its presence under ``metrics:``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from alignkit.eval.metric_base import EvalContext, Metric
from alignkit.eval.registries import METRICS
from alignkit.eval.stats import mean_std_ci


def response_stats(ctx: EvalContext) -> None:
    """``length_tokens``, ``truncated_rate`` (replies that did not end by themselves), with ``generation.stop_loops``
    its two parts ``limit_rate`` (cut at ``max_new_tokens``) and ``looping_rate`` (stopped by the loop stop), and
    (graded sets) ``grader_accuracy`` of every model on every set."""
    for spec in ctx.specs:
        for name, pd in ctx.data.items():
            gen, out = ctx.gens[spec.name][name], ctx.set_metrics(spec.name, name)
            out["length_tokens"] = mean_std_ci(gen.n_tokens)
            out["truncated_rate"] = float(np.mean(gen.truncated))
            # Replies cut by the loop stop (they count as truncated too): only detected when the suite turns it on.
            looping = getattr(gen, "looping", None)
            if looping is not None and ctx.suite.generation.stop_loops:
                out["looping_rate"] = float(np.mean(looping))
                out["limit_rate"] = float(
                    np.mean([c and not lp for c, lp in zip(gen.truncated, looping, strict=True)])
                )
            if pd.references is not None:
                out["grader_accuracy"] = grader_accuracy(pd.spec.grader, gen.responses, pd.references)


def grader_accuracy(grader: str, responses: list[str], references: list) -> dict[str, float]:
    """``{"n", "mean", "std", "ci_low", "ci_high"}`` of ``grader.score(response, reference)`` over the rows (the
    mean is the accuracy; a partial-credit grader's mean score)."""
    from alignkit.plugins.graders import get_grader

    scorer = get_grader(grader)
    return mean_std_ci([scorer.score(r, ref) for r, ref in zip(responses, references, strict=True)])


@dataclass
class DiversityOptions:
    repetition_n: int = 3  # n of the n-gram repetition rate


@METRICS.register("diversity")
class DiversityMetric(Metric):
    """Distinct-1/2/3, self-BLEU and n-gram repetition of each model's responses per prompt set
    (:func:`alignkit.eval.diversity.diversity_report`)."""

    options = DiversityOptions

    def score(self, ctx: EvalContext) -> None:
        from alignkit.eval.diversity import diversity_report

        for spec in ctx.specs:
            for name in ctx.data:
                responses = ctx.gens[spec.name][name].responses
                ctx.set_metrics(spec.name, name)["diversity"] = diversity_report(
                    responses, repetition_n=self.opts.repetition_n
                )
