"""``evaluate`` module: reward-model score of responses (wraps :func:`alignkit.eval.rm_score.load_reward_scorer` and
:func:`alignkit.eval.rm_score.score_summary`, as the eval's ``rm_score`` metric)."""

from __future__ import annotations

import datasets
import evaluate

from alignkit.errors import AlignkitError
from alignkit.eval.rm_score import load_reward_scorer, resolve_reward_model, score_summary

_DESCRIPTION = """Mean reward-model score of (prompt, response) pairs with a 95% percentile-bootstrap interval, and
every score. The reward model is any sequence-classification checkpoint with one label (plus an optional PEFT
adapter), or an alignkit reward run (run:NAME).
Each pair is chat-templated as the eval does (alignkit.eval.rm_score)."""

_CITATION = ""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list[str]): the responses.
    prompts (list[str]): the user turn each response answers.
    model (str): a reward model directory or hub id, or run:NAME (<runs_root>/NAME, a finished reward run).
    adapter (str): a PEFT adapter directory on top of `model` (not with run:NAME, whose adapter is used).
    runs_root (str): where run:NAME lives (default "runs").
    batch_size (int), max_length (int): scoring batch and token limit (defaults 8, 1024, as the eval suite's).
Returns:
    n, mean, std, ci_low, ci_high, scores.
Example:
    >>> m = evaluate.load("eval/metrics/rm_score")
    >>> m.compute(prompts=["Hi"], predictions=["Hello!"], model="run:rm-smol")["mean"]
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class RmScore(evaluate.Metric):
    """Reward-model score as an ``evaluate.Metric``; the columns are ``predictions`` and ``prompts``."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("string"), "prompts": datasets.Value("string")}),
        )

    def _compute(
        self,
        predictions: list[str],
        prompts: list[str],
        model: str | None = None,
        adapter: str | None = None,
        runs_root: str = "runs",
        batch_size: int = 8,
        max_length: int = 1024,
    ) -> dict:
        if not model:
            raise AlignkitError("model: the rm_score module needs a reward model (a path, hub id or run:NAME)")
        if model.startswith("run:"):
            resolved = resolve_reward_model(model, runs_root)
            if resolved is None:
                raise AlignkitError(f"model: '{model}' is not a finished reward run under {runs_root}/")
            model, adapter = resolved
        scorer = load_reward_scorer(model, adapter, batch_size=batch_size, max_length=max_length)
        scores = scorer(list(prompts), list(predictions))
        return {**score_summary(scores), "scores": scores}
