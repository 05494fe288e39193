"""``evaluate`` module: perplexity of responses given their prompts, or of raw texts, under a causal LM (wraps
:func:`alignkit.eval.perplexity.completion_perplexity` and :func:`~alignkit.eval.perplexity.text_perplexity`, as the
eval's ``perplexity`` metric)."""

from __future__ import annotations

import datasets
import evaluate

from alignkit.errors import AlignkitError
from alignkit.eval.model_spec import ModelSpec, load_model
from alignkit.eval.perplexity import completion_perplexity, text_perplexity

_DESCRIPTION = """Token-weighted perplexity exp(sum NLL / sum tokens) with a 95% percentile-bootstrap interval over
texts. With prompts: only the response tokens are scored, after the chat-templated prompt (the eval's responses
perplexity); without: raw texts (the eval's held-out perplexity). Computed by alignkit.eval.perplexity."""

_CITATION = ""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list[str]): the responses (or raw texts without prompts).
    prompts (list[str]): optional keyword, the user turn each response answers (aligned with all predictions).
    model (str): a causal LM directory, embedded alias or hub id; adapter (str): an optional PEFT adapter on it.
    max_length (int), stride (int), batch_size (int): windowing and batching (defaults 1024, None, 4).
Returns:
    perplexity, mean_nll, n_tokens, n_texts, ci_low, ci_high.
Example:
    >>> m = evaluate.load("eval/metrics/perplexity")
    >>> m.compute(predictions=["Paris."], prompts=["Capital of France?"], model="smollm2-135m-instruct")
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Perplexity(evaluate.Metric):
    """Perplexity as an ``evaluate.Metric``; input column ``predictions``, for responses the ``prompts`` keyword."""

    def _info(self) -> evaluate.MetricInfo:
        # prompts is a keyword, not a column: it is optional, and a column would be required in every call
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("string")}),
        )

    def _compute(
        self,
        predictions: list[str],
        prompts: list[str] | None = None,
        model: str | None = None,
        adapter: str | None = None,
        max_length: int = 1024,
        stride: int | None = None,
        batch_size: int = 4,
    ) -> dict:
        if not model:
            raise AlignkitError("model: the perplexity module needs a causal LM (a path, embedded alias or hub id)")
        from alignkit.models import resolve_model_path

        lm, tokenizer = load_model(ModelSpec("perplexity", resolve_model_path(model), adapter))
        if prompts is not None and len(prompts) != len(predictions):
            raise AlignkitError(f"prompts: has {len(prompts)} rows but predictions has {len(predictions)}")
        if prompts is None:
            return text_perplexity(lm, tokenizer, list(predictions), max_length, stride, batch_size)
        return completion_perplexity(lm, tokenizer, list(prompts), list(predictions), max_length, stride, batch_size)
