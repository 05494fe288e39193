"""The machine's matmul peak, and how much of it one dpo-smol (or sft-smol) optimizer step reaches, before and after
the fast path.

In one run:

1. **Peak.** fp32 and bf16 ``torch.mm`` on square matrices of 576, 1024 and 2048 (best of 5 after 2 warm-ups, at
   ``--threads`` threads); the peak of a dtype is its best size. On a CPU without native bf16 (no avx512_bf16/AMX)
   bf16 is emulated at a few GFLOP/s, so it is timed at the smallest size only, for the record. The machine spec is
   2 cores, but they are shared with other jobs: the default is 1 thread on the core ``taskset`` gives the process,
   and the report records how busy the other core was while the peak was measured.
2. **Steps.** The dpo-smol recipe (``--recipe sft-smol``: that one; built as ``alignkit train`` builds it) trains
   ``--warmup`` + 2 x ``--steps`` optimizer steps with ``cpu_fast_path`` off ("before"), then the same steps on the
   same batches with it on ("after"). After the warm-up, ``--steps`` steps are timed without the profiler (since
   2026-12-05), then ``--steps`` run under ``torch.profiler`` (``with_flops``). Achieved matmul FLOP/s of a profiled
   step = FLOPs of the matmul ops the profiler counts (``aten::mm``/``addmm``/``bmm``/...; the fused attention
   kernel's FLOPs are not counted, so the figure is a lower bound) / the step's wall time, profiler overhead
   included.

Also computed, without a goal: the speed-up **ceiling** at this peak, the median unprofiled "before" step's wall time
divided by the time the median profiled fast step's matmul FLOPs would take at the measured peak of its dtype (the
profiler's overhead weighs more on the slow path's many small ops, so profiled slow steps would inflate it). A path
that does at least the fast step's matmuls can be no faster than that against the slow path, so a speed-up goal above
it (issue 13's 3x) cannot be met on this CPU kind without doing fewer matmul FLOPs than the fast path does today.
Beside it, the measured speed-up on the unprofiled steps (median of the paired slow / fast).

Verdict statistic, fixed before the first run: the **median over the profiled fast steps of achieved matmul FLOP/s
divided by the measured peak of the dtype the step computes in**; goal >= 0.30 (met when the median is >= 0.30).
That dtype is bf16 where the CPU has it natively (alignkit trains with bf16 autocast there; the statistic as first
fixed) and fp32 where it has not (alignkit trains in fp32 there, :mod:`alignkit.hardware`; anchoring on the emulated
bf16 peak would read far above 1). The no_bf16 kind's figure was fixed so before its first run (2026-12-04).

Per-phase time of each step (LM head, matmuls outside the head, casts/copies, attention, optimizer, other) comes
from the same profiles: each op's self time goes to the phase of its nearest enclosing head / attention / optimizer
op or autograd node, else to its own kind (``ATTENTION_MARKS`` lists what counts as attention on each path).

Result: ``bench/results/mfu_<cpu kind>.json`` (one per CPU kind: amx, avx512_bf16, no_bf16, as precision's, since
the bf16 peak differs by kind; ``mfu_<cpu kind>_sft-smol.json`` for sft-smol) in the shared schema
(``bench/benchlib.py``: the figure above; every summary
statistic under ``statistics``), the run's raw data beside it under its own keys (``header``, ``peak``, ``steps``
with every profiled step, ...), and ``mfu_<cpu kind>.md``.

    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE taskset -c 1 .venv/bin/python bench/mfu.py
    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE taskset -c 1 .venv/bin/python bench/mfu.py --recipe sft-smol
    .venv/bin/python bench/mfu.py --quick      # tiny model, small sizes, 1 step each; writes to a temp dir
    .venv/bin/python bench/mfu.py --rerender bench/results/mfu_amx.json   # rebuild result and .md, no measuring
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchlib import (
    bench_model_path,
    command_line,
    cpu_kind,
    figure,
    header_command,
    header_cpu,
    load_average,
    met,
    result_header,
    result_record,
    results_dir,
    set_offline_env,
    write_raw_result,
)

GOAL = 0.30
VERDICT = (
    "median over profiled fast dpo-smol steps of (profiler-counted matmul FLOP/s) / measured mm peak of the "
    "step's compute dtype (bf16 where native, else fp32)"
)
RECIPES = ("dpo-smol", "sft-smol")
CEILING = (
    "median unprofiled slow step wall s / (median profiled fast step's matmul GFLOP / measured peak GFLOP/s of its "
    "dtype): the largest speed-up over the slow path of any path doing at least the fast step's matmul FLOPs"
)


def verdict_of(recipe: str) -> str:
    return VERDICT.replace("dpo-smol", recipe)


def recipe_of(report: dict) -> str:
    """The recipe a raw report profiled (reports before --recipe existed: dpo-smol)."""
    return report["header"].get("recipe", "dpo-smol")


def result_stem(kind: str, recipe: str) -> str:
    """bench/results/<stem>.json: mfu_<kind> for dpo-smol (the first recipe keeps its name), else
    mfu_<kind>_<recipe>."""
    return f"mfu_{kind}" if recipe == "dpo-smol" else f"mfu_{kind}_{recipe}"


def ceiling(report: dict) -> float | None:
    """The speed-up ceiling (CEILING) of a raw report; None for a report without unprofiled steps (before
    2026-12-05)."""
    unprofiled = report.get("unprofiled_wall_s") or {}
    if not unprofiled.get("before"):
        return None
    anchor = anchor_dtype(cpu_kind(report["header"]["cpu_bf16_flags"]))
    fast_gflop = statistics.median(r["matmul_gflop"] for r in report["steps"]["after"])
    return statistics.median(unprofiled["before"]) / (fast_gflop / report["peak"]["peak_gflops"][anchor])


def unprofiled_speedup(report: dict) -> float | None:
    """Median over the unprofiled steps of the paired speed-up slow_k / fast_k (same batches, same order)."""
    unprofiled = report.get("unprofiled_wall_s") or {}
    if not unprofiled.get("before"):
        return None
    return statistics.median(b / a for b, a in zip(unprofiled["before"], unprofiled["after"], strict=True))


HEAD_OPS = ("ChunkedLogProbFunction", "CompactHeadLogProb")  # forward names; the backward nodes add "Backward"
MATMUL_OPS = {"aten::mm", "aten::addmm", "aten::addmm_", "aten::bmm", "aten::baddbmm", "aten::matmul", "aten::linear"}
CAST_OPS = {"aten::copy_", "aten::_to_copy", "aten::to"}
# TRL's path: the fused sdpa kernels, forward and backward. The fast path's per-sequence attention: its forward
# under a record_function name, its backward as the autograd nodes of its ops (nothing else in a step runs bmm or
# softmax under autograd; masked_fill too, outside the head functions, which autograd sees as one node each).
ATTENTION_MARKS = ("scaled_dot_product", "alignkit::packed_attention", "BmmBackward", "SoftmaxBackward",
                   "MaskedFillBackward")  # fmt: skip
PHASES = ("LM head", "matmuls", "casts/copies", "attention", "optimizer", "other")
# The run's own layout, kept beside the schema keys.
RAW_KEYS = ("header", "cpu_busy_during_peak", "peak", "steps", "unprofiled_wall_s", "median_step_wall_s",
            "median_phase_s",
            "median_phase_share", "fraction_of_bf16_peak_per_fast_step", "fraction_of_fp32_peak_median",
            "before_fraction_of_bf16_peak_median", "verdict", "load_average_end")  # fmt: skip
# Smoke run: the tiny model on short rows; dpo-smol on the off-policy pairs card (its on-policy card needs
# runs/rm-smol).
QUICK_OVERRIDES = ["per_device_train_batch_size=2", "max_length=96", "max_train_samples=8"]
QUICK_DATASET = {"dpo-smol": ["dataset=sharegpt-pairs-smol"], "sft-smol": []}


def other_core_busy(seconds: float = 2.0) -> dict[str, float]:
    """Busy fraction of each CPU over ``seconds`` (from /proc/stat): how much the cores were shared."""

    def sample() -> dict[str, tuple[int, int]]:
        out = {}
        for line in open("/proc/stat"):
            if line.startswith("cpu") and line[3].isdigit():
                name, *vals = line.split()
                vals = [int(v) for v in vals]
                out[name] = (sum(vals), vals[3] + vals[4])  # total, idle + iowait
        return out

    try:
        a = sample()
        time.sleep(seconds)
        b = sample()
    except OSError:
        return {}
    return {cpu: round(1 - (b[cpu][1] - a[cpu][1]) / max(1, b[cpu][0] - a[cpu][0]), 3) for cpu in b}


def anchor_dtype(kind: str) -> str:
    """The dtype a dpo-smol step computes its matmuls in on a CPU of ``kind``: bf16 where native, else fp32."""
    return "fp32" if kind == "no_bf16" else "bf16"


def mm_peak(sizes: list[int], reps: int = 5, bf16_sizes: list[int] | None = None) -> dict:
    """GFLOP/s of ``torch.mm`` per dtype and size (best of ``reps``), and each dtype's peak over the sizes it was
    timed at (``bf16_sizes`` for bf16, default ``sizes``)."""
    import torch

    table: dict[str, dict[int, float]] = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        table[name] = {}
        for n in sizes if name == "fp32" or bf16_sizes is None else bf16_sizes:
            a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
            for _ in range(2):
                torch.mm(a, b)
            best = float("inf")
            for _ in range(reps):
                t = time.perf_counter()
                torch.mm(a, b)
                best = min(best, time.perf_counter() - t)
            table[name][n] = 2 * n**3 / best / 1e9
    return {"gflops": table, "peak_gflops": {k: max(v.values()) for k, v in table.items()}}


def _phase(event) -> str:
    """Phase of one profiler event: its nearest enclosing head/attention/optimizer op, else its own kind."""
    node = event
    while node is not None:
        name = node.name
        if name.startswith(HEAD_OPS) or any(f"{op}Backward" in name for op in HEAD_OPS):
            return "LM head"
        if any(mark in name for mark in ATTENTION_MARKS):
            return "attention"
        if name.startswith("Optimizer.step#"):
            return "optimizer"
        node = node.cpu_parent
    if event.name in MATMUL_OPS:
        return "matmuls"
    if event.name in CAST_OPS:
        return "casts/copies"
    return "other"


def step_profile(prof, wall: float) -> dict:
    """Phase seconds (self CPU time of the step's ops), matmul FLOPs and achieved FLOP/s of one profiled step."""
    phases = dict.fromkeys(PHASES, 0.0)
    flops = 0
    for event in prof.events():
        phases[_phase(event)] += event.self_cpu_time_total / 1e6
        if event.name in MATMUL_OPS:
            flops += event.flops or 0
    return {
        "wall_s": wall,
        "phase_s": phases,
        "profiled_cpu_s": sum(phases.values()),
        "matmul_gflop": flops / 1e9,
        "matmul_gflops_per_s": flops / 1e9 / wall,
    }


def profiled_run(
    recipe_name: str, fast: bool, warmup: int, steps: int, quick: bool, out_dir: str, timed: int = 0
) -> tuple[list[dict], list[float]]:
    """Train ``recipe_name`` for ``warmup + timed + steps`` optimizer steps: after the warm-up, ``timed`` steps timed
    without the profiler (their wall seconds, the second value), then ``steps`` profiled ones (the records)."""
    import torch
    from transformers import TrainerCallback

    from alignkit.models import load_tokenizer, resolve_model_path
    from alignkit.recipe import load_recipe
    from alignkit.train import build_trainer

    overrides = [
        f"cpu_fast_path={str(fast).lower()}",
        f"max_steps={warmup + timed + steps}",
        "save_strategy='no'",
        "logging_steps=1",
        "warmup_steps=0",
        "report_to=none",
        "disable_tqdm=true",
        f"output_dir={out_dir}",
    ]
    if quick:
        overrides += [*QUICK_OVERRIDES, *QUICK_DATASET[recipe_name], f"model_name_or_path={bench_model_path(True)}"]
    recipe = load_recipe(recipe_name, overrides)
    model_path = resolve_model_path(recipe.model_args.model_name_or_path)
    trainer = build_trainer(recipe, model_path, load_tokenizer(model_path)).trainer
    records: list[dict] = []
    walls: list[float] = []

    class Profile(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            self.prof = None
            if state.global_step >= warmup + timed:
                self.prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], with_flops=True)
                self.prof.__enter__()
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            wall = time.perf_counter() - self.t0
            if self.prof is not None:
                self.prof.__exit__(None, None, None)
                records.append({"step": state.global_step, **step_profile(self.prof, wall)})
            elif state.global_step > warmup:  # global_step counts this step already
                walls.append(wall)

    trainer.add_callback(Profile())
    trainer.train()
    losses = [h for h in trainer.state.log_history if "loss" in h][warmup + timed :]
    for record, log in zip(records, losses, strict=False):
        record["loss"] = log["loss"]
    del trainer
    return records, walls


def anchor_of(report: dict) -> tuple[str, list[float], float]:
    """(anchor dtype, per fast step fraction of its peak, median fraction before the fast path) of a raw report,
    derived from its CPU flags, measured peak and profiled steps."""
    anchor = anchor_dtype(cpu_kind(report["header"]["cpu_bf16_flags"]))
    top = report["peak"]["peak_gflops"][anchor]
    fractions = [r["matmul_gflops_per_s"] / top for r in report["steps"]["after"]]
    return anchor, fractions, statistics.median(r["matmul_gflops_per_s"] / top for r in report["steps"]["before"])


def markdown(report: dict) -> str:
    h, peak = report["header"], report["peak"]
    v = report["verdict"]
    anchor = anchor_of(report)[0]
    anchor_peak = peak["peak_gflops"][anchor]
    recipe = recipe_of(report)
    lines = [
        f"# Matmul peak and {recipe} step utilisation (bench/mfu.py)",
        "",
        f"Command: `{h['command']}`  ",
        f"Date: {h['date']}; CPU: {h['cpu_model']} (bf16 flags: {', '.join(h['cpu_bf16_flags']) or 'none'}); "
        f"torch threads {h['torch_threads']} (CPUs allowed {h['cpus_allowed']}); busy fraction of each CPU while the "
        f"peak was measured: {report['cpu_busy_during_peak']}; load average {h['load_average_start']} at start, "
        f"{report['load_average_end']} at end.",
        "",
        "## Peak (torch.mm, GFLOP/s)",
        "",
        "| dtype | " + " | ".join(f"{n}²" for n in peak["sizes"]) + " | peak |",
        "|---|" + "---|" * (len(peak["sizes"]) + 1),
    ]
    for dtype, row in peak["gflops"].items():
        row = {int(n): v for n, v in row.items()}  # a JSON round trip makes the sizes strings
        cells = " | ".join(f"{row[n]:.0f}" if n in row else "–" for n in peak["sizes"])
        lines.append(f"| {dtype} | {cells} | {peak['peak_gflops'][dtype]:.0f} |")
    lines += [
        "",
        f"## Verdict: {v['measured']:.3f} of the {anchor} peak (goal >= {GOAL}): {'met' if v['met'] else 'MISSED'}",
        "",
        f"Statistic (fixed in the code before the run): {verdict_of(recipe)}. Attention's fused kernel is not "
        "counted, so this is a lower bound; profiler overhead is inside the wall time.",
        "",
        *_ceiling_lines(report),
        "## Per step",
        "",
        f"| path | step | wall s | matmul GFLOP | GFLOP/s | of {anchor} peak | "
        + " | ".join(f"{p} s" for p in PHASES)
        + " | loss |",
        "|---|---|---|---|---|---|" + "---|" * (len(PHASES) + 1),
    ]
    for path in ("before", "after"):
        for r in report["steps"][path]:
            phases = " | ".join(f"{r['phase_s'][p]:.2f}" for p in PHASES)
            lines.append(
                f"| {path} | {r['step']} | {r['wall_s']:.2f} | {r['matmul_gflop']:.0f} | "
                f"{r['matmul_gflops_per_s']:.0f} | {r['matmul_gflops_per_s'] / anchor_peak:.3f} | "
                f"{phases} | {r.get('loss', float('nan')):.4f} |"
            )
    lines += ["", "## Median phase shares", "", "| phase | before s (share) | after s (share) |", "|---|---|---|"]
    for p in PHASES:
        b, a = report["median_phase_s"]["before"][p], report["median_phase_s"]["after"][p]
        bs, as_ = report["median_phase_share"]["before"][p], report["median_phase_share"]["after"][p]
        lines.append(f"| {p} | {b:.2f} ({bs:.0%}) | {a:.2f} ({as_:.0%}) |")
    return "\n".join(lines) + "\n"


def _ceiling_lines(report: dict) -> list[str]:
    top, speedup = ceiling(report), unprofiled_speedup(report)
    if top is None:
        return []
    return [
        f"Speed-up ceiling at this peak (no goal): **{top:.2f}x** ({CEILING}). Measured on the unprofiled steps "
        f"(same batches on both paths): {speedup:.2f}x (median of the paired slow / fast); the unprofiled and the "
        "profiled steps are different batches of the same run.",
        "",
    ]


def result(report: dict) -> dict:
    """The bench/results JSON record (benchlib schema) of a run's raw ``report``."""
    h, peak = report["header"], report["peak"]
    anchor, fractions, before = anchor_of(report)
    measured = statistics.median(fractions)
    stats = {
        "anchor_dtype": anchor,
        "peak_gflops": peak["peak_gflops"],
        "fraction_of_anchor_peak_per_fast_step": fractions,
        "fraction_of_anchor_peak_median": measured,
        "before_fraction_of_anchor_peak_median": before,
        "fraction_of_bf16_peak_per_fast_step": report["fraction_of_bf16_peak_per_fast_step"],
        "fraction_of_bf16_peak_median": statistics.median(report["fraction_of_bf16_peak_per_fast_step"]),
        "fraction_of_fp32_peak_median": report["fraction_of_fp32_peak_median"],
        "before_fraction_of_bf16_peak_median": report["before_fraction_of_bf16_peak_median"],
        "median_step_wall_s": report["median_step_wall_s"],
        "median_phase_s": report["median_phase_s"],
        "median_phase_share": report["median_phase_share"],
        "cpu_busy_during_peak": report["cpu_busy_during_peak"],
        "recipe": recipe_of(report),
        "speedup_ceiling": ceiling(report),
        "speedup_ceiling_statistic": CEILING,
        "unprofiled_speedup": unprofiled_speedup(report),
        "unprofiled_wall_s": report.get("unprofiled_wall_s"),
    }
    kind, recipe = cpu_kind(h["cpu_bf16_flags"]), recipe_of(report)
    fig = figure(
        f"mfu.{kind}.{recipe}.fast",
        f"{recipe} fast step: matmul FLOP/s as a fraction of the measured {anchor} peak ({kind} CPU)",
        f">= {GOAL:.2f}",
        measured,
        met(measured, ">=", GOAL),
        verdict_of(recipe),
        note=f"lower bound (fused attention FLOPs not counted); {anchor} peak {peak['peak_gflops'][anchor]:.0f} "
        f"GFLOP/s; before the fast path {before:.3f}; {len(fractions)} profiled step(s)"
        + (
            ""
            if stats["speedup_ceiling"] is None
            else f"; speed-up ceiling at this peak {stats['speedup_ceiling']:.2f}x"
        ),
    )
    cpu = header_cpu(h)
    extra = {"load_average": {"start": h["load_average_start"], "end": report.get("load_average_end")}}
    if h.get("git"):
        extra["git"] = h["git"]
    return result_record(
        result_stem(kind, recipe), header_command(h), h["date"], h["torch_threads"], stats, [fig], cpu, **extra
    )


def write(report: dict, out: Path) -> Path:
    """``<out>.json`` (schema + raw report) and ``<out>.md``; into bench/results this also regenerates RESULTS.md."""
    raw = {k: report[k] for k in RAW_KEYS if k in report}  # unprofiled_wall_s: runs from 2026-12-05 on
    return write_raw_result(raw, result(raw), markdown(raw), out)


def main(argv: list[str] | None = None) -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--recipe", choices=RECIPES, default="dpo-smol", help="the recipe whose steps are profiled")
    parser.add_argument("--steps", type=int, default=3, help="profiled steps per path, after the warm-up")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny model, small sizes; temp dir")
    parser.add_argument(
        "--out",
        default=None,
        help="path stem of the .json/.md (default bench/results/mfu_<cpu kind>[_<recipe> for sft-smol]: one per kind)",
    )
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
    torch.set_num_threads(args.threads)
    header = result_header(args.threads)
    header["command"] = command_line(argv)  # from the repository root, with the OpenMP environment
    header["recipe"] = args.recipe
    sizes = [256, 512] if args.quick else [576, 1024, 2048]
    busy = other_core_busy(0.2 if args.quick else 2.0)
    anchor = anchor_dtype(cpu_kind(header["cpu_bf16_flags"]))
    peak = {"sizes": sizes, **mm_peak(sizes, bf16_sizes=None if anchor == "bf16" else sizes[:1])}
    steps = 1 if args.quick else args.steps
    runs, unprofiled = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for path, fast in (("before", False), ("after", True)):
            runs[path], unprofiled[path] = profiled_run(
                args.recipe, fast, args.warmup, steps, args.quick, f"{tmp}/{path}", timed=steps
            )
    bf16_peak = peak["peak_gflops"]["bf16"]
    med = {path: {p: statistics.median(r["phase_s"][p] for r in rs) for p in PHASES} for path, rs in runs.items()}
    report = {
        "header": header,
        "cpu_busy_during_peak": busy,
        "peak": peak,
        "steps": runs,
        "unprofiled_wall_s": unprofiled,
        "median_step_wall_s": {path: statistics.median(r["wall_s"] for r in rs) for path, rs in runs.items()},
        "median_phase_s": med,
        "median_phase_share": {path: {p: v / sum(m.values()) for p, v in m.items()} for path, m in med.items()},
        "fraction_of_bf16_peak_per_fast_step": [r["matmul_gflops_per_s"] / bf16_peak for r in runs["after"]],
        "fraction_of_fp32_peak_median": statistics.median(
            r["matmul_gflops_per_s"] / peak["peak_gflops"]["fp32"] for r in runs["after"]
        ),
        "before_fraction_of_bf16_peak_median": statistics.median(
            r["matmul_gflops_per_s"] / bf16_peak for r in runs["before"]
        ),
        "load_average_end": load_average(),
    }
    measured = statistics.median(anchor_of(report)[1])
    report["verdict"] = {
        "statistic": verdict_of(args.recipe),
        "measured": measured,
        "goal": GOAL,
        "met": bool(measured >= GOAL),
    }
    print(markdown(report))
    kind = cpu_kind(header["cpu_bf16_flags"])
    path = write(report, Path(args.out) if args.out else results_dir(args.quick) / result_stem(kind, args.recipe))
    print(f"wrote {path} and {path.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
