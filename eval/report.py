"""Render an eval result (the dict from :func:`alignkit.eval.harness.run_eval`) as files, in memory.

:func:`render_files` returns ``{filename: content}``: ``report.json`` (everything), ``report.md`` (tables with 95%
bootstrap intervals, win rates raw and length-controlled, sample generations side by side), ``metrics.png`` (bars with
CI whiskers), ``lengths.png`` (response-length distributions) and, for a run directory, ``metrics.json`` (flat
``{"base": {...}, "trained": {...}, "win_rate": {...}}`` for machines). The caller writes them atomically; nothing here
touches the disk, so a rendering error cannot leave half a report.
"""

from __future__ import annotations

import io
import json
import math
from typing import Any

# (label, path inside a prompt set's metrics, value key) -- the per-prompt-set table rows
SET_ROWS = [
    ("RM score", ("rm_score",), "mean"),
    ("Perplexity of responses (under reference)", ("perplexity_responses",), "perplexity"),
    ("Response length (tokens)", ("length_tokens",), "mean"),
    ("Truncated at max_new_tokens", ("truncated_rate",), None),
    ("Grader accuracy", ("grader_accuracy",), "mean"),
    ("Distinct-1", ("diversity", "distinct_1"), None),
    ("Distinct-2", ("diversity", "distinct_2"), None),
    ("Distinct-3", ("diversity", "distinct_3"), None),
    ("Self-BLEU (lower = more diverse)", ("diversity", "self_bleu"), None),
    ("Repetition rate (3-gram)", ("diversity", "repetition_rate"), None),
]
MODEL_ROWS = [
    ("Held-out perplexity (reference answers)", ("perplexity_heldout",), "perplexity"),
    ("Preference accuracy, length-normalized logp", ("preference", "length_normalized"), "value"),
    ("Preference accuracy, DPO implicit reward", ("preference", "implicit_reward", "accuracy"), "value"),
    ("DPO implicit reward margin", ("preference", "implicit_reward", "margin"), "mean"),
]


def _get(d: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(d, dict) or d.get(key) is None:
            return None
        d = d[key]
    return d


def _fmt(x: Any) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if isinstance(x, float):
        return f"{x:.3f}" if abs(x) < 1000 else f"{x:.1f}"
    return str(x)


def _cell(node: Any, key: str | None) -> str:
    """``value [low, high]`` when the node carries an interval, else the bare value."""
    if node is None:
        return "–"
    if key is None or not isinstance(node, dict):
        return _fmt(node)
    value = node.get(key)
    if "ci_low" in node:
        return f"{_fmt(value)} [{_fmt(node['ci_low'])}, {_fmt(node['ci_high'])}]"
    return _fmt(value)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out + [""]


def _escape(text: str, limit: int = 600) -> str:
    text = text if len(text) <= limit else text[:limit] + " …"
    return text.replace("|", "\\|").replace("\r", "").replace("\n", "<br>") or "*(empty)*"


def render_markdown(report: dict[str, Any], charts: list[str]) -> str:
    names = [m["name"] for m in report["models"]]
    metrics = report["metrics"]
    lines = [f"# Eval report: {' vs '.join(names)}", ""]
    lines += [f"Suite `{report['suite']['name']}` ({report['suite']['path']}), created {report['created']}.", ""]
    if report.get("run_dir"):
        lines += [f"Run directory: `{report['run_dir']}`.", ""]
    lines += ["Values are `point [95% bootstrap CI]` over prompts (pairs, texts).", ""]
    lines += _table(
        ["model", "base", "adapter", "trainer"],
        [[m["name"], f"`{m['base']}`", f"`{m.get('adapter', '–')}`", m.get("trainer", "–")] for m in report["models"]],
    )
    g = report["generation"]
    lines += [
        f"Generation: max_new_tokens={g['max_new_tokens']}, do_sample={g['do_sample']}, "
        f"batch_size={g['batch_size']}, seed={g['seed']}.",
        "",
    ]
    for ps in report["prompt_sets"]:
        lines += [f"## Prompt set `{ps['name']}` (card `{ps['card']}`, split `{ps['split']}`, n={ps['n']})", ""]
        rows = []
        for label, path, key in SET_ROWS:
            nodes = [_get(metrics[n]["sets"][ps["name"]], path) for n in names]
            # A computed metric keeps its row even when undefined (e.g. distinct-n of all-empty responses is NaN);
            # only metrics the suite did not ask for are left out.
            if any(node is not None for node in nodes):
                rows.append([label, *(_cell(node, key) for node in nodes)])
        lines += _table(["metric", *names], rows)
    rows = []
    for label, path, key in MODEL_ROWS:
        nodes = [_get(metrics[n], path) for n in names]
        if any(node is not None for node in nodes):
            rows.append([label, *(_cell(node, key) for node in nodes)])
    if rows:
        lines += ["## Model-level metrics", ""] + _table(["metric", *names], rows)
    if report["win_rates"]:
        lines += ["## Win rates (vs the baseline; > 0.5 means the model wins, a tie counts ½)", ""]
        rows = []
        for comp, sets in report["win_rates"].items():
            for ps, judges in sets.items():
                for judge, r in judges.items():
                    raw, lc = r["raw"], r["lc"]
                    rows.append(
                        [
                            comp,
                            ps,
                            judge,
                            _cell(raw, "win_rate"),
                            _cell(lc, "lc_win_rate"),
                            f"{raw['wins']}/{raw['ties']}/{raw['losses']}",
                        ]
                    )
        lines += _table(["comparison", "prompt set", "judge", "win rate", "LC win rate", "W/T/L"], rows)
    lm_rows = []
    for n in names:
        for task, task_metrics in (metrics[n].get("lm_eval") or {}).items():
            for metric, v in task_metrics.items():
                value = v.get("value") if isinstance(v, dict) else v
                err = v.get("stderr") if isinstance(v, dict) else None
                lm_rows.append([n, task, metric, _fmt(value) + (f" ± {_fmt(err)}" if err is not None else "")])
    if lm_rows:
        lines += ["## lm-eval", ""] + _table(["model", "task", "metric", "value ± stderr"], lm_rows)
    if charts:
        lines += ["## Charts", ""] + [f"![{c}]({c})" for c in charts] + [""]
    if report["samples"]:
        lines += ["## Sample generations", ""]
        for s in report["samples"]:
            lines += [f"### {s['prompt_set']} #{s['index'] + 1}", "", "> " + _escape(s["prompt"], 400), ""]
            lines += _table(["model", "response"], [[n, _escape(r)] for n, r in s["responses"].items()])
    if report["notes"]:
        lines += ["## Notes", ""] + [f"- {n}" for n in report["notes"]] + [""]
    lines += ["## Timing", "", "Wall seconds: " + ", ".join(f"{k} {v}" for k, v in report["timing_s"].items()), ""]
    if report.get("cpu_s"):
        lines += ["CPU seconds (all threads): " + ", ".join(f"{k} {v}" for k, v in report["cpu_s"].items()), ""]
    return "\n".join(lines)


def _bar_panels(report: dict[str, Any]) -> list[tuple[str, list[tuple[float, float | None, float | None]]]]:
    """``[(title, [(value, low, high) per model])]`` for every metric present for at least one model."""
    names = [m["name"] for m in report["models"]]
    metrics = report["metrics"]
    panels = []
    first = report["prompt_sets"][0]["name"]
    candidates = [
        (f"{label} [{first}]", lambda n, p=path: _get(metrics[n]["sets"][first], p), key)
        for label, path, key in SET_ROWS
        if label != "Truncated at max_new_tokens"
    ]
    candidates += [(label, lambda n, p=path: _get(metrics[n], p), key) for label, path, key in MODEL_ROWS]
    for title, getter, key in candidates:
        values = []
        for n in names:
            node = getter(n)
            if node is None:
                values.append((math.nan, None, None))
            elif isinstance(node, dict):
                values.append((float(node[key]), node.get("ci_low"), node.get("ci_high")))
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
                _flatten({"raw": r["raw"], "lc": r["lc"]}, f"{ps}/{judge}", part)
        prefix = "" if len(report["win_rates"]) == 1 else f"{comp}/"  # one comparison (a run): short keys
        flat.update({prefix + k: v for k, v in part.items()})
    out["win_rate"] = flat
    return out


def render_files(report: dict[str, Any]) -> dict[str, bytes | str]:
    charts = render_charts(report)
    files: dict[str, bytes | str] = dict(charts)
    files["report.md"] = render_markdown(report, sorted(charts))
    files["report.json"] = json.dumps(report, indent=2, default=str) + "\n"
    if report.get("run_dir"):
        files["metrics.json"] = json.dumps(metrics_json(report), indent=2) + "\n"
    return files
