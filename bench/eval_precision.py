"""The eval's fast precision against its exact one, on one run: how much faster the scoring passes are, and how far
every reported number moves.

In one process, on one finished run (default: seed 0 of bench/efficacy.py's default runs):

1. ``alignkit eval RUN`` with the run's suite as it is (``precision: exact``: fp32 weights on a CPU);
2. the same suite with ``precision: fast`` (:mod:`alignkit.inference_precision`, where the CPU has native bf16:
   bf16 matmuls with fp32 activations for the RM, judge, perplexity and preference passes,
   :func:`alignkit.inference_precision.bf16_matmuls`). Replies are decoded in the exact precision by
   both (the harness always decodes exactly), so both arms judge the same text, and the second arm reads them from
   the generation cache the first wrote: the comparison isolates the scoring passes.

Speed statistic: the exact arm's scoring seconds (``rm_score + perplexity + preference + win_rate`` of
``report.json``'s ``timing_s``) over the fast arm's. Reported, no goal of its own: issue 13's fast-path goal is 10x
over a per-sample loop for generation + RM + perplexity, which this bench does not measure.

Equivalence statistic, fixed before the first run (issue 13): for every reported number that has a 95% CI in the
exact report (RM score and judge score means per model and prompt set, response and held-out perplexity, each judge's
win rate and LC win rate), ``|fast - exact| / half-width of the exact CI``; the verdict statistic is the **largest**
of them, goal ``<= 0.1``. Every ratio is written to the JSON; the .md lists the five largest.

    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE taskset -c 0 .venv/bin/python bench/eval_precision.py \\
        --run runs/efficacy/dpo-smol-seed0 --runs-root runs/efficacy
    .venv/bin/python bench/eval_precision.py --quick       # tiny model, tiny suite, temp dir
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import (
    bench_model_path,
    figure,
    header_command,
    header_cpu,
    met,
    result_header,
    result_record,
    results_dir,
    set_offline_env,
    write_raw_result,
)

GOAL = 0.1
VERDICT = "max over CI-bearing metrics of |fast - exact| / exact 95% CI half-width"
SCORING_PHASES = ("rm_score", "perplexity", "preference", "win_rate")


def ci_numbers(report: dict[str, Any]) -> dict[str, tuple[float, float, float]]:
    """``name -> (value, ci_low, ci_high)`` for every number of ``report`` that carries a 95% CI."""
    out: dict[str, tuple[float, float, float]] = {}
    for model, per_model in report["metrics"].items():
        ppl = per_model.get("perplexity_heldout")
        if isinstance(ppl, dict) and "ci_low" in ppl:
            out[f"{model}/heldout perplexity"] = (ppl["perplexity"], ppl["ci_low"], ppl["ci_high"])
        for set_name, metrics in per_model.get("sets", {}).items():
            for key in ("rm_score", "rm_judge_score"):
                m = metrics.get(key)
                if isinstance(m, dict) and "ci_low" in m:
                    out[f"{model}/{set_name}/{key}"] = (m["mean"], m["ci_low"], m["ci_high"])
            m = metrics.get("perplexity_responses")
            if isinstance(m, dict) and "ci_low" in m:
                out[f"{model}/{set_name}/response perplexity"] = (m["perplexity"], m["ci_low"], m["ci_high"])
    for pair, sets in report.get("win_rates", {}).items():
        for set_name, judges in sets.items():
            for judge, w in judges.items():
                if not isinstance(w, dict):
                    continue
                raw, lc = w.get("raw"), w.get("lc")
                if isinstance(raw, dict) and "ci_low" in raw:
                    out[f"{pair}/{set_name}/{judge} win rate"] = (raw["win_rate"], raw["ci_low"], raw["ci_high"])
                if isinstance(lc, dict) and "ci_low" in lc and lc.get("lc_win_rate") is not None:
                    out[f"{pair}/{set_name}/{judge} LC win rate"] = (lc["lc_win_rate"], lc["ci_low"], lc["ci_high"])
    return out


def shift_in_half_widths(exact: dict[str, Any], fast: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per number: ``|fast - exact| / ((ci_high - ci_low) / 2)`` of the exact report, with both values; a CI of
    width 0 gives ``inf`` when the values differ (any move is then outside it), else 0."""
    a, b = ci_numbers(exact), ci_numbers(fast)
    out = {}
    for name, (value, low, high) in a.items():
        if name not in b:
            continue
        half, diff = (high - low) / 2, abs(b[name][0] - value)
        ratio = diff / half if half > 0 else (0.0 if diff == 0 else float("inf"))
        out[name] = {"exact": value, "fast": b[name][0], "abs_diff": diff, "half_width": half, "ratio": ratio}
    return out


def scoring_seconds(report: dict[str, Any]) -> float:
    return sum(report["timing_s"].get(p, 0.0) for p in SCORING_PHASES)


def suite_with_precision(suite_path: Path, precision: str, out: Path) -> Path:
    """A copy of ``suite_path`` with ``precision`` set at its top level."""
    import yaml

    data = yaml.safe_load(suite_path.read_text(encoding="utf-8"))
    data["precision"] = precision
    out.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return out


def eval_arm(run: Path, runs_root: Path, suite: Path, out: Path) -> tuple[dict[str, Any], float]:
    import os

    from alignkit.eval import command

    os.environ["ALIGNKIT_SCORE_CACHE"] = "0"  # time the scoring passes, not a read of scores stored by a past run

    start = time.perf_counter()
    code = command.main([str(run), "--suite", str(suite), "--runs-root", str(runs_root), "--out", str(out)])
    if code not in (0, None):
        raise SystemExit(f"eval_precision: alignkit eval failed for {out.name} (exit {code})")
    return json.loads((out / "report.json").read_text(encoding="utf-8")), time.perf_counter() - start


def quick_workspace(root: Path) -> tuple[Path, Path, Path]:
    """A tiny DPO-like run (LoRA adapter), a tiny reward run and a 4-prompt suite: ``(run, runs_root, suite)``."""
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    model = bench_model_path(quick=True)
    runs = root / "runs"

    def run_json(run_dir: Path, trainer: str, **extra: Any) -> None:
        meta = {"recipe": run_dir.name, "trainer": trainer, "model_name_or_path": model, "base_model": model}
        meta.update(adapter_dir="adapter", model_dir=None, dataset="test", status="finished", **extra)
        (run_dir / "run.json").write_text(json.dumps(meta))

    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(AutoModelForCausalLM.from_pretrained(model), lora).save_pretrained(runs / "dpo-tiny" / "adapter")
    run_json(runs / "dpo-tiny", "dpo", beta=0.1)
    seq = AutoModelForSequenceClassification.from_pretrained(model, num_labels=1)
    rm_lora = LoraConfig(r=4, target_modules=["q_proj"], task_type=TaskType.SEQ_CLS, init_lora_weights=False)
    get_peft_model(seq, rm_lora).save_pretrained(runs / "rm-tiny" / "adapter")
    run_json(runs / "rm-tiny", "reward")
    chat = root / "chat.jsonl"
    rows = [("Say hi.", "Hi!"), ("Name a colour.", "Blue."), ("Capital of France?", "Paris."), ("A word?", "Word.")]
    chat.write_text(
        "".join(
            json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}) + "\n"
            for q, a in rows
        )
    )
    suite = root / "tiny.yaml"
    suite.write_text(
        f"name: tiny\nprompt_sets:\n  - {{name: chat, card: {chat}, max_prompts: 4}}\n"
        "generation: {max_new_tokens: 6, batch_size: 4}\n"
        "metrics:\n  rm_score: {reward_model: 'run:rm-tiny'}\n"
        f"  perplexity: {{heldout: {{card: {chat}}}, reference_model: base, max_length: 64, stride: 32}}\n"
        "  win_rate: {judges: [rm]}\n"
    )
    return runs / "dpo-tiny", runs, suite


def markdown(raw: dict[str, Any]) -> str:
    h, s = raw["header"], raw["statistics"]
    shifts = sorted(raw["shifts"].items(), key=lambda kv: -kv[1]["ratio"])
    lines = [
        "# Eval precision: fast (bf16 scoring) against exact (fp32), one run",
        "",
        f"Command: `{header_command(h)}` (run {h['date']}; run `{raw['run']}`, suite `{raw['suite']}`).",
        "",
        f"CPU: {h['cpu_model']} ({', '.join(h['cpu_bf16_flags'])}), threads {h['torch_threads']}. "
        f"Effective fast precision here: {raw['effective_fast']}.",
        "",
        "| arm | scoring s (rm_score + perplexity + preference + win_rate) | eval total s |",
        "|---|---|---|",
        f"| exact | {s['exact_scoring_s']:.1f} | {s['exact_total_s']:.1f} |",
        f"| fast | {s['fast_scoring_s']:.1f} | {s['fast_total_s']:.1f} |",
        "",
        f"Scoring speed-up, exact / fast: **{s['scoring_speedup']:.2f}x** (reported; no goal).",
        "",
        f"Equivalence ({VERDICT}; goal <= {GOAL}): **{s['max_shift_in_half_widths']:.3f}** "
        f"({'met' if s['max_shift_in_half_widths'] <= GOAL else 'missed'}); "
        f"{s['n_within_goal']} of {s['n_numbers']} numbers within the goal.",
        "",
        "| number (largest shifts) | exact | fast | abs diff | CI half-width | shift / half-width |",
        "|---|---|---|---|---|---|",
    ]
    for name, v in shifts[:5]:
        lines.append(
            f"| {name} | {v['exact']:.4f} | {v['fast']:.4f} | {v['abs_diff']:.4f} | {v['half_width']:.4f} | "
            f"{v['ratio']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def result(raw: dict[str, Any]) -> dict[str, Any]:
    s = raw["statistics"]
    fig = figure(
        "eval_precision.equivalence",
        "eval fast precision (bf16 scoring): largest shift of a reported number, in exact-CI half-widths",
        f"<= {GOAL}",
        s["max_shift_in_half_widths"],
        met(s["max_shift_in_half_widths"], "<=", GOAL),
        VERDICT,
        also=[
            {
                "statistic": "scoring seconds, exact / fast",
                "measured": s["scoring_speedup"],
                "met": None,
                "note": "no goal: speed of the scoring passes on the same replies",
            }
        ],
        note=f"run {raw['run']}; {s['n_within_goal']} of {s['n_numbers']} numbers within the goal",
    )
    h = raw["header"]
    return result_record("eval_precision", header_command(h), h["date"], h["torch_threads"], s, [fig], header_cpu(h))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", default="runs/efficacy/dpo-smol-seed0", help="a finished run directory")
    parser.add_argument("--runs-root", default="runs/efficacy", help="where the suite's run:NAME models live")
    parser.add_argument("--suite", default=None, help="suite name or path (default: the run's eval_suite, else smol)")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny model and suite, temp dir")
    parser.add_argument(
        "--out", default=None, help="path stem of the .json/.md (default bench/results/eval_precision)"
    )
    a = parser.parse_args(argv)
    set_offline_env()
    import torch

    from alignkit.eval.suite import suite_path
    from alignkit.inference_precision import effective_precision

    header = result_header(torch.get_num_threads())
    with tempfile.TemporaryDirectory(prefix="eval-precision-") as tmp:
        tmp_path = Path(tmp)
        if a.quick:
            run, runs_root, suite = quick_workspace(tmp_path)
        else:
            run, runs_root = Path(a.run), Path(a.runs_root)
            if not (run / "run.json").exists():
                print(f"eval_precision: {run} is not a finished run (no run.json)", file=sys.stderr)
                return 2
            name = a.suite or json.loads((run / "run.json").read_text()).get("eval_suite") or "smol"
            suite = suite_path(name)
        reports, walls = {}, {}
        for precision in ("exact", "fast"):
            copy = suite_with_precision(Path(suite), precision, tmp_path / f"suite-{precision}.yaml")
            reports[precision], walls[precision] = eval_arm(run, runs_root, copy, tmp_path / precision)
    shifts = shift_in_half_widths(reports["exact"], reports["fast"])
    ratios = [v["ratio"] for v in shifts.values()]
    exact_s, fast_s = scoring_seconds(reports["exact"]), scoring_seconds(reports["fast"])
    statistics = {
        "exact_scoring_s": exact_s,
        "fast_scoring_s": fast_s,
        "scoring_speedup": exact_s / fast_s if fast_s > 0 else None,
        "exact_total_s": reports["exact"]["timing_s"]["total"],
        "fast_total_s": reports["fast"]["timing_s"]["total"],
        "exact_timing_s": reports["exact"]["timing_s"],
        "fast_timing_s": reports["fast"]["timing_s"],
        "max_shift_in_half_widths": max(ratios) if ratios else None,
        "median_shift_in_half_widths": sorted(ratios)[len(ratios) // 2] if ratios else None,
        "n_numbers": len(ratios),
        "n_within_goal": sum(r <= GOAL for r in ratios),
        "wall_s": walls,
    }
    raw = {
        "header": header,
        "run": str(run) if not a.quick else "tiny (quick)",
        "suite": str(suite) if not a.quick else "tiny (quick)",
        "effective_fast": effective_precision("fast"),
        "statistics": statistics,
        "shifts": shifts,
    }
    out = Path(a.out) if a.out else results_dir(a.quick) / "eval_precision"
    path = write_raw_result(raw, result(raw), markdown(raw), out)
    print(f"wrote {path} and {path.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
