"""``evaluate`` module: grader accuracy of responses against reference answers (wraps
:func:`alignkit.eval.metric_responses.grader_accuracy`)."""

from __future__ import annotations

import datasets
import evaluate

from alignkit.eval.metric_responses import grader_accuracy

_DESCRIPTION = """Share of responses an alignkit grader accepts against the reference answer (a grader may give partial
credit, e.g. edit distance: the mean score then), with a 95% percentile-bootstrap interval. Computed by
alignkit.eval.metric_responses.grader_accuracy, the eval report's grader_accuracy."""

_CITATION = ""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list[str]): the responses.
    references (list[str]): one reference answer per response.
    grader (str): a grader name of alignkit.plugins.graders (math_answer, exact_match, contains, edit_distance).
Returns:
    n, mean (the accuracy), std, ci_low, ci_high.
Example:
    >>> m = evaluate.load("eval/metrics/grader_accuracy")
    >>> m.compute(predictions=["It is 12.", "13"], references=["12", "12"], grader="math_answer")["mean"]
    0.5
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class GraderAccuracy(evaluate.Metric):
    """Grader accuracy as an ``evaluate.Metric``; the columns are ``predictions`` and ``references``."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions: list[str], references: list[str], grader: str = "math_answer") -> dict:
        return grader_accuracy(grader, list(predictions), list(references))
