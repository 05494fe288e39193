"""Optimizer-step overhead of the alignkit plugins over stock TRL 1.16, for SFT, Reward, DPO and GRPO.

Four arms per trainer, all on the embedded SmolLM2-135M-Instruct with LoRA (r=16, all-linear), CPU, at the precision
alignkit picks for this CPU (``--precision auto``: bf16 autocast where the CPU has avx512_bf16/AMX, else fp32):

* ``stock`` -- ``trl.XConfig`` / ``trl.XTrainer``;
* ``off``   -- ``alignkit.plugins.XConfig`` / ``XTrainer`` with every addition at its default (off);
* ``on``    -- the same with every addition on (see ``ALL_ON``);
* ``stock-again`` -- a second stock trainer, an A/A control whose ratio to ``stock`` is the noise floor.

Goals: off/stock <= 1.02 (a plugin that is off must cost nothing) and on/stock <= 1.05.

Method (details in bench/benchlib.py): each arm is a real ``trainer.train()`` on its own model copy, all arms
threads of one process (``--isolation thread``; ``process`` gives each arm its own process, which adds a per-process
speed bias of several percent); a baton callback makes the arms take turns, one optimizer step each, in an order
balanced across rounds, so the machine's load hits every arm alike. A step is timed from ``on_step_begin`` to
``on_step_end`` (forward + backward, for GRPO also generation and reward scoring, then clipping and
``optimizer.step()``); data loading and logging fall outside it.
Every arm sees the same rows in the same order (same seed). The first ``--warmup`` steps of each arm are dropped.
Reference per round: the mean of the two stock arms' steps. Verdict: the median over rounds of the paired ratio
arm/reference (with its IQR); also reported, the ratio of medians, CPU-time ratios and total-time ratios.

    .venv/bin/python bench/plugin_overhead.py                  # full run -> bench/results/plugin_overhead_<kind>.md
    .venv/bin/python bench/plugin_overhead.py --quick          # smoke run on a tiny model, written to a temp dir
    .venv/bin/python bench/plugin_overhead.py --trainers dpo --steps 20
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from benchlib import (
    ArmResult,
    bench_model_path,
    command_line,
    cpu_info,
    cpu_kind,
    figure,
    fmt_times,
    load_average,
    median,
    paired_ratios,
    preference_pairs,
    quartiles,
    result_record,
    results_dir,
    run_interleaved,
    run_interleaved_in_process,
    set_offline_env,
    sharegpt_chats,
    write_result,
)

from alignkit.eval.stats import bootstrap_ci

KINDS = ("sft", "reward", "dpo", "grpo")
# "stock-again" is an A/A control: a second, identical stock trainer. Its ratio to "stock" is the noise floor of the
# measurement; an off/stock ratio that is no further from 1 than the control's is indistinguishable from zero cost.
ARMS = ("stock", "off", "on", "stock-again")
GOALS = {"off": 1.02, "on": 1.05}
# The verdict statistic, fixed here before a run. Until commit ec59198 (2026-12-01) the verdict was the ratio of
# median step times; it moved to the paired ratio after DPO off read 1.041 on it (a miss), so every result shows both.
VERDICT = "median over rounds of the paired per-round ratio arm / mean of the two stock arms"
FORMER_VERDICT = "ratio of median step times (the verdict until commit ec59198, 2026-12-01)"
N_ROWS = 48
# Every plugin field set to a typical recipe value. GRPO's kl_target needs beta > 0, and beta > 0 makes TRL run a
# reference forward, so all GRPO arms use the same beta (else "on" would pay for the reference and "stock" would not).
ALL_ON = {
    "sft": {"unlikelihood_alpha": 0.5},
    "reward": {"length_decorrelation_coef": 0.1},
    "dpo": {"rdpo_alpha": 0.01, "kl_target": 1.0, "log_completion_stats": True, "policy_sample_steps": 8},
    "grpo": {
        "advantage_method": "rloo",
        "length_penalty_coef": 0.1,
        "length_penalty_target": 8,
        "repetition_penalty_weight": 0.5,
        "kl_target": 0.05,
    },
}
GRPO_BETA = 0.04
ISOLATION = {
    "thread": "all arms threads of one process (each with its own RNG streams), so no arm carries a per-process "
    "speed bias",
    "process": "each arm in its own process",
}
# What each plugin adds per step when on, so a missed goal can be read against it.
WHERE_COST = """## Where the `on` cost comes from

- SFT `unlikelihood_alpha`: no second forward. Hooks on TRL's fused LM head capture the final hidden states and
  target log-probs of its single forward; the context tokens' logits are a (B, T-1, T) product of hidden states with
  their output-embedding rows, and the softmax normaliser comes from the target's logit and log-prob: O(B T^2 H),
  small against the forward (plugins/sft/unlikelihood.py). The repetition-rate log projects <= 32 positions per batch.
- Reward `length_decorrelation_coef`: a Pearson correlation over 2B scalars and a shared-prefix scan of the token
  ids; microseconds against a forward/backward.
- DPO `rdpo_alpha` + `kl_target` + `log_completion_stats`: a forward hook that copies the per-token log-probs of
  policy and reference, a k2 KL over them, and a Python n-gram repetition count over every completion's token list;
  small, but the n-gram count is Python on the CPU. `policy_sample_steps` 8: every 8th step also generates 2 greedy
  replies of up to 64 tokens; medians skip that step, the total-time column charges it.
- GRPO `advantage_method` + penalties + `kl_target`: two extra reward functions over the decoded completions and a
  recomputation of the advantages from the (N, n_funcs) rewards; small next to generation.
- Every `off` arm runs exactly TRL's code path after one `if` in `compute_loss` (GRPO: one `is None` check in
  `_generate_and_score_completions`), so any off/stock difference beyond the A/A control is not from the plugin.
"""


def distinct_words(prompts, completions, **kwargs) -> list[float]:
    """Cheap task-free reward (fraction of distinct words): GRPO needs one, its cost is the same in every arm."""
    texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
    return [len(set(t.split())) / max(1, len(t.split())) for t in texts]


def build_arm(kind: str, arm: str, model_path: str, steps: int, quick: bool, out_dir: str, bf16: bool):
    """Build one arm's trainer (in the arm's process or thread). Returns ``(trainer, info)``."""
    import trl
    from datasets import Dataset
    from peft import LoraConfig

    import alignkit.plugins as ak

    chats, source = sharegpt_chats(8 if quick else N_ROWS)  # a smoke run needs a few rows, not 48
    common = dict(
        output_dir=out_dir,
        max_steps=steps,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=1,
        learning_rate=1e-4,
        bf16=bf16,
        use_cpu=True,
        gradient_checkpointing=False,
        report_to="none",
        seed=0,
        logging_steps=1,
        save_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    lora = dict(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear")
    max_length = 128 if quick else 320
    names = {"sft": "SFT", "reward": "Reward", "dpo": "DPO", "grpo": "GRPO"}[kind]
    module = trl if arm.startswith("stock") else ak
    config_cls, trainer_cls = getattr(module, f"{names}Config"), getattr(module, f"{names}Trainer")
    extra = ALL_ON[kind] if arm == "on" else {}

    if kind == "sft":
        args = config_cls(**common, max_length=max_length, **extra)
        data = Dataset.from_list(chats)
        trainer = trainer_cls(
            model=model_path, args=args, train_dataset=data, peft_config=LoraConfig(task_type="CAUSAL_LM", **lora)
        )
    elif kind == "reward":
        args = config_cls(**common, max_length=min(max_length, 256), **extra)
        data = Dataset.from_list(preference_pairs(chats))
        trainer = trainer_cls(
            model=model_path,
            args=args,
            train_dataset=data,
            peft_config=LoraConfig(task_type="SEQ_CLS", modules_to_save=["score"], **lora),
        )
    elif kind == "dpo":
        # 2 pairs, not 4: a DPO arm at 4 pairs x 320 tokens holds ~7 GB (policy + reference activations, full-vocab
        # log-softmax); four arms of that were OOM-killed beside the other jobs on this 24 GB machine.
        common["per_device_train_batch_size"] = 2
        args = config_cls(**common, max_length=max_length, beta=0.1, **extra)
        data = Dataset.from_list(preference_pairs(chats))
        trainer = trainer_cls(
            model=model_path, args=args, train_dataset=data, peft_config=LoraConfig(task_type="CAUSAL_LM", **lora)
        )
    else:
        args = config_cls(
            **common,
            num_generations=4,
            max_completion_length=8 if quick else 16,
            beta=GRPO_BETA,
            temperature=1.0,
            **extra,
        )
        data = Dataset.from_list([{"prompt": [c["messages"][0]]} for c in chats])
        trainer = trainer_cls(
            model=model_path,
            reward_funcs=[distinct_words],
            args=args,
            train_dataset=data,
            peft_config=LoraConfig(task_type="CAUSAL_LM", **lora),
        )
    return trainer, {"data": source, "config": type(args).__module__ + "." + type(args).__name__}


def stock_baseline(wall: dict[str, list[float]]) -> list[float]:
    """Per-round reference step time: the mean of the stock arms' steps of that round (both copies when the A/A
    control ran). Two copies average out the speed bias of one model copy, which the A/A ratio shows."""
    stocks = [wall[arm] for arm in ("stock", "stock-again") if arm in wall]
    return [sum(steps) / len(steps) for steps in zip(*stocks, strict=True)]


def paired_median_ci(pairs: list[float]) -> tuple[float, float]:
    """95 % percentile-bootstrap interval of the median over rounds of the paired ratios (4000 resamples, seed 0;
    ``alignkit.eval.stats.bootstrap_ci``): how far the verdict's point estimate could move with other rounds."""
    if len(pairs) < 2:
        return float("nan"), float("nan")
    _, low, high = bootstrap_ci(pairs, np.median, n_resamples=4000)
    return low, high


def summarize(kind: str, results: dict, warmup: int) -> tuple[str, dict]:
    """Markdown section for one trainer, plus the ratios for the summary table."""
    wall = {arm: r.wall[warmup:] for arm, r in results.items()}
    cpu = {arm: r.cpu[warmup:] for arm, r in results.items()}
    base_wall, base_cpu = stock_baseline(wall), stock_baseline(cpu)
    med = {arm: median(w) for arm, w in wall.items()}
    lines = [
        f"### {kind.upper()}\n",
        f"Data: {results['stock'].info['data']}; torch threads {results['stock'].info['torch_threads']}. "
        f"{len(wall['stock'])} measured steps per arm after {warmup} warm-up.\n",
        "| arm | median wall (s) | median CPU (s) | ratio of medians vs stock arms | paired ratio median [IQR] "
        "| measured wall times (s) | warm-up (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    ratios = {}
    if "stock-again" in wall:  # the A/A noise floor, on both statistics
        ratios["stock-again"] = med["stock-again"] / med["stock"]
        aa_pairs = paired_ratios(wall["stock-again"], wall["stock"])
        ratios["stock-again_paired"], ratios["stock-again_paired_ci"] = median(aa_pairs), paired_median_ci(aa_pairs)
    for arm in results:
        if arm.startswith("stock"):
            ratio_txt = f"A/A {ratios['stock-again']:.3f}" if arm == "stock-again" else "1 (reference)"
            paired_txt = "-"
        else:
            ratios[arm] = med[arm] / median(base_wall)
            pairs = paired_ratios(wall[arm], base_wall)
            lo, hi = quartiles(pairs)
            ratios[f"{arm}_paired"] = median(pairs)
            ratios[f"{arm}_paired_ci"] = paired_median_ci(pairs)
            ratios[f"{arm}_cpu"] = median(cpu[arm]) / median(base_cpu)
            ratios[f"{arm}_total"] = sum(wall[arm]) / sum(base_wall)  # what a run pays, periodic work included
            ratio_txt = f"**{ratios[arm]:.3f}**"
            paired_txt = f"{median(pairs):.3f} [{lo:.3f}, {hi:.3f}]"
        lines.append(
            f"| {arm} | {med[arm]:.2f} | {median(cpu[arm]):.2f} | {ratio_txt} | {paired_txt} | "
            f"{fmt_times(wall[arm])} | {fmt_times(results[arm].wall[:warmup])} |"
        )
    if kind == "grpo":  # sampled lengths differ between arms once their policies diverge; show they stay comparable
        lens = {
            arm: [h["completions/mean_length"] for h in r.logs if "completions/mean_length" in h]
            for arm, r in results.items()
        }
        lines.append(
            "\nMean completion length per step (tokens): "
            + "; ".join(f"{a}: {median(v):.1f} (median)" for a, v in lens.items() if v)
            + "."
        )
    return "\n".join(lines) + "\n", ratios


def render_report(meta: dict, measured: dict[str, dict[str, ArmResult]]) -> str:
    """The markdown report of a run: summary table, where the cost comes from, and one section per trainer."""
    sections, summary = [], {}
    for kind in meta["kinds"]:
        if kind in meta["failed"]:
            sections.append(f"### {kind.upper()}\n\nFAILED:\n\n```\n{meta['failed'][kind]}\n```\n")
            continue
        text, summary[kind] = summarize(kind, measured[kind], meta["warmup"])
        sections.append(
            text + f"\n({meta['seconds'][kind]} s for this trainer, load average after: {meta['load_after'][kind]})\n"
        )

    def verdict(kind, arm):
        # The paired ratio is the verdict: rounds differ by up to 2x in step time (row lengths, GRPO's sampled
        # lengths), and a ratio of medians can pick different rounds for different arms; a per-round ratio cannot.
        # "meets" and "misses" judge the point estimate; the 95 % CI beside it says whether the rounds pin it down.
        ratio, (low, high) = summary[kind][f"{arm}_paired"], summary[kind][f"{arm}_paired_ci"]
        interval = f"{ratio:.3f} [{low:.3f}, {high:.3f}]"
        if ratio <= GOALS[arm]:
            return f"{interval} meets <= {GOALS[arm]}" + ("" if high <= GOALS[arm] else " (point; CI reaches past)")
        control = summary[kind].get("stock-again_paired")
        # A miss no larger than the A/A control's own deviation cannot be told apart from noise on this machine.
        noise = control is not None and ratio - 1 <= abs(control - 1)
        return f"{interval} **misses** <= {GOALS[arm]}" + (" (within A/A noise)" if noise else "")

    table = [
        "| trainer | off / stock arms, paired [95% CI] (goal <= 1.02) | on / stock arms, paired [95% CI] "
        "(goal <= 1.05) | A/A: stock-again / stock, paired [95% CI] | ratio of medians off, on "
        "| CPU-time off, on | total time off, on |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind in summary:
        r = summary[kind]
        control = "not run"
        if "stock-again" in r:
            low, high = r["stock-again_paired_ci"]
            control = f"{r['stock-again_paired']:.3f} [{low:.3f}, {high:.3f}]"
        table.append(
            f"| {kind.upper()} | {verdict(kind, 'off')} | {verdict(kind, 'on')} | {control} | "
            f"{r['off']:.3f}, {r['on']:.3f} | {r['off_cpu']:.3f}, {r['on_cpu']:.3f} | "
            f"{r['off_total']:.3f}, {r['on_total']:.3f} |"
        )
    # The former verdict, judged too: a statistic switched after a miss is shown beside the new one, never dropped.
    former = [
        f"{kind.upper()} {arm} {summary[kind][arm]:.3f} "
        + ("meets" if summary[kind][arm] <= GOALS[arm] else "**misses**")
        + f" <= {GOALS[arm]}"
        for kind in summary
        for arm in ("off", "on")
    ]
    table.append(f"\nOn the {FORMER_VERDICT}: " + "; ".join(former) + ".")
    on_fields = ", ".join(f"{k}: {v}" for k, v in ALL_ON.items() if k in meta["kinds"])
    report = (
        "# Plugin overhead: alignkit trainers vs stock TRL 1.16 (embedded SmolLM2-135M, LoRA, CPU)\n\n"
        f"Command: `{meta['command']}` (run {meta['started']}; load average before {meta['load_before']}).\n\n"
        "Arms: `stock` = trl.XTrainer, `off` = alignkit.plugins.XTrainer with every addition off, `on` = every "
        f"addition on ({on_fields}; GRPO beta {GRPO_BETA} in "
        "all arms), and `stock-again` = a second stock trainer (A/A control: its ratio is the noise floor). LoRA r=16 "
        f"all-linear, precision {meta['precision_note']}, use_cpu, no gradient checkpointing, batch 4 (DPO: 2 "
        "pairs), no accumulation, one torch thread per arm.\n\n"
        f"Method: each arm runs a real `trainer.train()` on its own model copy, {ISOLATION[meta['isolation']]}; a "
        "baton callback interleaves them one "
        "optimizer step at a time, in orders balanced across rounds (Williams design: each arm takes each position "
        "and follows each other arm equally often), so load from other jobs on this shared 2-core "
        "machine hits all arms alike. Step = `on_step_begin` to `on_step_end` (forward/backward, GRPO generation "
        "and scoring, clipping, optimizer step). The reference step time of a round is the mean of its two stock "
        "arms' steps (one model copy can be a few percent faster than another; the A/A ratio shows by how much). "
        "The verdict is the paired ratio: the median over rounds of arm/reference within the same round (its IQR "
        "shows the noise, a 95 % bootstrap CI of the median how far it could move), since rounds differ up to 2x in "
        "step time; `meets`/`misses` judge the point estimate. Also shown: the ratio of medians of wall "
        "time, the same for CPU time, and total time, the ratio of summed step times, which charges periodic work "
        "(DPO's policy samples) that medians skip.\n\n"
        "## Summary (median over rounds of the paired step-time ratio, with its 95% bootstrap CI)\n\n"
        + "\n".join(table)
        + "\n\n"
        + WHERE_COST
        + "\n## Per trainer\n\n"
        + "\n".join(sections)
    )
    return report


def result(meta: dict, measured: dict[str, dict[str, ArmResult]]) -> dict:
    """The bench/results JSON record (benchlib schema): every ratio summarize() computed, and one figure per trainer
    and arm on the verdict statistic, with the former verdict statistic beside it."""
    statistics, figures = {}, []
    # A run that recorded its CPU is one CPU kind's result (plugin_overhead_<kind>.json, keys
    # plugin_overhead.<kind>.*), as precision's and train_speed's: the precision alignkit picks, hence the step,
    # differs by kind. The first run, 2026-12-01, recorded none and keeps its plain name and keys.
    cpu_kind_ = cpu_kind(meta["cpu"]["flags_of_interest"]) if meta.get("cpu") else None
    bench = f"plugin_overhead_{cpu_kind_}" if cpu_kind_ else "plugin_overhead"
    prefix = f"plugin_overhead.{cpu_kind_}" if cpu_kind_ else "plugin_overhead"
    on_cpu = f" ({cpu_kind_} CPU)" if cpu_kind_ else ""
    for kind in meta["kinds"]:
        if kind in meta["failed"]:
            statistics[kind] = {"failed": meta["failed"][kind]}
            continue
        ratios = summarize(kind, measured[kind], meta["warmup"])[1]
        statistics[kind] = {k: list(v) if isinstance(v, tuple) else v for k, v in ratios.items()}
        for arm in ("off", "on"):
            paired, (low, high) = ratios[f"{arm}_paired"], ratios[f"{arm}_paired_ci"]
            figures.append(
                figure(
                    f"{prefix}.{kind}.{arm}",
                    f"{kind.upper()} step time, plugin {arm} / stock TRL{on_cpu}",
                    f"<= {GOALS[arm]}",
                    paired,
                    paired <= GOALS[arm],
                    VERDICT,
                    unit="x",
                    also=[
                        {
                            "statistic": FORMER_VERDICT,
                            "measured": ratios[arm],
                            "met": ratios[arm] <= GOALS[arm],
                        }
                    ],
                    note=f"95% bootstrap CI [{low:.3f}, {high:.3f}]"
                    + (f"; A/A {ratios['stock-again_paired']:.3f}" if "stock-again_paired" in ratios else ""),
                )
            )
    threads = {k: arms["stock"].info.get("torch_threads") for k, arms in measured.items() if "stock" in arms}
    cpu = meta.get("cpu") or {
        "model": "not recorded by this run (commit fbbb4a2 says it ran on an idle 2-core AMD EPYC)",
        "flags_of_interest": None,
    }
    return result_record(bench, meta["command"], meta["started"], threads, statistics, figures, cpu=cpu)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trainers", default=",".join(KINDS), help="comma-separated subset of sft,reward,dpo,grpo")
    parser.add_argument(
        "--steps",
        type=int,
        default=8,
        help="measured optimizer steps per arm (8 = two full balanced cycles of 4 arms)",
    )
    parser.add_argument("--warmup", type=int, default=1, help="steps per arm dropped before measuring")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 measured steps, short sequences")
    parser.add_argument("--no-control", action="store_true", help="skip the A/A control arm (stock-again)")
    # One thread by default: on a shared 2-core machine a 2-thread OpenMP team stalls at every barrier whenever another
    # job holds one of the cores, which adds far more noise than it saves time.
    parser.add_argument("--threads", type=int, default=1, help="torch threads per arm (0 = torch's default)")
    parser.add_argument(
        "--precision", choices=("auto", "fp32", "bf16"), default="auto", help="auto = alignkit's choice for this CPU"
    )
    parser.add_argument(
        "--isolation",
        choices=("thread", "process"),
        default="thread",
        help="arms as threads of one process (default) or one process each",
    )
    parser.add_argument(
        "--out",
        default=None,
        help="markdown report, raw step times beside it as .json (default: bench/results/plugin_overhead.md, none "
        "with --quick: a temp dir)",
    )
    parser.add_argument(
        "--resummarize", metavar="JSON", help="rewrite the report from a run's raw .json instead of measuring"
    )
    args = parser.parse_args(argv)
    kinds = [k.strip() for k in args.trainers.split(",") if k.strip()]
    if unknown := [k for k in kinds if k not in KINDS]:
        parser.error(f"--trainers: unknown {unknown}; choose from {list(KINDS)}")
    if args.quick:
        args.steps, args.warmup = 2, 1
    out = args.out or str(results_dir(args.quick) / f"plugin_overhead_{cpu_kind(cpu_info()['flags_of_interest'])}.md")
    from alignkit.io import atomic_write_text

    if args.resummarize:
        raw = json.loads(Path(args.resummarize).read_text())
        raw = {"meta": raw["meta"], "kinds": raw["kinds"]}  # the raw run; the schema keys are rebuilt below
        measured = {k: {a: ArmResult(**r) for a, r in arms.items()} for k, arms in raw["kinds"].items()}
        report = render_report(raw["meta"], measured)
        atomic_write_text(out, report)
        write_result(result(raw["meta"], measured), Path(out).parent, raw=raw)
        print(report)
        return 0
    set_offline_env()
    model_path = bench_model_path(args.quick)
    if args.precision == "auto":
        from alignkit.hardware import choose_settings, detect

        settings, reasons = choose_settings(detect(), explicit=set())
        bf16, precision_note = bool(settings["bf16"]), reasons["precision"]
    else:
        bf16, precision_note = args.precision == "bf16", f"{args.precision} (--precision)"
    interleave = run_interleaved_in_process if args.isolation == "thread" else run_interleaved
    meta = {
        "command": command_line(argv),
        "started": time.strftime("%Y-%m-%d %H:%M"),
        "cpu": cpu_info(),
        "load_before": load_average(),
        "precision_note": precision_note,
        "isolation": args.isolation,
        "warmup": args.warmup,
        "kinds": kinds,
        "failed": {},
        "seconds": {},
        "load_after": {},
    }
    measured: dict[str, dict[str, ArmResult]] = {}
    for kind in kinds:
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix=f"overhead-{kind}-") as tmp:
            arms = {
                arm: (
                    build_arm,
                    dict(
                        kind=kind,
                        arm=arm,
                        model_path=model_path,
                        steps=args.warmup + args.steps,
                        quick=args.quick,
                        out_dir=str(Path(tmp) / arm),
                        bf16=bf16,
                    ),
                )
                for arm in ARMS
                if not (args.no_control and arm == "stock-again")
            }
            try:
                results = interleave(arms, args.warmup + args.steps, threads=args.threads or None)
            except RuntimeError as exc:  # report the failure and still measure the other trainers
                meta["failed"][kind] = str(exc)
                print(f"{kind}: FAILED\n{exc}", flush=True)
                continue
        # Keep only the log entries the report reads: full GRPO logs of four arms are large.
        measured[kind] = {
            arm: dataclasses.replace(r, logs=[h for h in r.logs if "completions/mean_length" in h])
            for arm, r in results.items()
        }
        meta["seconds"][kind], meta["load_after"][kind] = round(time.perf_counter() - t0), load_average()
        print(summarize(kind, measured[kind], args.warmup)[0], flush=True)
    report = render_report(meta, measured)
    raw = {
        "meta": meta,
        "kinds": {k: {a: dataclasses.asdict(r) for a, r in v.items()} for k, v in measured.items()},
    }
    atomic_write_text(out, report)
    path = write_result(result(meta, measured), Path(out).parent, raw=raw)
    print(report)
    print(f"wrote {out} and {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
