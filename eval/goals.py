""" "Does alignment work?": the first compared pair (trained vs its start) against issue 12's goals, pure Python.

The goals live in one place, :class:`Goals`. :func:`goal_table` reads them off a report dict
(:func:`alignkit.eval.harness.run_eval`) and returns the rows ``report.md`` prints and ``report.json`` keeps under
``goals`` (``goals["figures"]`` is a flat ``{key: value}`` for benchmarks, e.g. ``bench/efficacy.py``'s
``default_win_rate`` is ``figures["win_rate"]``).

The figures, all on one prompt set (the first ungraded set the goal judge judged) unless noted::

    win_rate, win_ci_low   the goal judge's raw win rate and its 95% CI's lower bound
    lc_win_rate            its length-controlled win rate
    ppl_ratio              held-out perplexity (reference answers), trained / start      (model-level)
    distinct2_ratio        distinct-2 of the responses, trained / start
    length_ratio           mean response length in tokens, trained / start
    truncation             share of replies cut at max_new_tokens, the worse of the two models; with the suite's loop
                           stop on, replies stopped as looping are not in it (the judge saw the loop, and more
                           tokens would only repeat it): ``report.md`` prints them beside it

A goal is ``met`` or ``missed`` on its number; a win-rate goal that is met by a judge that is not verifiably held out
(the proxy, or one that saw a training prompt, or one whose training data is unknown) is ``unverified`` instead,
because "a judge never grades its own pupil" (DESIGN.md). A figure that could not be computed is ``unknown``.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Any

OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}


@dataclass(frozen=True)
class Goals:
    """Issue 12's bar for the default run against its starting model."""

    win_rate: float = 0.65  # held-out judge win rate >= this ...
    win_ci_low: float = 0.5  # ... with the 95% CI's lower bound > this
    lc_win_rate: float = 0.60  # >=
    ppl_ratio: float = 1.15  # held-out perplexity, trained / start <=
    distinct2_ratio: float = 0.90  # distinct-2, trained / start >=
    length_ratio: float = 1.2  # mean length (tokens), trained / start <=
    truncation: float = 0.20  # share of judged replies cut at max_new_tokens <
    judge: str = "rm"  # the judge whose win rate is the headline

    def checks(self) -> list[tuple[str, str, str, float, bool]]:
        """``(key, label, op, threshold, judged)`` per goal, in table order; ``judged``: the figure is a judge's."""
        return [
            ("win_rate", "Win rate vs start (held-out judge)", ">=", self.win_rate, True),
            ("win_ci_low", "Win rate, 95% CI lower bound", ">", self.win_ci_low, True),
            ("lc_win_rate", "LC win rate", ">=", self.lc_win_rate, True),
            ("ppl_ratio", "Held-out perplexity, trained / start", "<=", self.ppl_ratio, False),
            ("distinct2_ratio", "Distinct-2, trained / start", ">=", self.distinct2_ratio, False),
            ("length_ratio", "Mean length (tokens), trained / start", "<=", self.length_ratio, False),
            ("truncation", "Replies cut at max_new_tokens, loops apart (worse model)", "<", self.truncation, False),
        ]


GOALS = Goals()


def _get(d: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(d, dict) or d.get(key) is None:
            return None
        d = d[key]
    return d


def _cut_at_limit(set_metrics: Any) -> Any:
    """The share cut at max_new_tokens: ``limit_rate`` when the loop stop split it out, else ``truncated_rate``."""
    limit = _get(set_metrics, "limit_rate")
    return limit if limit is not None else _get(set_metrics, "truncated_rate")


def _number(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def _ratio(num: Any, den: Any) -> float | None:
    num, den = _number(num), _number(den)
    return None if num is None or den is None or den == 0 else num / den


def judged_set(report: dict[str, Any], comparison: str, judge: str) -> str | None:
    """The first ungraded prompt set that ``judge`` judged in ``comparison`` (else the first ungraded set)."""
    ungraded = [ps["name"] for ps in report["prompt_sets"] if not ps.get("graded")]
    judged = [ps for ps in ungraded if judge in (report["win_rates"].get(comparison, {}).get(ps) or {})]
    return (judged or ungraded or [None])[0]


def status(value: float | None, op: str, threshold: float) -> str:
    if value is None:
        return "unknown"
    return "met" if OPS[op](value, threshold) else "missed"


def _held_out_gap(judge: dict[str, Any] | None) -> str | None:
    """Why the goal judge is not verifiably held out, or None when it is."""
    if judge is None:
        return "no judge facts"
    if judge.get("same_as_proxy"):
        return f"the judge {judge.get('model')} is the proxy"
    saw = judge.get("saw_training_prompts")
    if saw is True:
        return f"the judge {judge.get('model')} saw training prompts"
    if saw is None:
        return f"whether the judge {judge.get('model')} saw training prompts is unknown"
    return None


def goal_table(report: dict[str, Any], goals: Goals = GOALS) -> dict[str, Any] | None:
    """The goals of the first compared pair (see the module docstring), or None without a comparison."""
    if len(report["models"]) < 2:
        return None
    start, trained = report["models"][0]["name"], report["models"][1]["name"]
    comparison = f"{trained} vs {start}"
    ps = judged_set(report, comparison, goals.judge)
    entry = _get(report["win_rates"], comparison, ps, goals.judge) if ps else None
    metrics = report["metrics"]
    sets = {m: _get(metrics, m, "sets", ps) if ps else None for m in (start, trained)}
    truncation = [_number(_cut_at_limit(sets[m])) for m in (start, trained)]
    figures = {
        "win_rate": _number(_get(entry, "raw", "win_rate")),
        "win_ci_low": _number(_get(entry, "raw", "ci_low")),
        "lc_win_rate": _number(_get(entry, "lc", "lc_win_rate")),
        "ppl_ratio": _ratio(
            _get(metrics, trained, "perplexity_heldout", "perplexity"),
            _get(metrics, start, "perplexity_heldout", "perplexity"),
        ),
        "distinct2_ratio": _ratio(
            _get(sets[trained], "diversity", "distinct_2"), _get(sets[start], "diversity", "distinct_2")
        ),
        "length_ratio": _ratio(
            _get(sets[trained], "length_tokens", "mean"), _get(sets[start], "length_tokens", "mean")
        ),
        "truncation": None if None in truncation else max(truncation),
    }
    judge = _get(entry, "judge")
    gap = _held_out_gap(judge) if entry is not None else None
    rows = []
    for key, label, op, threshold, judged in goals.checks():
        value = figures[key]
        state = status(value, op, threshold)
        why = None
        if value is None:
            why = f"no {goals.judge} judge win rate on an ungraded prompt set" if judged else "not measured"
        elif judged and state == "met" and gap is not None:
            state, why = "unverified", gap
        rows.append(
            {"key": key, "label": label, "value": value, "op": op, "goal": threshold, "status": state, "why": why}
        )
    return {
        "comparison": comparison,
        "trained": trained,
        "start": start,
        "prompt_set": ps,
        "judge": None if judge is None else {k: judge.get(k) for k in ("name", "model", "held_out")},
        "figures": figures,
        "rows": rows,
        "met": sum(r["status"] == "met" for r in rows),
        "of": len(rows),
    }
