"""Optimizer-step time of the dpo-smol and sft-smol recipes with the CPU fast path (``cpu_fast_path``) vs without.

Arms, per recipe, all built exactly as ``alignkit train <recipe>`` builds them (``alignkit.train.build_trainer``:
the recipe's card, LoRA, batch, accumulation, max_length and hardware-chosen precision), differing only in
``cpu_fast_path``:

* ``slow``       -- ``cpu_fast_path=false``: today's path (TRL's fused head at every position, autocast casts);
* ``slow-again`` -- the same again, an A/A control: its ratio to ``slow`` is the noise floor;
* ``fast``       -- ``cpu_fast_path=true``.

Method (bench/benchlib.py ``run_interleaved_in_process``): the arms are threads of ONE process, each a real
``trainer.train()`` on its own model copy, taking turns one optimizer step at a time in a balanced order; every arm
sees the same batches in the same order, so round k's steps are paired. The first ``--warmup`` steps are dropped.

Verdict statistic, fixed before the first run: the **median over rounds of the paired speed-up slow_k / fast_k**,
with a 95 % percentile-bootstrap CI (4000 resamples, seed 0). Goal: >= 3.0 (met when the median is >= 3.0). Also
reported: the A/A ratio slow-again_k / slow_k (median + CI), the ratio of median step times, CPU-time ratios, and the
largest per-step |loss difference| between fast and slow (same batches; the runs drift apart by the bf16 rounding
of their updates).

Result: ``bench/results/train_speed_<cpu kind>.json`` (one per CPU kind, as precision's and mfu's) in the shared
schema (``bench/benchlib.py``: one figure per recipe, the
verdict statistic above; every statistic under ``statistics``), the run's raw data beside it under its own keys
(``header``, ``recipes`` with every step time and loss, ``load_average_end``), and ``train_speed_<cpu kind>.md``.

    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE taskset -c 1 .venv/bin/python bench/train_speed.py
    .venv/bin/python bench/train_speed.py --quick      # tiny model, 3 steps at batch 2, max_length 96; temp dir
    .venv/bin/python bench/train_speed.py --rerender bench/results/train_speed_amx.json   # rebuild, no measuring
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from benchlib import (
    bench_model_path,
    command_line,
    cpu_kind,
    figure,
    fmt_times,
    header_command,
    header_cpu,
    load_average,
    median,
    met,
    paired_ratios,
    result_header,
    result_record,
    results_dir,
    run_interleaved_in_process,
    set_offline_env,
    write_raw_result,
)

RECIPES = ("dpo-smol", "sft-smol")
ARMS = {"slow": False, "slow-again": False, "fast": True}  # arm -> cpu_fast_path
GOAL = 3.0
VERDICT = "median over rounds of the paired speed-up slow_k / fast_k"
RAW_KEYS = ("header", "goal", "recipes", "load_average_end")  # the run's own layout, kept beside the schema keys
# Smoke run: the tiny model, and for dpo-smol the off-policy pairs card (its on-policy card needs runs/rm-smol).
QUICK_OVERRIDES = ["per_device_train_batch_size=2", "gradient_accumulation_steps=1", "max_length=96"]
QUICK_DATASETS = {"dpo-smol": "sharegpt-pairs-smol"}


def build_arm(recipe_name: str, fast: bool, steps: int, quick: bool, out_dir: str, extra: list[str] | None = None):
    """The recipe's trainer as ``alignkit train`` builds it, with only ``cpu_fast_path`` (and run length) set, plus
    the recipe ``extra`` overrides of a caller that needs them (bench/fast_path_equivalence.py)."""
    from alignkit.models import load_tokenizer, resolve_model_path
    from alignkit.recipe import load_recipe
    from alignkit.train import build_trainer

    overrides = [
        f"cpu_fast_path={str(fast).lower()}",
        f"max_steps={steps}",
        "save_strategy='no'",
        "logging_steps=1",
        "warmup_steps=0",
        "eval_strategy='no'",
        "report_to=none",
        "disable_tqdm=true",
        f"output_dir={out_dir}",
        *(extra or []),
    ]
    if quick:
        overrides += [*QUICK_OVERRIDES, "max_train_samples=8", f"model_name_or_path={bench_model_path(True)}"]
        if recipe_name in QUICK_DATASETS:
            overrides.append(f"dataset={QUICK_DATASETS[recipe_name]}")
    recipe = load_recipe(recipe_name, overrides)
    targs = recipe.training_args
    model_path = resolve_model_path(recipe.model_args.model_name_or_path)
    built = build_trainer(recipe, model_path, load_tokenizer(model_path))
    info = {
        "recipe": recipe_name,
        "cpu_fast_path": targs.cpu_fast_path,
        "bf16": targs.bf16,
        "accelerate mixed_precision": built.trainer.accelerator.mixed_precision,
        "gradient_checkpointing": targs.gradient_checkpointing,
        "batch": f"{targs.per_device_train_batch_size} x {targs.gradient_accumulation_steps} accumulation",
        "max_length": targs.max_length,
        "dataset": recipe.args.dataset,
        "attn_implementation": built.trainer.model.config._attn_implementation,
    }
    return built.trainer, info


def bootstrap_median(values: list[float]) -> tuple[float, float, float]:
    from alignkit.eval.stats import bootstrap_ci

    if len(values) < 2:
        v = values[0] if values else float("nan")
        return v, float("nan"), float("nan")
    return bootstrap_ci(values, np.median, n_resamples=4000)


def summarize(recipe: str, results: dict, warmup: int) -> dict:
    wall = {arm: r.wall[warmup:] for arm, r in results.items()}
    cpu = {arm: r.cpu[warmup:] for arm, r in results.items()}
    speedups = paired_ratios(wall["slow"], wall["fast"])
    aa = paired_ratios(wall["slow-again"], wall["slow"])
    losses = {arm: [h["loss"] for h in r.logs if "loss" in h] for arm, r in results.items()}
    gaps = {
        arm: [abs(a - b) for a, b in zip(losses[arm], losses["slow"], strict=False)] for arm in ("fast", "slow-again")
    }
    point, low, high = bootstrap_median(speedups)
    aa_point, aa_low, aa_high = bootstrap_median(aa)
    return {
        "recipe": recipe,
        "arms": {arm: r.info for arm, r in results.items()},
        "rounds": len(speedups),
        "warmup_dropped": warmup,
        "step_wall_s": {arm: r.wall for arm, r in results.items()},
        "step_cpu_s": {arm: r.cpu for arm, r in results.items()},
        "median_step_s": {arm: median(w) for arm, w in wall.items()},
        "paired_speedup": speedups,
        "verdict_statistic": VERDICT,
        "speedup_median": point,
        "speedup_ci95": [low, high],
        "speedup_ratio_of_medians": median(wall["slow"]) / median(wall["fast"]),
        "speedup_cpu_time_ratio_of_medians": median(cpu["slow"]) / median(cpu["fast"]),
        "aa_ratio_median": aa_point,
        "aa_ratio_ci95": [aa_low, aa_high],
        "losses": losses,
        # Step 1 starts from identical weights: its gap is the fast path's numerical difference alone; later steps
        # add the drift of two runs whose updates differ by bf16 rounding.
        "first_step_abs_loss_gap_fast_vs_slow": gaps["fast"][0] if gaps["fast"] else float("nan"),
        "max_abs_loss_gap_fast_vs_slow": max(gaps["fast"], default=float("nan")),
        "max_abs_loss_gap_aa": max(gaps["slow-again"], default=float("nan")),
        "goal": GOAL,
        "met": bool(point >= GOAL),
    }


def markdown(report: dict) -> str:
    h = report["header"]
    lines = [
        "# CPU fast path: training step time (bench/train_speed.py)",
        "",
        f"Command: `{h['command']}`  ",
        f"Date: {h['date']}; CPU: {h['cpu_model']} (bf16 flags: {', '.join(h['cpu_bf16_flags']) or 'none'}); "
        f"torch threads {h['torch_threads']}, CPUs allowed {h['cpus_allowed']}, OMP {h['omp']}; load average "
        f"{h['load_average_start']} at start, {report['load_average_end']} at end.",
        "",
        f"Verdict statistic (fixed in the code before the run): {VERDICT}, 95 % bootstrap CI; goal >= {GOAL}x. "
        "A/A control: slow-again / slow. All arms in one process, interleaved one optimizer step at a time.",
        "",
        "| recipe | slow s/step | fast s/step | speed-up (median paired) | 95 % CI | A/A ratio (CI) | goal | met? |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["recipes"]:
        m = r["median_step_s"]
        lines.append(
            f"| {r['recipe']} | {m['slow']:.2f} | {m['fast']:.2f} | {r['speedup_median']:.2f}x | "
            f"{r['speedup_ci95'][0]:.2f}-{r['speedup_ci95'][1]:.2f} | {r['aa_ratio_median']:.3f} "
            f"({r['aa_ratio_ci95'][0]:.3f}-{r['aa_ratio_ci95'][1]:.3f}) | >= {GOAL}x | "
            f"{'met' if r['met'] else 'MISSED'} |"
        )
    lines += ["", "Every statistic computed:", ""]
    for r in report["recipes"]:
        info = r["arms"]["fast"]
        lines += [
            f"## {r['recipe']}",
            "",
            f"- settings: batch {info['batch']}, max_length {info['max_length']}, bf16 {info['bf16']} "
            f"(accelerate {info['accelerate mixed_precision']}), attention {info['attn_implementation']}, "
            f"dataset {info['dataset']}; {r['rounds']} rounds after {r['warmup_dropped']} warm-up step(s)",
            f"- speed-up: median paired {r['speedup_median']:.3f} (CI {r['speedup_ci95'][0]:.3f}-"
            f"{r['speedup_ci95'][1]:.3f}); ratio of medians {r['speedup_ratio_of_medians']:.3f}; CPU-time ratio of "
            f"medians {r['speedup_cpu_time_ratio_of_medians']:.3f}",
            f"- A/A (slow-again / slow): median {r['aa_ratio_median']:.3f} (CI {r['aa_ratio_ci95'][0]:.3f}-"
            f"{r['aa_ratio_ci95'][1]:.3f})",
            f"- |loss(fast) - loss(slow)|: first step (same weights) {r['first_step_abs_loss_gap_fast_vs_slow']:.2e}, "
            f"largest over steps {r['max_abs_loss_gap_fast_vs_slow']:.2e} (A/A: {r['max_abs_loss_gap_aa']:.2e})",
        ]
        for arm, times in r["step_wall_s"].items():
            lines.append(f"- {arm} step wall s (warm-up first): {fmt_times(times)}")
        lines.append("")
    return "\n".join(lines) + "\n"


STATISTICS = (
    "rounds",
    "warmup_dropped",
    "median_step_s",
    "speedup_median",
    "speedup_ci95",
    "speedup_ratio_of_medians",
    "speedup_cpu_time_ratio_of_medians",
    "aa_ratio_median",
    "aa_ratio_ci95",
    "first_step_abs_loss_gap_fast_vs_slow",
    "max_abs_loss_gap_fast_vs_slow",
    "max_abs_loss_gap_aa",
)


def result(report: dict) -> dict:
    """The bench/results JSON record (benchlib schema) of a run's raw ``report``: one figure per recipe."""
    h = report["header"]
    kind = cpu_kind(h["cpu_bf16_flags"])
    statistics = {r["recipe"]: {k: r[k] for k in STATISTICS} for r in report["recipes"]}
    figures = [
        figure(
            f"train_speed.{kind}.{r['recipe']}",
            f"{r['recipe']} optimizer-step speed-up, cpu_fast_path on vs off ({kind} CPU)",
            f">= {GOAL:g}x",
            r["speedup_median"],
            met(r["speedup_median"], ">=", GOAL),
            VERDICT,
            unit="x",
            note=f"95% bootstrap CI [{r['speedup_ci95'][0]:.2f}, {r['speedup_ci95'][1]:.2f}], "
            f"A/A {r['aa_ratio_median']:.3f}, ratio of median step times {r['speedup_ratio_of_medians']:.2f}, "
            f"{r['rounds']} rounds",
        )
        for r in report["recipes"]
    ]
    extra = {"load_average": {"start": h["load_average_start"], "end": report.get("load_average_end")}}
    if h.get("git"):
        extra["git"] = h["git"]
    return result_record(
        f"train_speed_{kind}",
        header_command(h),
        h["date"],
        h["torch_threads"],
        statistics,
        figures,
        header_cpu(h),
        **extra,
    )


def write(report: dict, out: Path) -> Path:
    """``<out>.json`` (schema + raw report) and ``<out>.md``; into bench/results this also regenerates RESULTS.md."""
    raw = {k: report[k] for k in RAW_KEYS}
    return write_raw_result(raw, result(raw), markdown(raw), out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipes", default=",".join(RECIPES))
    parser.add_argument("--steps", type=int, default=10, help="measured rounds per recipe (after the warm-up)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: pin the process with taskset)")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: tiny model, 2 rounds, small batches; writes to a temp dir"
    )
    parser.add_argument("--out", default=None, help="path stem of the .json/.md (default bench/results/train_speed)")
    parser.add_argument(
        "--rerender", metavar="JSON", help="rebuild the result and .md from a run's raw JSON, without measuring"
    )
    args = parser.parse_args(argv)
    if args.rerender:
        report = json.loads(Path(args.rerender).read_text(encoding="utf-8"))
        path = write(report, Path(args.out) if args.out else Path(args.rerender).with_suffix(""))
        print(f"wrote {path} and {path.with_suffix('.md')} from {args.rerender}")
        return 0
    set_offline_env()
    steps = 2 if args.quick else args.steps
    header = result_header(args.threads)
    header["command"] = command_line(argv)  # from the repository root, with the OpenMP environment
    report = {"header": header, "goal": f"speed-up >= {GOAL}x", "recipes": []}
    for recipe in args.recipes.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            arms = {
                arm: (build_arm, dict(recipe_name=recipe, fast=fast, steps=steps + args.warmup, quick=args.quick,
                                      out_dir=f"{tmp}/{arm}"))
                for arm, fast in ARMS.items()
            }  # fmt: skip
            start = time.perf_counter()
            results = run_interleaved_in_process(arms, steps + args.warmup, threads=args.threads)
            summary = summarize(recipe, results, args.warmup)
            summary["elapsed_s"] = time.perf_counter() - start
        report["recipes"].append(summary)
        print(f"{recipe}: speed-up {summary['speedup_median']:.2f}x (CI {summary['speedup_ci95']}), A/A "
              f"{summary['aa_ratio_median']:.3f}", flush=True)  # fmt: skip
    report["load_average_end"] = load_average()
    print(markdown(report))
    kind = cpu_kind(report["header"]["cpu_bf16_flags"])
    path = write(report, Path(args.out) if args.out else results_dir(args.quick) / f"train_speed_{kind}")
    print(f"wrote {path} and {path.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
