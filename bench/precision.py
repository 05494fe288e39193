"""dpo-smol step time: alignkit's hardware-chosen precision settings vs TRL's own defaults, measured side by side.

On a CPU, :func:`alignkit.hardware.choose_settings` picks bf16 autocast where the CPU has avx512_bf16/AMX (fp32
otherwise), no gradient checkpointing, ``use_cpu=True``. TRL 1.16
(through transformers) resolves ``bf16=True`` and ``gradient_checkpointing=True`` when a config leaves them unset,
which on a CPU means bf16 autocast plus recomputed activations. This benchmark runs the real dpo-smol recipe
(``alignkit.recipe.load_recipe("dpo-smol", ...)``: DPO, LoRA r=16 all-linear, batch and max_length as in
recipes/dpo-smol.yaml; the report prints them) for a few optimizer steps under both; two more arms split the
difference into its two causes:

* ``alignkit``       -- the recipe as ``alignkit train`` resolves it on this machine (no checkpointing; the
  precision alignkit.hardware picked, which the report prints; the recipe's ``cpu_fast_path``);
* ``alignkit-aa``    -- the same again in a process of its own: the A/A control, how far two identical arms differ;
* ``trl-defaults``   -- ``use_cpu=True``, TRL's resolved defaults for ``bf16`` and ``gradient_checkpointing`` (read
  from a fresh ``trl.DPOConfig``, not hard-coded) and TRL's own path (``cpu_fast_path=false``);
* ``fp32``           -- fp32, no checkpointing, fast path on: alignkit's choice on CPUs without native bf16;
* ``bf16-autocast``  -- bf16 autocast, no checkpointing, fast path on except that the frozen base is cast to bf16 on
  every forward, as autocast does (:func:`alignkit.plugins.common.fast_path.frozen_linear_cast` switched off);
* ``bf16-frozen``    -- bf16 autocast, no checkpointing, fast path on with the frozen base cast to bf16 once per
  ``train()``: alignkit's choice where the CPU has native bf16;
* ``ckpt-only``      -- fp32 with gradient checkpointing (opt-in with ``--arms``).

The default runs every arm but ``ckpt-only``. The fast path packs rows and scores only completion positions, so
six dpo-smol arms fit in 24 GB side by side; checkpointing is left out because TRL's defaults arm already has it.

Arms run interleaved, one optimizer step each in turn, in separate processes (bench/benchlib.py explains why: the
mixed-precision mode lives in accelerate's process-wide state). Reported: ratio of median step times vs ``alignkit``.

    .venv/bin/python bench/precision.py                 # full run -> bench/results/precision_<cpu kind>.{md,json}
    .venv/bin/python bench/precision.py --quick         # smoke run (tiny model, batch 2, max_length 128), temp dir
    .venv/bin/python bench/precision.py --arms alignkit,trl-defaults,ckpt-only --steps 6

Data: the recipe's card (sharegpt-pairs-smol) when its build is already cached; building it generates 192 replies
with the model (minutes to tens of minutes), so otherwise the benchmark uses pairs derived from the embedded
sharegpt-sft-smol chats (bench/benchlib.py ``preference_pairs``) with similar lengths. The report says which.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from benchlib import (
    bench_model_path,
    command_line,
    cpu_info,
    cpu_kind,
    cpu_model_and_flags,
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
    set_offline_env,
    sharegpt_chats,
    write_result,
)

ARMS = ("alignkit", "alignkit-aa", "trl-defaults", "fp32", "bf16-autocast", "bf16-frozen", "ckpt-only")
DEFAULT_ARMS = "alignkit,alignkit-aa,trl-defaults,fp32,bf16-autocast,bf16-frozen"
AA_ARM = "alignkit-aa"  # the same configuration as alignkit: a control, not a candidate for the fastest arm
RECIPE = "dpo-smol"
# Goal and verdict statistic, fixed before a run (issue 13): alignkit's automatic choice is the fastest arm run, or
# within 3 % of it, on each CPU kind; results are kept per kind (bench/results/precision_<kind>.json).
GOAL = 1.03
VERDICT = (
    "median step time of alignkit / the smallest median step time of any other configuration run (not the A/A arm)"
)


def result(meta: dict, medians: dict[str, float], paired: dict[str, float], cpu: dict) -> dict:
    """The bench/results JSON record (benchlib schema) for this CPU kind."""
    kind = cpu_kind(cpu.get("flags_of_interest") or [])
    fastest = min(m for arm, m in medians.items() if arm != AA_ARM)
    verdict = medians["alignkit"] / fastest
    ratios = {arm: m / medians["alignkit"] for arm, m in medians.items()}
    aa = f"; A/A control (alignkit-aa / alignkit) {ratios[AA_ARM]:.3f}x" if AA_ARM in ratios else ""
    figures = [
        figure(
            f"precision.{kind}.auto_vs_fastest",
            f"dpo-smol step: alignkit's precision choice vs the fastest arm ({kind} CPU)",
            f"<= {GOAL}",
            verdict,
            verdict <= GOAL,
            VERDICT,
            unit="x",
            note="arms: " + ", ".join(f"{a} {r:.2f}x" for a, r in ratios.items()) + aa,
        )
    ]
    if "trl-defaults" in ratios:
        figures.append(
            figure(
                f"precision.{kind}.trl_defaults",
                f"dpo-smol step: TRL's defaults (use_cpu) / alignkit ({kind} CPU)",
                "none: shows what the automatic choice saves",
                ratios["trl-defaults"],
                None,
                "ratio of median step times",
                unit="x",
            )
        )
    stats = {"median_step_s": medians, "ratio_of_medians_vs_alignkit": ratios, "paired_ratio_median": paired}
    return result_record(
        f"precision_{kind}", meta["command"], meta["started"], meta["threads"], stats, figures, cpu=cpu
    )


def trl_precision_defaults() -> dict:
    """What TRL resolves for bf16 / gradient_checkpointing when a config leaves them unset (with use_cpu=True)."""
    import trl

    with tempfile.TemporaryDirectory() as tmp:
        cfg = trl.DPOConfig(output_dir=tmp, use_cpu=True, report_to="none")
        return {"bf16": bool(cfg.bf16), "gradient_checkpointing": bool(cfg.gradient_checkpointing)}


def recipe_pairs(n: int):
    """The recipe card's pairs if already built, else derived pairs; returns ``(Dataset, source)``."""
    from datasets import Dataset

    from alignkit.cache import cache_dir
    from alignkit.data.cards import load_card, load_split

    card = load_card("sharegpt-pairs-smol")
    want = card.source.get("args", {})
    built = False
    for manifest in cache_dir("datasets", card.name).glob("*/manifest.json"):
        # Only a build of the card's own arguments counts: load_split would otherwise start a fresh build (192
        # generated replies, many minutes) inside every arm at once.
        fp = json.loads(manifest.read_text(encoding="utf-8")).get("fingerprint", {})
        gen = fp.get("generation", {})
        built |= all(fp.get(k) == want.get(k) for k in ("n_train", "n_test", "seed")) and gen.get(
            "max_new_tokens"
        ) == want.get("max_new_tokens")
    if built:
        try:
            return load_split(card, "train", max_samples=n, seed=42), "sharegpt-pairs-smol card"
        except Exception as exc:  # fall through to derived pairs; the report says why
            note = f" (card failed: {type(exc).__name__}: {exc})"
    else:
        note = " (no build of the sharegpt-pairs-smol card with its own arguments in the cache)"
    chats, source = sharegpt_chats(n)
    return Dataset.from_list(preference_pairs(chats)), f"pairs derived from {source}{note}"


def build_arm(arm: str, steps: int, quick: bool, out_dir: str):
    """Build the dpo-smol trainer for one arm exactly as ``alignkit train`` does (runs in the arm's process)."""
    from alignkit.models import load_tokenizer, resolve_model_path
    from alignkit.recipe import load_recipe
    from alignkit.train import load_model, peft_config_for

    overrides = [
        f"max_steps={steps}",
        "save_strategy='no'",
        "logging_steps=1",
        "warmup_steps=0",
        f"output_dir={out_dir}",
        "disable_tqdm=true",
    ]
    if quick:
        overrides += ["per_device_train_batch_size=2", "gradient_accumulation_steps=1", "max_length=128"]
        overrides += [f"model_name_or_path={bench_model_path(True)}"]
    defaults = trl_precision_defaults()
    bf16 = {"use_cpu": True, "bf16": True, "gradient_checkpointing": False, "cpu_fast_path": True}
    precision = {
        "alignkit": {},  # nothing explicit: alignkit.hardware chooses
        AA_ARM: {},
        "trl-defaults": {"use_cpu": True, **defaults, "cpu_fast_path": False},
        "fp32": {"use_cpu": True, "bf16": False, "gradient_checkpointing": False, "cpu_fast_path": True},
        "bf16-autocast": bf16,
        "bf16-frozen": bf16,
        "ckpt-only": {"use_cpu": True, "bf16": False, "gradient_checkpointing": True},
    }[arm]
    if arm == "bf16-autocast":  # this arm's process only: autocast casts the frozen weights on every forward
        import contextlib

        import alignkit.plugins.common.fast_path as fast_path

        fast_path.frozen_linear_cast = lambda models, dtype: contextlib.nullcontext(0)
    overrides += [f"{k}={str(v).lower()}" for k, v in precision.items()]
    recipe = load_recipe(RECIPE, overrides)
    targs = recipe.training_args
    model_path = resolve_model_path(recipe.model_args.model_name_or_path)
    tokenizer = load_tokenizer(model_path)
    n_pairs = max(32, steps * targs.per_device_train_batch_size * targs.gradient_accumulation_steps)
    data, source = recipe_pairs(n_pairs)
    model = load_model(recipe, model_path, tokenizer)
    trainer = recipe.trainer_class(
        model=model, args=targs, train_dataset=data, processing_class=tokenizer, peft_config=peft_config_for(recipe)
    )
    info = {
        "data": source,
        "bf16": targs.bf16,
        "cpu_fast_path": targs.cpu_fast_path,
        "frozen base cast once": bool(targs.cpu_fast_path and targs.bf16 and arm != "bf16-autocast"),
        "gradient_checkpointing": targs.gradient_checkpointing,
        "use_cpu": targs.use_cpu,
        "weights dtype": str(next(trainer.model.parameters()).dtype),
        "accelerate mixed_precision": trainer.accelerator.mixed_precision,
        "batch": f"{targs.per_device_train_batch_size} x {targs.gradient_accumulation_steps} accumulation, "
        f"max_length {targs.max_length}",
        "hardware reasons": recipe.hardware_reasons if arm == "alignkit" else None,
        "trl defaults": defaults,
    }
    return trainer, info


def torch_cpu_capability() -> dict:
    import torch

    out = {"torch": torch.__version__, "cpu capability": torch.backends.cpu.get_cpu_capability()}
    try:
        out["mkldnn bf16 supported"] = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:  # private op; absent in some builds
        out["mkldnn bf16 supported"] = "unknown"
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arms", default=DEFAULT_ARMS, help=f"comma-separated subset of {','.join(ARMS)}")
    parser.add_argument("--steps", type=int, default=5, help="measured optimizer steps per arm")
    parser.add_argument("--warmup", type=int, default=1, help="steps per arm dropped before measuring")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 measured step, batch 2, max_length 128")
    # One thread by default, as in plugin_overhead.py: a 2-thread team on a shared 2-core machine stalls at barriers.
    parser.add_argument("--threads", type=int, default=1, help="torch threads per arm (0 = torch's default)")
    parser.add_argument(
        "--out",
        default=None,
        help="markdown report (default: bench/results/precision_<cpu kind>.md, a temp dir with --quick); the JSON "
        "goes beside it as precision_<cpu kind>.json",
    )
    args = parser.parse_args(argv)
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    if unknown := [a for a in arms if a not in ARMS]:
        parser.error(f"--arms: unknown {unknown}; choose from {list(ARMS)}")
    if "alignkit" not in arms:
        parser.error("--arms must include alignkit (the baseline of every ratio)")
    if args.quick:  # one arm, one step: the smoke run checks the bench runs (each arm is a process of its own)
        args.steps, args.warmup = 1, 1
        arms = ["alignkit"]
    kind = cpu_kind(cpu_info().get("flags_of_interest") or [])
    out = args.out or str(results_dir(args.quick) / f"precision_{kind}.md")
    set_offline_env()
    from alignkit.io import atomic_write_text

    command = command_line(argv)
    started, load_before, t0 = time.strftime("%Y-%m-%d %H:%M"), load_average(), time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="precision-") as tmp:
        specs = {
            arm: (
                build_arm,
                dict(arm=arm, steps=args.warmup + args.steps, quick=args.quick, out_dir=str(Path(tmp) / arm)),
            )
            for arm in arms
        }
        results = run_interleaved(specs, args.warmup + args.steps, threads=args.threads or None)
    elapsed = time.perf_counter() - t0

    w = args.warmup
    wall = {a: r.wall[w:] for a, r in results.items()}
    base = median(wall["alignkit"])
    rows = [
        "| arm | bf16 | frozen base cast once | grad. ckpt | cpu_fast_path | accelerate mixed precision | "
        "median step (s) | ratio vs alignkit | paired ratio median [IQR] | measured steps (s) | warm-up (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    ratios = {}
    for arm in arms:
        info = results[arm].info
        pairs = paired_ratios(wall[arm], wall["alignkit"])
        lo, hi = quartiles(pairs)
        ratios[arm] = median(wall[arm]) / base
        rows.append(
            f"| {arm} | {info['bf16']} | {info['frozen base cast once']} | {info['gradient_checkpointing']} | "
            f"{info['cpu_fast_path']} | {info['accelerate mixed_precision']} | {median(wall[arm]):.2f} | "
            f"**{ratios[arm]:.2f}** | "
            f"{median(pairs):.2f} [{lo:.2f}, {hi:.2f}] | {fmt_times(wall[arm])} | "
            f"{fmt_times(results[arm].wall[:w])} |"
        )
    model, flags = cpu_model_and_flags()
    ak = results["alignkit"].info
    headline = (
        f"**TRL defaults / alignkit = {ratios['trl-defaults']:.2f}x** (ratio of median step times)"
        if "trl-defaults" in ratios
        else "(trl-defaults arm not run)"
    )
    # Say in words which way the measurement points, since alignkit.hardware's CPU rule rests on it.
    verdicts = []
    chosen = "bf16 autocast" if ak["bf16"] else "fp32"
    if "trl-defaults" in ratios:
        faster = ratios["trl-defaults"] < 1
        verdicts.append(
            f"TRL's defaults are {'faster' if faster else 'slower'} than alignkit's choice ({chosen}, no gradient "
            f"checkpointing) on this CPU" + (": alignkit's rule is not the faster choice here." if faster else ".")
        )
    if "fp32" in ratios:
        verdicts.append(
            f"fp32 runs at {ratios['fp32']:.2f}x alignkit's step time"
            + (" (alignkit chose fp32 here, so this is an A/A control)." if not ak["bf16"] else ".")
        )
    if "bf16-autocast" in ratios:
        verdicts.append(f"bf16 autocast, frozen base cast every pass: {ratios['bf16-autocast']:.2f}x.")
    if "bf16-frozen" in ratios:
        verdicts.append(f"bf16 autocast, frozen base cast once: {ratios['bf16-frozen']:.2f}x.")
    if AA_ARM in ratios:
        verdicts.append(f"A/A control (the alignkit arm again): {ratios[AA_ARM]:.3f}x.")
    fastest = min((a for a in arms if a != AA_ARM), key=lambda a: ratios[a])
    verdicts.append(
        f"Verdict ({VERDICT}): {1 / ratios[fastest]:.3f}x, fastest arm {fastest}, goal <= {GOAL}: "
        + ("met." if 1 / ratios[fastest] <= GOAL else "**missed**.")
    )
    if "ckpt-only" in ratios:
        verdicts.append(f"Gradient checkpointing alone: {ratios['ckpt-only']:.2f}x.")
    headline += ("\n\n" + " ".join(verdicts)) if verdicts else ""
    report = (
        f"# Precision defaults on the CPU: dpo-smol step time, alignkit vs TRL\n\n"
        f"Command: `{command}` (run {started}; load average before {load_before}, after "
        f"{load_average()}; {elapsed:.0f} s).\n\n"
        f"{headline}\n\n"
        f"CPU: {model}; flags of interest present: {', '.join(flags) or 'none'}; "
        f"{', '.join(f'{k}: {v}' for k, v in torch_cpu_capability().items())}; torch threads per arm "
        f"{ak['torch_threads']}.\n\n"
        f"Recipe `{RECIPE}` via `alignkit.recipe.load_recipe` (+ max_steps, no saving, no warm-up LR schedule): "
        f"batch {ak['batch']}; weights {ak['weights dtype']} in every arm (bf16 means autocast). "
        f"TRL's resolved defaults with use_cpu=True: {ak['trl defaults']}. alignkit's reasons: "
        f"{ak['hardware reasons']}.\n\nData: {ak['data']}.\n\n"
        f"{args.steps} measured steps per arm after {w} warm-up, arms interleaved one optimizer step at a time "
        "in orders balanced across rounds "
        "(each step = policy + reference forward and policy backward for every micro-batch, then AdamW), "
        "each arm in its own process.\n\n" + "\n".join(rows) + "\n"
    )
    atomic_write_text(out, report)
    medians = {arm: median(wall[arm]) for arm in arms}
    paired = {arm: median(paired_ratios(wall[arm], wall["alignkit"])) for arm in arms}
    meta = {"command": command, "started": started, "threads": ak["torch_threads"]}
    path = write_result(result(meta, medians, paired, cpu_info()), Path(out).parent, raw={"wall": wall})
    print(report)
    print(f"wrote {out} and {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
