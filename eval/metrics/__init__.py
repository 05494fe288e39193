"""Local Hugging Face ``evaluate`` modules wrapping alignkit's eval maths: distinct-n, self-BLEU, repetition rate,
raw and length-controlled win rate, grader accuracy, reward-model score and perplexity.

For code that already speaks ``evaluate``::

    import evaluate
    from alignkit.eval.metrics import module_path

    distinct = evaluate.load(module_path("distinct_n"))
    distinct.compute(predictions=["a b c", "a b d"], n=2)   # {"distinct_2": 0.75, "distinct_2_per_response": 1.0}

Each module is a thin wrapper: the numbers come from the functions the harness calls (:mod:`alignkit.eval.diversity`,
:mod:`alignkit.eval.winrate`, :mod:`alignkit.eval.rm_score`, :mod:`alignkit.eval.perplexity`,
:func:`alignkit.eval.metric_responses.grader_accuracy`), so they are identical to the report's. Loading is
offline: ``evaluate.load`` of a local directory copies the script into its module cache and never reaches the hub.
"""

from __future__ import annotations

from pathlib import Path

from alignkit.errors import AlignkitError

METRICS_DIR = Path(__file__).resolve().parent
MODULES = (
    "distinct_n",
    "self_bleu",
    "lc_win_rate",
    "win_rate",
    "repetition_rate",
    "grader_accuracy",
    "rm_score",
    "perplexity",
)


def module_path(name: str) -> str:
    """Directory of the local ``evaluate`` module ``name``, ready for ``evaluate.load``."""
    if name not in MODULES:
        raise AlignkitError(f"evaluate module '{name}' is not one of {list(MODULES)}")
    return str(METRICS_DIR / name)
