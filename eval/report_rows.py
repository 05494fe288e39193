"""The report's metric rows, and the rule that keeps dead metrics out of its tables (pure Python, no torch).

A :class:`Row` says where a metric sits in the report dict and, through ``bounds``, the range the metric can take.
:func:`cannot_move` applies one rule to every row: a metric whose value is *identical for every compared model and
sits at a bound of its range* cannot tell the models apart here (e.g. a preference accuracy of 0.000 for base and
trained alike: nothing either model does shows up in it), so the report prints it once, with that reason, instead of
as a table row. Rows without ``bounds`` are facts about the generations (truncation) or unbounded scores, never
flagged. A metric that is undefined for one model (the DPO implicit reward of a model that is not a DPO policy) carries
``{"undefined": reason}``, which :func:`undefined_metrics` collects.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

UNIT = (0.0, 1.0)


@dataclass(frozen=True)
class Row:
    label: str
    path: tuple[str, ...]  # keys inside a prompt set's (or a model's) metrics
    key: str | None = None  # the value inside the node; None: the node is the value
    bounds: tuple[float | None, float | None] | None = None  # the metric's (low, high) range; None: never flagged
    ci: bool = True  # print the node's interval beside the value (False when the interval belongs to another key)


SET_ROWS = [
    Row("RM score (proxy)", ("rm_score",), "mean"),
    Row("RM score (judge)", ("rm_judge_score",), "mean"),
    Row("Perplexity of responses (under reference)", ("perplexity_responses",), "perplexity", (1.0, None)),
    Row("Response length (tokens)", ("length_tokens",), "mean", (0.0, None)),
    Row("Did not end (cut at max_new_tokens or looping)", ("truncated_rate",)),
    Row("Cut at max_new_tokens (not looping)", ("limit_rate",)),
    Row("Stopped as looping", ("looping_rate",)),
    Row("Grader accuracy", ("grader_accuracy",), "mean", UNIT),
    Row("Distinct-1", ("diversity", "distinct_1"), None, UNIT),
    Row("Distinct-2", ("diversity", "distinct_2"), None, UNIT),
    Row("Distinct-3", ("diversity", "distinct_3"), None, UNIT),
    Row("Self-BLEU (lower = more diverse)", ("diversity", "self_bleu"), None, UNIT),
    Row("Repetition rate (3-gram)", ("diversity", "repetition_rate"), None, UNIT),
]
MODEL_ROWS = [
    Row("Held-out perplexity (reference answers)", ("perplexity_heldout",), "perplexity", (1.0, None)),
    Row("Preference accuracy, length-normalized logp", ("preference", "length_normalized"), "value", UNIT),
    Row(
        "Preference margin, length-normalized logp (nats/token, chosen - rejected)",
        ("preference", "length_normalized"),
        "mean_margin",
        ci=False,
    ),
    Row("Preference accuracy, DPO implicit reward", ("preference", "implicit_reward", "accuracy"), "value", UNIT),
    Row("DPO implicit reward margin", ("preference", "implicit_reward", "margin"), "mean"),
]


def get_path(d: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(d, dict) or d.get(key) is None:
            return None
        d = d[key]
    return d


def undefined_reason(d: Any, path: tuple[str, ...]) -> str | None:
    """The ``undefined`` reason of the first node on ``path`` that carries one."""
    for key in path:
        if not isinstance(d, dict):
            return None
        if "undefined" in d:
            return str(d["undefined"])
        d = d.get(key)
    return str(d["undefined"]) if isinstance(d, dict) and "undefined" in d else None


def row_value(node: Any, row: Row) -> float | None:
    value = node.get(row.key) if isinstance(node, dict) and row.key is not None else node
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def cannot_move(values: list[float | None], bounds: tuple[float | None, float | None] | None) -> str | None:
    """Why a metric cannot move for the compared models, or None: the same value for every model (at least two) and
    that value at a bound of the metric's range."""
    if bounds is None or len(values) < 2 or any(v is None or not math.isfinite(v) for v in values):
        return None
    first = values[0]
    if not all(math.isclose(v, first, rel_tol=0.0, abs_tol=1e-12) for v in values):
        return None
    for side, bound in zip(("lower", "upper"), bounds, strict=True):
        if bound is not None and math.isclose(first, bound, rel_tol=0.0, abs_tol=1e-12):
            return f"identical for every compared model and at its {side} bound ({bound:g}): it cannot tell them apart"
    return None


def _scopes(report: dict[str, Any]) -> list[tuple[str | None, list[Row], Any]]:
    """``(prompt set or None, rows, model name -> metrics node)`` for every table of the report."""
    metrics = report["metrics"]
    scopes: list[tuple[str | None, list[Row], Any]] = [
        (ps["name"], SET_ROWS, lambda n, s=ps["name"]: metrics[n]["sets"][s]) for ps in report["prompt_sets"]
    ]
    return scopes + [(None, MODEL_ROWS, lambda n: metrics[n])]


def cannot_move_metrics(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Every (row, prompt set) that :func:`cannot_move`: ``[{"metric", "prompt_set", "value", "reason"}]``."""
    names = [m["name"] for m in report["models"]]
    out = []
    for ps, rows, node_of in _scopes(report):
        for row in rows:
            values = [row_value(get_path(node_of(n), row.path), row) for n in names]
            reason = cannot_move(values, row.bounds)
            if reason is not None:
                out.append({"metric": row.label, "prompt_set": ps, "value": values[0], "reason": reason})
    return out


def undefined_metrics(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Every (row, model) whose metric is undefined for that model: ``[{"metric", "model", "reason"}]``."""
    names = [m["name"] for m in report["models"]]
    out = []
    for ps, rows, node_of in _scopes(report):
        for row in rows:
            for n in names:
                reason = undefined_reason(node_of(n), row.path)
                if reason is not None:
                    out.append({"metric": row.label, "prompt_set": ps, "model": n, "reason": reason})
    return out
