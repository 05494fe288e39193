"""``runs/pipeline/report.md``: one table comparing every stage of ``make pipeline`` with the base model and with SFT.

The pipeline's two evaluations are ordinary ``alignkit eval --compare`` reports (``vs-base/report.json``: the base
model against SFT and every method; ``vs-sft/report.json``: SFT against every method), made with one suite, so the
generations are shared through the generation cache. This module reads both and writes one row per model:

- win rate against the base model and against SFT, raw and length-controlled, each with its 95 % CI, by the suite's
  held-out judge (the judge named in the report);
- the held-out judge's reward-model score on the chat prompts;
- held-out perplexity (the model's own, on the suite's held-out texts);
- distinct-2 and mean length of the chat replies;
- arithmetic accuracy (the grader on the arithmetic prompts).

and ``pipeline.png``: win rates against base and against SFT with CI whiskers, and arithmetic accuracy.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from alignkit.errors import AlignkitError
from alignkit.io import atomic_write_files

CHAT, ARITH = "chat", "arith"


def _get(node: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def win_cells(report: dict[str, Any], model: str) -> dict[str, Any]:
    """The judged win rate of ``model`` against the report's baseline on the chat set: ``raw`` and ``lc`` nodes
    (each with ``ci_low``/``ci_high``), plus the judge's model name; empty when the report has no such comparison."""
    baseline = report["models"][0]["name"]
    judges = _get(report, "win_rates", f"{model} vs {baseline}", CHAT) or {}
    for judge, node in judges.items():  # the suite's first judge on chat (the held-out RM in the smol suite)
        return {"raw": node.get("raw"), "lc": node.get("lc"), "judge": _get(node, "judge", "model") or judge}
    return {}


def stage_row(name: str, vs_base: dict[str, Any], vs_sft: dict[str, Any] | None) -> dict[str, Any]:
    """One model's figures, from the report where it was evaluated (its metrics are the same in both: same suite,
    same cached generations)."""
    metrics = vs_base["metrics"][name]
    chat = _get(metrics, "sets", CHAT) or {}
    return {
        "model": name,
        "vs_base": win_cells(vs_base, name) if name != vs_base["models"][0]["name"] else {},
        "vs_sft": win_cells(vs_sft, name) if vs_sft and name in vs_sft["metrics"] else {},
        "judge_score": _get(chat, "rm_judge_score", "mean"),
        "perplexity": _get(metrics, "perplexity_heldout", "perplexity"),
        "distinct_2": _get(chat, "diversity", "distinct_2"),
        "length": _get(chat, "length_tokens", "mean"),
        "arith_accuracy": _get(metrics, "sets", ARITH, "grader_accuracy", "mean"),
    }


def pipeline_rows(vs_base: dict[str, Any], vs_sft: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Rows in the base report's model order: the base model, SFT, then each method."""
    return [stage_row(m["name"], vs_base, vs_sft) for m in vs_base["models"]]


def _num(x: Any, digits: int = 3) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _win(cell: dict[str, Any], kind: str) -> str:
    node = cell.get(kind)
    if not node:
        return "–"
    value = node.get("lc_win_rate" if kind == "lc" else "win_rate")
    return f"{_num(value)} [{_num(node.get('ci_low'), 2)}, {_num(node.get('ci_high'), 2)}]"


def render_markdown(rows: list[dict[str, Any]], vs_base: dict[str, Any], stage_notes: dict[str, str]) -> str:
    judges = {c["judge"] for r in rows for c in (r["vs_base"], r["vs_sft"]) if c.get("judge")}
    n_chat = next((p.get("n") for p in vs_base.get("prompt_sets", []) if p.get("name") == CHAT), None)
    lines = [
        "# make pipeline: every stage against the base model and against SFT",
        "",
        f"Suite `{vs_base['suite']['name']}`; chat win rates by {', '.join(f'`{j}`' for j in sorted(judges)) or '–'}"
        f" on {n_chat} held-out chat prompts (95 % bootstrap CIs in brackets; LC = length-controlled). "
        "Judge score = that judge's mean reward on the chat replies; perplexity = the model's own on the held-out "
        "texts; distinct-2 and length on the chat replies; arithmetic = grader accuracy.",
        "",
        "| model | win vs base | LC vs base | win vs SFT | LC vs SFT | judge score | perplexity | distinct-2 "
        "| length | arithmetic |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {_win(r['vs_base'], 'raw')} | {_win(r['vs_base'], 'lc')} | {_win(r['vs_sft'], 'raw')} "
            f"| {_win(r['vs_sft'], 'lc')} | {_num(r['judge_score'])} | {_num(r['perplexity'], 2)} "
            f"| {_num(r['distinct_2'])} | {_num(r['length'], 1)} | {_num(r['arith_accuracy'])} |"
        )
    lines += ["", "![win rates and arithmetic accuracy](pipeline.png)", ""]
    if stage_notes:
        lines += ["## Stages", ""] + [f"- `{name}`: {note}" for name, note in stage_notes.items()] + [""]
    lines += [
        "The full reports: [vs-base/report.md](vs-base/report.md) (every model against the base),"
        " [vs-sft/report.md](vs-sft/report.md) (every method against SFT).",
        "",
    ]
    return "\n".join(lines)


def render_plot(rows: list[dict[str, Any]]) -> bytes:
    """Grouped bars: raw win rate vs base and vs SFT per model with CI whiskers (0.5 dashed); arithmetic accuracy."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = [r["model"] for r in rows]
    fig, (ax_win, ax_arith) = plt.subplots(1, 2, figsize=(11, 3.6), gridspec_kw={"width_ratios": [2, 1]})
    for offset, key, label, color in ((-0.2, "vs_base", "vs base", "C0"), (0.2, "vs_sft", "vs SFT", "C1")):
        xs, ys, lo, hi = [], [], [], []
        for i, r in enumerate(rows):
            node = r[key].get("raw")
            if node:
                xs.append(i + offset)
                ys.append(node["win_rate"])
                lo.append(max(0.0, node["win_rate"] - node["ci_low"]))
                hi.append(max(0.0, node["ci_high"] - node["win_rate"]))
        if xs:
            ax_win.bar(xs, ys, width=0.4, yerr=[lo, hi], capsize=3, color=color, label=label)
    ax_win.axhline(0.5, color="k", lw=0.8, ls="--")
    ax_win.set_ylim(0, 1)
    ax_win.set_xticks(range(len(models)), models, rotation=20, fontsize=8)
    ax_win.set_title("Win rate (held-out judge, chat)", fontsize=9)
    ax_win.legend(fontsize=8)
    acc = [r["arith_accuracy"] if r["arith_accuracy"] is not None else math.nan for r in rows]
    ax_arith.bar(range(len(models)), acc, color="C2")
    ax_arith.set_xticks(range(len(models)), models, rotation=20, fontsize=8)
    ax_arith.set_title("Arithmetic accuracy (grader)", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def write_pipeline_report(runs_root: Path, stage_notes: dict[str, str] | None = None) -> Path:
    """Read ``vs-base/report.json`` and ``vs-sft/report.json`` under ``runs_root``; write ``report.md``,
    ``report.json`` (the rows) and ``pipeline.png`` there, together."""
    reports = {}
    for sub in ("vs-base", "vs-sft"):
        path = runs_root / sub / "report.json"
        if not path.exists():
            raise AlignkitError(f"alignkit pipeline: {path} is missing; rerun `alignkit pipeline` to evaluate")
        reports[sub] = json.loads(path.read_text())
    rows = pipeline_rows(reports["vs-base"], reports["vs-sft"])
    atomic_write_files(
        runs_root,
        {
            "pipeline.png": render_plot(rows),
            "report.json": json.dumps({"rows": rows, "stages": stage_notes or {}}, indent=1) + "\n",
            "report.md": render_markdown(rows, reports["vs-base"], stage_notes or {}),
        },
        last="report.md",
    )
    return runs_root / "report.md"
