"""Markdown sections of ``report.md`` about honesty: the goals table, win rates with their judges, judged replies and
metrics that cannot move. Pure string work on the report dict (:func:`alignkit.eval.harness.run_eval`).
"""

from __future__ import annotations

import math
from typing import Any


def fmt(x: Any) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if isinstance(x, float):
        return f"{x:.3f}" if abs(x) < 1000 else f"{x:.1f}"
    return str(x)


def cell(node: Any, key: str | None, ci: bool = True) -> str:
    """``value [low, high]`` when the node carries an interval, else the bare value."""
    if node is None:
        return "–"
    if key is None or not isinstance(node, dict):
        return fmt(node)
    value = node.get(key)
    if ci and "ci_low" in node:
        return f"{fmt(value)} [{fmt(node['ci_low'])}, {fmt(node['ci_high'])}]"
    return fmt(value)


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out + [""]


def _share(x: float | None) -> str:
    return "–" if x is None else f"{x:.0%}"


def goals_section(goals: dict[str, Any] | None) -> list[str]:
    """ "Does alignment work?": one row per goal of :class:`alignkit.eval.goals.Goals`, met or missed."""
    if not goals:
        return []
    judge = goals.get("judge") or {}
    by = f"judge `{judge.get('model')}`" if judge else "no judge"
    lines = [
        "## Does alignment work?",
        "",
        f"`{goals['comparison']}` on prompt set `{goals['prompt_set']}`, {by}: {goals['met']} of {goals['of']} goals "
        "met (issue 12; `report.json` `goals`).",
        "",
    ]
    rows = []
    for r in goals["rows"]:
        state = r["status"] if r["status"] in ("met", "unknown") else f"**{r['status']}**"
        state += f" ({r['why']})" if r["why"] else ""
        rows.append([r["label"], fmt(r["value"]), f"{r['op']} {r['goal']:g}", state])
    return lines + table(["goal", "value", "target", "status"], rows)


def _saw(judge: dict[str, Any]) -> str:
    saw = judge.get("saw_training_prompts")
    if saw is True:
        return f"**yes** ({judge.get('shared_prompt_texts', 0)} prompts)"
    return "no" if saw is False else "unknown"


def _accuracy(judge: dict[str, Any]) -> str:
    acc = judge.get("heldout_accuracy") or {}
    if acc.get("value") is None:
        return "n/a" if not judge.get("trained", True) else "not measured"
    return f"{cell(acc, 'value')} (n={acc.get('n')}, `{acc.get('card')}` {acc.get('split')})"


def _agreement(r: dict[str, Any]) -> str:
    parts = []
    if "order_agreement" in r:
        parts.append(f"answer orders agree {fmt(r['order_agreement'])} (n={r['raw']['n']})")
    agree = r.get("agreement_with_grader")
    if agree:
        text = f"with grader {fmt(agree['value'])} (n={agree['n']})"
        if agree.get("decisive_n"):
            text += f", {fmt(agree['decisive_value'])} where the grader decides (n={agree['decisive_n']})"
        parts.append(text)
    return "; ".join(parts) or "–"


def win_rate_section(report: dict[str, Any]) -> list[str]:
    """Every win rate with its judge: who, whether it saw a training prompt, its held-out pair accuracy, agreement;
    bold caveats where a judge is the proxy, saw training prompts, or trained on the prompts it judges."""
    if not report["win_rates"]:
        return []
    lines = ["## Win rates (vs the baseline; > 0.5 means the model wins, a tie counts ½)", ""]
    rows, caveats, details, seen = [], {}, {}, {}
    for comp, sets in report["win_rates"].items():
        for ps, judges in sets.items():
            for name, r in judges.items():
                raw, lc, judge = r["raw"], r["lc"], r.get("judge") or {}
                who = f"{name}: `{judge['model']}`" if judge.get("model") else name
                if judge.get("same_as_proxy"):
                    who += " (**= proxy**)"
                    caveats[judge["model"]] = (
                        f"**Caveat: the {name} judge `{judge['model']}` is the same model as the proxy "
                        "(`metrics.rm_score.reward_model`, the scorer that labels training pairs): a judge grading "
                        "its own pupil. Its win rates are not held-out evidence; set `win_rate.rm_judge` to a "
                        "held-out reward model.**"
                    )
                if judge.get("saw_training_prompts") is True:
                    caveats[(judge["model"], comp)] = (
                        f"**Caveat: judge `{judge['model']}` saw training prompts of `{comp}`: "
                        f"{judge.get('saw_training_detail')}.**"
                    )
                if judge.get("eval_prompts_in_judge_training"):
                    caveats[(judge["model"], ps)] = (
                        f"**Caveat: judge `{judge['model']}` trained on {judge['eval_prompts_in_judge_training']} of "
                        f"the {raw['n']} `{ps}` prompts it judges here.**"
                    )
                if judge.get("model"):
                    seen[judge["model"]] = judge
                    details[(judge["model"], comp)] = judge.get("saw_training_detail")
                rows.append(
                    [
                        comp,
                        ps,
                        who,
                        _saw(judge) if judge else "–",
                        _accuracy(judge) if judge else "–",
                        cell(raw, "win_rate"),
                        cell(lc, "lc_win_rate"),
                        f"{raw['wins']}/{raw['ties']}/{raw['losses']}",
                        _agreement(r),
                    ]
                )
    header = ["comparison", "prompt set", "judge", "judge saw training prompts", "judge held-out pair accuracy"]
    lines += table([*header, "win rate", "LC win rate", "W/T/L", "judge agreement"], rows)
    lines += [c + "\n" for c in caveats.values()]
    if seen:
        lines += ["Judges (training prompts compared by id and by prompt text with every run behind the data):", ""]
        for model, judge in seen.items():
            acc = judge.get("heldout_accuracy") or {}
            how = _accuracy(judge) if acc.get("value") is not None else f"not measured: {acc.get('reason', '?')}"
            lines.append(f"- `{model}` ({judge.get('kind')}): held-out pair accuracy {how}.")
            for (m, comp), text in details.items():
                if m == model and text:
                    lines.append(f"  - saw training prompts of `{comp}`? {text}")
        lines.append("")
    return lines


def replies_section(report: dict[str, Any]) -> list[str]:
    """Share of replies cut at ``max_new_tokens`` (and stopped as loops, when the generations say) per model and
    prompt set: a judge should read whole replies."""
    metrics, sets = report["metrics"], [ps["name"] for ps in report["prompt_sets"]]
    names = [m["name"] for m in report["models"]]
    looping = any(metrics[n]["sets"][s].get("looping_rate") is not None for n in names for s in sets)
    rows = []
    for n in names:
        row = [n]
        for s in sets:
            m = metrics[n]["sets"][s]
            if looping:
                limit = m.get("limit_rate", m.get("truncated_rate"))  # no loop split for this set: all were cut
                text = f"{_share(limit)} / {_share(m.get('looping_rate'))}"
            else:
                text = _share(m.get("truncated_rate"))
            row.append(text)
        rows.append(row)
    what = "cut at max_new_tokens / stopped as looping" if looping else "cut at max_new_tokens"
    title = f"## Judged replies: share {what} (max_new_tokens={report['generation']['max_new_tokens']})"
    return [title, ""] + table(["model", *sets], rows)


def cannot_move_section(dead: list[dict[str, Any]], undefined: list[dict[str, Any]]) -> list[str]:
    """Metrics left out of the tables because they cannot move here, and metrics undefined for a model."""
    if not dead and not undefined:
        return []
    lines = ["## Metrics that cannot move here", ""]
    for d in dead:
        where = f" on `{d['prompt_set']}`" if d["prompt_set"] else ""
        lines.append(f"- {d['metric']}{where}: {fmt(d['value'])} for every model; cannot move here: {d['reason']}.")
    for u in undefined:
        lines.append(f"- {u['metric']} is undefined for `{u['model']}` (shown as n/a): {u['reason']}.")
    return lines + [""]
