"""Render an eval result (the dict from :func:`alignkit.eval.harness.run_eval`) as files, in memory.

:func:`render_files` returns ``{filename: content}``:

- ``report.json``: everything, including ``goals`` (:mod:`alignkit.eval.goals`), ``cannot_move`` and ``undefined``
  (:mod:`alignkit.eval.report_rows`) and each win rate's ``judge``;
- ``report.md``: "Does alignment work?" (the goals, met or missed), tables with 95% bootstrap intervals (metrics that
  cannot move here are listed with their reason instead), win rates raw and length-controlled with their judges, the
  share of judged replies cut off (:mod:`alignkit.eval.report_sections`), sample generations side by side;
- ``metrics.png`` (bars with CI whiskers), ``lengths.png`` (response-length distributions);
- for a run directory, ``metrics.json`` (flat ``{"base": {...}, "trained": {...}, "win_rate": {...}, "goals": {...}}``
  for machines).

The caller writes them atomically; nothing here touches the disk, so a rendering error cannot leave half a report.
"""

from __future__ import annotations

import io
import json
import math
from typing import Any

from alignkit.eval.goals import goal_table
from alignkit.eval.report_rows import (
    MODEL_ROWS,
    SET_ROWS,
    Row,
    cannot_move_metrics,
    get_path,
    undefined_metrics,
    undefined_reason,
)
from alignkit.eval.report_sections import (
    cannot_move_section,
    cell,
    fmt,
    goals_section,
    replies_section,
    table,
    win_rate_section,
)


def _escape(text: str, limit: int = 600) -> str:
    text = text if len(text) <= limit else text[:limit] + " …"
    return text.replace("|", "\\|").replace("\r", "").replace("\n", "<br>") or "*(empty)*"


def _derived(report: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any] | None]:
    """``(cannot_move, undefined, goals)``: from the report when the harness computed them, else computed now."""
    dead = report["cannot_move"] if "cannot_move" in report else cannot_move_metrics(report)
    undefined = report["undefined"] if "undefined" in report else undefined_metrics(report)
    goals = report["goals"] if "goals" in report else goal_table(report)
    return dead, undefined, goals


def _metric_rows(rows: list[Row], node_of: Any, names: list[str], dead: set[str]) -> list[list[str]]:
    """Table rows: a computed metric keeps its row even when NaN (distinct-n of all-empty responses); a metric the
    suite did not ask for, or one that cannot move here (``dead`` labels), is left out; undefined cells read n/a."""
    out = []
    for row in rows:
        if row.label in dead:
            continue
        nodes = [get_path(node_of(n), row.path) for n in names]
        undefined = [undefined_reason(node_of(n), row.path) for n in names]
        if any(node is not None for node in nodes):
            cells = [
                "n/a" if why and node is None else cell(node, row.key, row.ci)
                for node, why in zip(nodes, undefined, strict=True)
            ]
            out.append([row.label, *cells])
    return out


def render_markdown(report: dict[str, Any], charts: list[str]) -> str:
    names = [m["name"] for m in report["models"]]
    metrics = report["metrics"]
    dead, undefined, goals = _derived(report)
    lines = [f"# Eval report: {' vs '.join(names)}", ""]
    lines += [f"Suite `{report['suite']['name']}` ({report['suite']['path']}), created {report['created']}.", ""]
    if report.get("run_dir"):
        lines += [f"Run directory: `{report['run_dir']}`.", ""]
    lines += ["Values are `point [95% bootstrap CI]` over prompts (pairs, texts).", ""]
    lines += table(
        ["model", "base", "adapter", "trainer"],
        [[m["name"], f"`{m['base']}`", f"`{m.get('adapter', '–')}`", m.get("trainer", "–")] for m in report["models"]],
    )
    g = report["generation"]
    lines += [
        f"Generation: max_new_tokens={g['max_new_tokens']}, do_sample={g['do_sample']}, "
        f"batch_size={g['batch_size']}, seed={g['seed']}.",
        "",
    ]
    if report.get("machine"):
        m = report["machine"]
        where = m["gpu_name"] or f"{m['cpu_model']} ({', '.join(m['cpu_flags']) or 'no vector flags'})"
        p = m["precision"]
        used = p["effective"] if p["effective"] == p["suite"] else f"{p['effective']} (no native bf16 here)"
        lines += [f"Machine: {where}, {m['threads']} threads. Scoring precision: {used}; replies decoded exact.", ""]
    lines += goals_section(goals)
    for ps in report["prompt_sets"]:
        lines += [f"## Prompt set `{ps['name']}` (card `{ps['card']}`, split `{ps['split']}`, n={ps['n']})", ""]
        gone = {d["metric"] for d in dead if d["prompt_set"] == ps["name"]}
        rows = _metric_rows(SET_ROWS, lambda n, s=ps["name"]: metrics[n]["sets"][s], names, gone)
        lines += table(["metric", *names], rows)
    rows = _metric_rows(MODEL_ROWS, lambda n: metrics[n], names, {d["metric"] for d in dead if not d["prompt_set"]})
    if rows:
        lines += ["## Model-level metrics", ""] + table(["metric", *names], rows)
    lines += cannot_move_section(dead, undefined)
    lines += win_rate_section(report)
    lines += replies_section(report)
    lm_rows = []
    for n in names:
        for task, task_metrics in (metrics[n].get("lm_eval") or {}).items():
            for metric, v in task_metrics.items():
                value = v.get("value") if isinstance(v, dict) else v
                err = v.get("stderr") if isinstance(v, dict) else None
                lm_rows.append([n, task, metric, fmt(value) + (f" ± {fmt(err)}" if err is not None else "")])
    if lm_rows:
        lines += ["## lm-eval", ""] + table(["model", "task", "metric", "value ± stderr"], lm_rows)
    if charts:
        lines += ["## Charts", ""] + [f"![{c}]({c})" for c in charts] + [""]
    if report["samples"]:
        lines += ["## Sample generations", ""]
        for s in report["samples"]:
            lines += [f"### {s['prompt_set']} #{s['index'] + 1}", "", "> " + _escape(s["prompt"], 400), ""]
            lines += table(["model", "response"], [[n, _escape(r)] for n, r in s["responses"].items()])
    if report["notes"]:
        lines += ["## Notes", ""] + [f"- {n}" for n in report["notes"]] + [""]
    lines += ["## Timing", "", "Wall seconds: " + ", ".join(f"{k} {v}" for k, v in report["timing_s"].items()), ""]
    if report.get("cpu_s"):
        lines += ["CPU seconds (all threads): " + ", ".join(f"{k} {v}" for k, v in report["cpu_s"].items()), ""]
    return "\n".join(lines)


def _bar_panels(report: dict[str, Any]) -> list[tuple[str, list[tuple[float, float | None, float | None]]]]:
    """``[(title, [(value, low, high) per model])]`` for every metric present for at least one model, except facts
    of the generations (truncation, looping: the replies table has them) and metrics that cannot move here."""
    names = [m["name"] for m in report["models"]]
    metrics = report["metrics"]
    dead, _, _ = _derived(report)
    panels = []
    first = report["prompt_sets"][0]["name"]
    gone = {(d["metric"], d["prompt_set"]) for d in dead}
    candidates = [
        (f"{row.label} [{first}]", lambda n, p=row.path: get_path(metrics[n]["sets"][first], p), row)
        for row in SET_ROWS
        if row.label not in ("Truncated at max_new_tokens", "Stopped as looping") and (row.label, first) not in gone
    ]
    candidates += [
        (row.label, lambda n, p=row.path: get_path(metrics[n], p), row)
        for row in MODEL_ROWS
        if (row.label, None) not in gone
    ]
    for title, getter, row in candidates:
        values = []
        for n in names:
            node = getter(n)
            if node is None:
                values.append((math.nan, None, None))
            elif isinstance(node, dict):
                ci = (node.get("ci_low"), node.get("ci_high")) if row.ci else (None, None)
                values.append((float(node[row.key]), *ci))
            else:
                values.append((float(node), None, None))
        if any(not math.isnan(v[0]) for v in values):
            panels.append((title, values))
    return panels


def render_charts(report: dict[str, Any]) -> dict[str, bytes]:
    """``metrics.png`` (one panel per metric, bars per model, CI whiskers; win rates vs the 0.5 line) and
    ``lengths.png`` (response-length histograms per prompt set)."""
    import matplotlib

    matplotlib.use("Agg")  # headless: never needs a display
    import matplotlib.pyplot as plt

    names = [m["name"] for m in report["models"]]
    colors = [f"C{i}" for i in range(len(names))]
    panels = _bar_panels(report)
    single = len(report["win_rates"]) == 1  # one comparison (a run): the label needs no model names
    wr = [
        (f"{ps}/{judge}" if single else f"{comp}\n{ps}/{judge}", r["raw"])
        for comp, sets in report["win_rates"].items()
        for ps, judges in sets.items()
        for judge, r in judges.items()
    ]
    n_panels = len(panels) + (1 if wr else 0)
    cols = min(4, max(1, n_panels))
    rows = max(1, math.ceil(n_panels / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False)
    for ax, (title, values) in zip(axes.flat, panels, strict=False):
        ys = [v[0] for v in values]
        ax.bar(range(len(names)), ys, color=colors)
        with_ci = [(i, v) for i, v in enumerate(values) if v[1] is not None and v[2] is not None]
        if with_ci:  # whiskers only where an interval exists (distinct-n and self-BLEU are corpus statistics)
            ax.errorbar(
                [i for i, _ in with_ci],
                [v[0] for _, v in with_ci],
                yerr=[[max(0.0, v[0] - v[1]) for _, v in with_ci], [max(0.0, v[2] - v[0]) for _, v in with_ci]],
                fmt="none",
                ecolor="k",
                capsize=4,
            )
        ax.set_xticks(range(len(names)), names, rotation=20, fontsize=8)
        ax.set_title(title, fontsize=9)
    if wr:
        ax = axes.flat[len(panels)]
        ys = [r["win_rate"] for _, r in wr]
        err = [
            [y - r["ci_low"] for y, (_, r) in zip(ys, wr, strict=True)],
            [r["ci_high"] - y for y, (_, r) in zip(ys, wr, strict=True)],
        ]
        ax.bar(range(len(wr)), ys, yerr=err, capsize=4, color="C2")
        ax.axhline(0.5, color="k", lw=0.8, ls="--")
        ax.set_ylim(0, 1)
        ax.set_xticks(range(len(wr)), [w[0] for w in wr], rotation=20, fontsize=6)
        ax.set_title("Win rate vs baseline", fontsize=9)
    for ax in list(axes.flat)[n_panels:]:
        ax.axis("off")
    fig.tight_layout()
    files = {"metrics.png": _png(fig, plt)}

    sets = list(next(iter(report["lengths"].values())).keys())
    fig, axes = plt.subplots(1, len(sets), figsize=(5 * len(sets), 3.2), squeeze=False)
    for ax, ps in zip(axes.flat, sets, strict=True):
        data = [report["lengths"][n][ps] for n in names]
        top = max((max(d) for d in data if d), default=1)
        bins = max(5, min(30, top))
        for n, d, c in zip(names, data, colors, strict=True):
            ax.hist(d, bins=bins, range=(0, top), histtype="step", lw=1.5, label=n, color=c)
        ax.set_xlabel("response length (tokens)")
        ax.set_ylabel("responses")
        ax.set_title(f"Length distribution [{ps}]", fontsize=9)
        ax.legend(fontsize=8)
    fig.tight_layout()
    files["lengths.png"] = _png(fig, plt)
    return files


def _png(fig: Any, plt: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def _flatten(node: Any, prefix: str, out: dict[str, Any]) -> None:
    """Numbers only, keys joined with '/'; per-row lists (scores, verdicts) stay in report.json."""
    if isinstance(node, dict):
        for k, v in node.items():
            _flatten(v, f"{prefix}/{k}" if prefix else str(k), out)
    elif isinstance(node, bool):
        out[prefix] = node
    elif isinstance(node, (int, float)):
        out[prefix] = None if isinstance(node, float) and math.isnan(node) else node


def metrics_json(report: dict[str, Any]) -> dict[str, Any]:
    """Flat machine-readable metrics: ``{"base": {...}, "trained": {...}, "win_rate": {...}}`` for a run
    (``{model name: {...}}`` otherwise), keys like ``chat/rm_score/mean``."""
    names = [m["name"] for m in report["models"]]
    roles = ["base", "trained"] if report.get("run_dir") and len(names) == 2 else names
    out: dict[str, Any] = {"suite": report["suite"]["name"], "models": dict(zip(roles, names, strict=True))}
    for role, name in zip(roles, names, strict=True):
        flat: dict[str, Any] = {}
        m = report["metrics"][name]
        _flatten({**{k: v for k, v in m.items() if k != "sets"}, **m["sets"]}, "", flat)
        out[role] = flat
    flat = {}
    for comp, sets in report["win_rates"].items():
        part: dict[str, Any] = {}
        for ps, judges in sets.items():
            for judge, r in judges.items():
                facts = r.get("judge") or {}
                extra = {
                    "judge_heldout_accuracy": (facts.get("heldout_accuracy") or {}).get("value"),
                    "judge_saw_training_prompts": facts.get("saw_training_prompts"),
                    "judge_same_as_proxy": facts.get("same_as_proxy"),
                    "agreement_with_grader": (r.get("agreement_with_grader") or {}).get("value"),
                    "order_agreement": r.get("order_agreement"),
                }
                _flatten({"raw": r["raw"], "lc": r["lc"], **extra}, f"{ps}/{judge}", part)
        prefix = "" if len(report["win_rates"]) == 1 else f"{comp}/"  # one comparison (a run): short keys
        flat.update({prefix + k: v for k, v in part.items()})
    out["win_rate"] = flat
    goals = _derived(report)[2]
    if goals:
        out["goals"] = dict(goals["figures"])
        out["goals_status"] = {r["key"]: r["status"] for r in goals["rows"]}
    return out


def render_files(report: dict[str, Any]) -> dict[str, bytes | str]:
    charts = render_charts(report)
    files: dict[str, bytes | str] = dict(charts)
    files["report.md"] = render_markdown(report, sorted(charts))
    files["report.json"] = json.dumps(report, indent=2, default=str) + "\n"
    if report.get("run_dir"):
        files["metrics.json"] = json.dumps(metrics_json(report), indent=2) + "\n"
    return files
