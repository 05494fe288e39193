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

from benchlib import load_average, median, paired_ratios, run_interleaved_in_process, set_offline_env

from alignkit.io import atomic_write_text

RECIPE = "ppo-smol"
ARMS = {"fp32 sampling": False, "autocast sampling": True}
OUT = Path(__file__).resolve().parent / "results" / "ppo_sampling_precision.md"


def build_arm(autocast: bool, steps: int, out_dir: str):
    """One arm: the ppo-smol recipe as ``alignkit train`` builds it, with sampling timed per rollout.
    Returns ``(trainer, info, sampling)``; ``sampling`` fills with [wall s, process CPU s] per rollout."""
    from alignkit.models import load_tokenizer, resolve_model_path
    from alignkit.recipe import load_recipe
    from alignkit.train import build_trainer

    overrides = [f"output_dir={out_dir}", f"max_steps={steps}", f"autocast_generation={autocast}"]
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=24, help="optimizer steps per arm (8 per rollout in ppo-smol)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (arms take turns, one runs at a time)")
    ap.add_argument("--out", default=str(OUT), help="markdown report; raw numbers beside it as .json")
    a = ap.parse_args(argv)
    set_offline_env()
    threads = os.environ.get("OMP_NUM_THREADS")
    command = f"{f'OMP_NUM_THREADS={threads} ' if threads else ''}.venv/bin/python bench/ppo_sampling_precision.py"
    meta = {
        "command": (command + " " + shlex.join(sys.argv[1:] if argv is None else argv)).rstrip(),
        "started": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "load_before": load_average(),
        "steps": a.steps,
        "threads": a.threads,
    }
    with tempfile.TemporaryDirectory(prefix="alignkit-ppo-sampling-") as tmp:
        sampling, trainers = {}, {}

        def build(name, autocast):
            trainer, info, sampling[name] = build_arm(autocast, a.steps, f"{tmp}/{name.split()[0]}")
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
    out = Path(a.out)
    atomic_write_text(out.with_suffix(".json"), json.dumps({"meta": meta, "arms": raw}, indent=1))
    atomic_write_text(out, report)
    print(report)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
