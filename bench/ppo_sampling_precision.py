"""PPO rollout sampling in the training's precision vs in fp32, side by side on the ppo-smol recipe.

Under bf16 training TRL samples a LoRA/QLoRA policy in fp32: ``PeftModel.generate`` steps the base model's own
forward, not the autocast-wrapped one accelerate installs (tests/test_ppo_forward.py pins this). alignkit's
``PPOConfig.autocast_generation`` (off by default) samples under the training's autocast instead. This bench runs the
ppo-smol recipe twice in one process, ``autocast_generation`` false vs true, interleaved one optimizer step at a time
(``bench/benchlib.py: run_interleaved_in_process``), and reports the time spent in sampling
(``_generate_single_turn``), the optimizer-step times, and what was sampled (completion lengths, reward), since the
two arms' samples differ once bf16 rounding changes a token.

    OMP_NUM_THREADS=2 .venv/bin/python bench/ppo_sampling_precision.py [--steps 24] [--threads 2]

Without a bf16-capable CPU alignkit trains in fp32 and both arms are the same; the report says so.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchlib import (
    bench_model_path,
    cpu_info,
    figure,
    load_average,
    median,
    paired_ratios,
    result_record,
    results_dir,
    run_interleaved_in_process,
    set_offline_env,
    with_hand_notes,
    write_result,
)

from alignkit.io import atomic_write_text

RECIPE = "ppo-smol"
ARMS = {"fp32 sampling": False, "autocast sampling": True}
# Overrides for a --quick smoke run: a tiny model, 2 steps of tiny rollouts.
QUICK = [
    "max_steps=2",
    "per_device_train_batch_size=2",
    "steps_per_generation=2",
    "max_completion_length=4",
    "max_train_samples=8",
]
# No goal: the figures decide PPOConfig.autocast_generation's default (off unless whole steps get faster).
DECIDES = "none: decides PPOConfig.autocast_generation's default"


def build_arm(autocast: bool, steps: int, out_dir: str, quick: bool = False):
    """One arm: the ppo-smol recipe as ``alignkit train`` builds it, with sampling timed per rollout.
    Returns ``(trainer, info, sampling)``; ``sampling`` fills with [wall s, process CPU s] per rollout."""
    from alignkit.models import load_tokenizer, resolve_model_path
    from alignkit.recipe import load_recipe
    from alignkit.train import build_trainer

    overrides = [f"output_dir={out_dir}", f"max_steps={steps}", f"autocast_generation={autocast}"]
    if quick:
        overrides += [*QUICK, f"model_name_or_path={bench_model_path(True)}"]
    recipe = load_recipe(RECIPE, [*overrides, "save_strategy=no", "report_to=none", "disable_tqdm=true"])
    model_path = resolve_model_path(recipe.model_args.model_name_or_path)
    trainer = build_trainer(recipe, model_path, load_tokenizer(model_path)).trainer
    sampling: list[list[float]] = []  # per rollout: [wall s, process CPU s]
    inner = trainer._generate_single_turn

    def timed(*args, **kwargs):
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            return inner(*args, **kwargs)
        finally:
            sampling.append([time.perf_counter() - t0, time.process_time() - c0])

    trainer._generate_single_turn = timed
    info = {"precision": recipe.hardware_reasons.get("precision", ""), "bf16": recipe.training_args.bf16}
    return trainer, info, sampling


def render(meta: dict, arms: dict) -> str:
    names = list(ARMS)
    a, b = (arms[n] for n in names)
    samp = {n: arms[n]["sampling"] for n in names}
    lines = [
        "# PPO rollout sampling: training precision (autocast) vs fp32",
        "",
        f"Command: `{meta['command']}` (run {meta['started']}; load average before {meta['load_before']}, after "
        f"{meta['load_after']}).",
        "",
        f"Recipe {RECIPE}, {meta['steps']} optimizer steps per arm ({len(samp[names[0]])} rollouts of 64 sequences, "
        f"up to 32 new tokens), torch threads {meta['threads']}, precision: {a['info']['precision']}. Arms are "
        "threads of one process taking turns one optimizer step at a time; each arm samples its own completions.",
        "",
    ]
    if not a["info"]["bf16"]:
        lines += ["**This CPU trains in fp32, so autocast is a no-op and both arms run the same code.**", ""]
    cpu = [sum(c for _, c in samp[n]) for n in names]
    wall = [sum(w for w, _ in samp[n]) for n in names]
    per_rollout = paired_ratios([c for _, c in samp[names[1]]], [c for _, c in samp[names[0]]])
    lines += [
        "| | " + " | ".join(names) + " | ratio (autocast / fp32) |",
        "|---|---|---|---|",
        f"| sampling CPU s, all rollouts | {cpu[0]:.1f} | {cpu[1]:.1f} | **{cpu[1] / cpu[0]:.2f}** |",
        f"| sampling wall s, all rollouts | {wall[0]:.1f} | {wall[1]:.1f} | {wall[1] / wall[0]:.2f} |",
        "| sampling CPU ratio per rollout | | | " + ", ".join(f"{r:.2f}" for r in per_rollout) + " |",
        f"| optimizer steps, total wall s | {sum(a['wall']):.1f} | {sum(b['wall']):.1f} | "
        f"**{sum(b['wall']) / sum(a['wall']):.2f}** |",
        "| sampler vs training forward, first rollout: max, mean abs log-prob gap (nats) | "
        + " | ".join("{:.3g}, {:.3g}".format(*arms[n]["logp_gap"]) if arms[n]["logp_gap"] else "-" for n in names)
        + " | |",
        f"| optimizer step, median wall s | {median(a['wall']):.2f} | {median(b['wall']):.2f} | "
        f"{median(b['wall']) / median(a['wall']):.2f} |",
    ]
    for key, label in (("completions/mean_length", "mean completion length"), ("reward", "mean reward")):
        vals = [[h[key] for h in arms[n]["logs"] if key in h] for n in names]
        if all(vals):
            lines.append(
                f"| {label} per logged step (mean) | {statistics.fmean(vals[0]):.3f} | "
                f"{statistics.fmean(vals[1]):.3f} | |"
            )
    lines += [
        "",
        "Sampling = the time inside GRPO's `_generate_single_turn` (prefill + decode of the rollout). Step times "
        "include the rollout (sampling, reference/value forwards, reward) on a rollout's first step. The log-prob "
        "gap compares, on the first rollout, each sampled token's log-prob as the sampling pass computed it with "
        "π_old as the training forward (bf16 autocast) recomputes it: the mismatch between the policy that sampled "
        "and the one PPO's ratio assumes (`sampled_logp_gap`, plugins/ppo/ppo_forward.py).",
        "",
        "Step wall times (s): " + "; ".join(f"{n}: " + ", ".join(f"{x:.1f}" for x in arms[n]["wall"]) for n in names),
        "",
    ]
    return "\n".join(lines)


def statistics_of(arms: dict) -> dict:
    """Every ratio the report shows, autocast arm over fp32 arm."""
    names = list(ARMS)
    a, b = (arms[n] for n in names)
    cpu = [sum(c for _, c in arms[n]["sampling"]) for n in names]
    wall = [sum(w for w, _ in arms[n]["sampling"]) for n in names]
    return {
        "sampling_cpu_s": dict(zip(names, cpu, strict=True)),
        "sampling_wall_s": dict(zip(names, wall, strict=True)),
        "sampling_cpu_ratio": cpu[1] / cpu[0],
        "sampling_wall_ratio": wall[1] / wall[0],
        "sampling_cpu_ratio_per_rollout": paired_ratios(
            [c for _, c in arms[names[1]]["sampling"]], [c for _, c in arms[names[0]]["sampling"]]
        ),
        "steps_total_wall_s": {n: sum(arms[n]["wall"]) for n in names},
        "steps_total_wall_ratio": sum(b["wall"]) / sum(a["wall"]),
        "step_median_wall_ratio": median(b["wall"]) / median(a["wall"]),
        "logp_gap_max_mean": {n: arms[n]["logp_gap"] for n in names},
    }


def result(meta: dict, arms: dict) -> dict:
    """The bench/results JSON record (benchlib schema)."""
    stats = statistics_of(arms)
    figures = [
        figure(
            "ppo_sampling_precision.sampling_cpu",
            "PPO rollout sampling CPU time, autocast / fp32",
            DECIDES,
            stats["sampling_cpu_ratio"],
            None,
            "ratio of summed sampling CPU seconds over all rollouts",
            unit="x",
        ),
        figure(
            "ppo_sampling_precision.steps_total",
            "PPO optimizer steps total wall time, autocast / fp32",
            DECIDES,
            stats["steps_total_wall_ratio"],
            None,
            "ratio of summed optimizer-step wall seconds",
            unit="x",
        ),
    ]
    cpu = meta.get("cpu") or {
        "model": "not recorded by this run (bench/results/ppo_efficacy.md, same day: AMD EPYC with avx512_bf16)",
        "flags_of_interest": None,
    }
    return result_record(
        "ppo_sampling_precision", meta["command"], meta["started"], meta["threads"], stats, figures, cpu=cpu
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=24, help="optimizer steps per arm (8 per rollout in ppo-smol)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (arms take turns, one runs at a time)")
    ap.add_argument("--out", default=None, help="markdown report (default bench/results/ppo_sampling_precision.md)")
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny model, 2 steps; writes to a temp dir")
    ap.add_argument("--from-json", help="rewrite the report and result from this raw JSON, without measuring")
    a = ap.parse_args(argv)
    out = Path(a.out) if a.out else results_dir(a.quick) / "ppo_sampling_precision.md"
    if a.from_json:
        raw = json.loads(Path(a.from_json).read_text())
        raw = {"meta": raw["meta"], "arms": raw["arms"]}
        atomic_write_text(out, with_hand_notes(out, render(raw["meta"], raw["arms"])))
        write_result(result(raw["meta"], raw["arms"]), out.parent, raw=raw)
        return 0
    if a.quick:
        a.steps = 2
    set_offline_env()
    threads = os.environ.get("OMP_NUM_THREADS")
    command = f"{f'OMP_NUM_THREADS={threads} ' if threads else ''}.venv/bin/python bench/ppo_sampling_precision.py"
    meta = {
        "command": (command + " " + shlex.join(sys.argv[1:] if argv is None else argv)).rstrip(),
        "started": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "cpu": cpu_info(),
        "load_before": load_average(),
        "steps": a.steps,
        "threads": a.threads,
    }
    with tempfile.TemporaryDirectory(prefix="alignkit-ppo-sampling-") as tmp:
        sampling, trainers = {}, {}

        def build(name, autocast):
            trainer, info, sampling[name] = build_arm(autocast, a.steps, f"{tmp}/{name.split()[0]}", a.quick)
            trainers[name] = trainer
            return trainer, info

        arms = {name: (build, {"name": name, "autocast": flag}) for name, flag in ARMS.items()}
        results = run_interleaved_in_process(arms, a.steps, threads=a.threads)
    meta["load_after"] = load_average()
    raw = {
        name: {
            "wall": r.wall,
            "cpu": r.cpu,
            "logs": r.logs,
            "info": r.info,
            "sampling": sampling[name],
            "logp_gap": trainers[name].sampled_logp_gap,
        }
        for name, r in results.items()
    }
    report = render(meta, raw)
    atomic_write_text(out, report)
    path = write_result(result(meta, raw), out.parent, raw={"meta": meta, "arms": raw})
    print(report)
    print(f"wrote {out} and {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
