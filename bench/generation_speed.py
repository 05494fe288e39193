"""Generation speed: the decode engine (alignkit.decoding) against model.generate, greedy and sampling.

Arms, per mode (greedy; sampling at T = 0.8, top-p 0.95), all in this one process on one loaded model:

* ``generate`` -- ``model.generate`` as eval ran it before the engine (``eval.generation._generate_with_hf``: shared
  chat-template prefix prefilled once, rows prefilled unpadded, then ``generate`` on the batch);
* ``engine`` -- :func:`alignkit.decoding.decode` on the same prompts and settings;
* ``engine-again`` -- the engine a second time, an A/A control: its ratio to ``engine`` is the noise floor.

Workload: the first 64 held-out ShareGPT prompts (``alignkit.data.sharegpt.build_sft().rows("test")``, user turn
only, SmolLM2 chat template), 128 new tokens, batch 64, the embedded SmolLM2-135M-Instruct in fp32, end-of-turn stop
ids as in eval. Each run generates for all 64 prompts; its wall and process CPU time are recorded.

Method: one untimed warm-up run per arm on 8 prompts x 8 tokens. Then ``--rounds`` rounds; in each round every
mode's three arms run back to back, in an order balanced across rounds (Williams design, bench/benchlib.py), so the
load from other jobs on this shared machine hits every arm alike. Verdict statistic, fixed before the run: per mode,
the median over rounds of the paired speed-up ``generate seconds / engine seconds`` of the same round, against the
goal in :data:`GOALS`; for greedy, also every row token-identical to ``model.generate``. Also reported: its 95 %
bootstrap CI, the A/A ratio, the ratio of medians, CPU-time ratios, tokens per second, and the decode slots each
path spends (rows x forward steps) against the tokens it generates.

    OMP_NUM_THREADS=1 .venv/bin/python bench/generation_speed.py              # -> results/generation_speed_<kind>.*
    .venv/bin/python bench/generation_speed.py --quick                        # smoke run (tiny model, temp dir)
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time
from pathlib import Path

from benchlib import (
    balanced_orders,
    bench_model_path,
    command_line,
    cpu_info,
    cpu_kind,
    figure,
    load_average,
    quartiles,
    result_record,
    results_dir,
    set_offline_env,
    write_result,
)

GOALS = {"greedy": 1.4, "sample": 1.8}  # median paired speed-up engine over model.generate, fixed before the run
VERDICT = "median over rounds of the paired speed-up generate s / engine s (greedy: and every row token-identical)"
ARMS = ("generate", "engine", "engine-again")
MODES = {"greedy": dict(do_sample=False), "sample": dict(do_sample=True, temperature=0.8, top_p=0.95, top_k=0)}
SEED = 0


def load(n_prompts: int, quick: bool = False):
    import torch

    from alignkit.chat_format import prompt_text
    from alignkit.data.sharegpt import build_sft
    from alignkit.eval.model_spec import ModelSpec, load_model
    from alignkit.stop_tokens import stop_token_ids

    model, tok = load_model(ModelSpec(name="smol", base=bench_model_path(quick)))
    assert next(model.parameters()).dtype == torch.float32
    rows = build_sft().rows("test")[:n_prompts]
    encoded = [tok.encode(prompt_text(tok, r["messages"][:1]), add_special_tokens=False) for r in rows]
    return model, tok, encoded, stop_token_ids(tok, model)


def run_arm(arm: str, mode: str, model, tok, encoded, stop, new: int, batch: int) -> dict:
    """One timed run: every prompt's generated ids (end-of-turn id included), seconds, CPU seconds, slots."""
    from alignkit import decoding
    from alignkit.eval.generation import GenerationConfig, _generate_with_hf
    from alignkit.stop_tokens import reply_length

    settings = MODES[mode]
    t0, c0 = time.perf_counter(), time.process_time()
    if arm == "generate":
        config = GenerationConfig(max_new_tokens=new, batch_size=batch, seed=SEED, **settings)
        rows, _ = _generate_with_hf(model, tok, encoded, config, stop)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        rows = [row[: sum(reply_length(row, stop))] for row in rows]
        # generate runs a batch until its longest row ends: rows x steps, batch by batch (longest prompts first)
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
        batches = [order[s : s + batch] for s in range(0, len(order), batch)]
        slots = sum(len(b) * max(len(rows[i]) for i in b) for b in batches)
    else:
        sampler = decoding.Sampler(seed=SEED, **settings)
        out = decoding.decode(model, encoded, new, stop, slots=batch, sampler=sampler, pad_id=tok.pad_token_id or 0)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        rows, slots = out.tokens, out.row_steps
    return {"seconds": wall, "cpu_seconds": cpu, "tokens": sum(map(len, rows)), "slots": slots, "rows": rows}


def summarize(runs: dict, modes: list[str], n_prompts: int) -> dict:
    import numpy as np

    from alignkit.eval.stats import bootstrap_ci

    out = {}
    for mode in modes:
        arms = runs[mode]
        sec = {a: [r["seconds"] for r in arms[a]] for a in ARMS}
        cpu = {a: [r["cpu_seconds"] for r in arms[a]] for a in ARMS}
        speedup = [g / e for g, e in zip(sec["generate"], sec["engine"], strict=True)]
        aa = [b / a for a, b in zip(sec["engine"], sec["engine-again"], strict=True)]
        point, lo, hi = bootstrap_ci(speedup, np.median) if len(speedup) > 1 else (speedup[0],) * 3
        aa_point, aa_lo, aa_hi = bootstrap_ci(aa, np.median) if len(aa) > 1 else (aa[0],) * 3
        first = {a: arms[a][0]["rows"] for a in ARMS}
        stats = {
            "speedup_paired_median": point,
            "speedup_paired_ci95": [lo, hi],
            "speedup_paired_iqr": list(quartiles(speedup)),
            "speedup_per_round": speedup,
            "aa_engine_again_over_engine_paired_median": aa_point,
            "aa_ci95": [aa_lo, aa_hi],
            "aa_per_round": aa,
            "speedup_ratio_of_medians": statistics.median(sec["generate"]) / statistics.median(sec["engine"]),
            "cpu_speedup_ratio_of_medians": statistics.median(cpu["generate"]) / statistics.median(cpu["engine"]),
            "goal": GOALS[mode],
            "meets_goal": point >= GOALS[mode],
            "seconds": sec,
            "cpu_seconds": cpu,
            "median_seconds": {a: statistics.median(sec[a]) for a in ARMS},
            "tokens": {a: arms[a][0]["tokens"] for a in ARMS},
            "tokens_per_second_median": {a: arms[a][0]["tokens"] / statistics.median(sec[a]) for a in ARMS},
            "decode_slots": {a: arms[a][0]["slots"] for a in ARMS},
            "mean_reply_tokens": {a: arms[a][0]["tokens"] / n_prompts for a in ARMS},
            # the same inputs must give the same outputs in every round (greedy, and seeded sampling)
            "deterministic_across_rounds": {a: all(r["rows"] == first[a] for r in arms[a]) for a in ARMS},
            "engine_equals_engine_again": first["engine"] == first["engine-again"],
        }
        if mode == "greedy":
            same = sum(a == b for a, b in zip(first["generate"], first["engine"], strict=True))
            stats["rows_identical_to_generate"] = same
            stats["meets_goal"] = stats["meets_goal"] and same == n_prompts
        out[mode] = stats
    return out


def write_md(path: Path, result: dict) -> None:
    m = result["meta"]
    lines = [
        "# Generation speed: decode engine vs model.generate (embedded SmolLM2-135M, fp32, CPU)",
        "",
        f"Command: `{m['command']}` (run {m['date']}; {m['threads']} torch thread(s); load average before "
        f"{m['load_before']}, after {m['load_after']}). CPU: {m['cpu_model']}, flags {', '.join(m['cpu_flags'])}.",
        "",
        f"Workload: {m['n_prompts']} held-out ShareGPT prompts, {m['max_new_tokens']} new tokens, batch "
        f"{m['batch']}, {m['rounds']} rounds, arms interleaved in balanced order within one process. The machine's "
        "2 cores are shared with other jobs: seconds depend on their load, the paired ratios are the claim.",
        "",
        "| mode | speed-up generate/engine, paired median [95% CI] | goal | met? | A/A engine-again/engine | "
        "median s: generate, engine | tok/s: generate, engine | decode slots for tokens: generate, engine |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for mode, s in result["modes"].items():
        slots = s["decode_slots"]
        toks = s["tokens"]
        lines.append(
            f"| {mode} | {s['speedup_paired_median']:.2f}x [{s['speedup_paired_ci95'][0]:.2f}, "
            f"{s['speedup_paired_ci95'][1]:.2f}] | >= {s['goal']}x"
            + (f" and {m['n_prompts']}/{m['n_prompts']} rows token-identical" if mode == "greedy" else "")
            + f" | {'yes' if s['meets_goal'] else 'no'} | {s['aa_engine_again_over_engine_paired_median']:.3f} | "
            f"{s['median_seconds']['generate']:.1f}, {s['median_seconds']['engine']:.1f} | "
            f"{s['tokens_per_second_median']['generate']:.0f}, {s['tokens_per_second_median']['engine']:.0f} | "
            f"{slots['generate']} for {toks['generate']}, {slots['engine']} for {toks['engine']} |"
        )
    g = result["modes"].get("greedy")
    if g:
        same = g["rows_identical_to_generate"]
        lines += ["", f"Greedy rows token-identical to model.generate: {same}/{m['n_prompts']}."]
    lines += [
        "",
        "| mode | per-round speed-ups | A/A per round | ratio of medians (wall) | ratio of medians (process CPU "
        "time) | same outputs every round |",
        "|---|---|---|---|---|---|",
    ]
    for mode, s in result["modes"].items():
        lines.append(
            f"| {mode} | {', '.join(f'{x:.2f}' for x in s['speedup_per_round'])} | "
            f"{', '.join(f'{x:.2f}' for x in s['aa_per_round'])} | {s['speedup_ratio_of_medians']:.2f} | "
            f"{s['cpu_speedup_ratio_of_medians']:.2f} | {all(s['deterministic_across_rounds'].values())} |"
        )
    lines += [
        "",
        "Also in the JSON: per-round seconds and CPU seconds of every arm, tokens, mean reply length.",
    ]
    path.write_text("\n".join(lines) + "\n")


def result(res: dict) -> dict:
    """The bench/results JSON record (benchlib schema) of a run's ``{"meta", "modes"}``."""
    meta, figures = res["meta"], []
    for mode, s in res["modes"].items():
        identical = s.get("rows_identical_to_generate")
        figures.append(
            figure(
                f"generation_speed.{mode}",
                f"Decode engine vs model.generate, {mode}, speed-up",
                f">= {s['goal']}x"
                + (f" and {meta['n_prompts']}/{meta['n_prompts']} rows identical" if identical is not None else ""),
                s["speedup_paired_median"],
                bool(s["meets_goal"]),
                VERDICT,
                unit="x",
                note=f"95% CI [{s['speedup_paired_ci95'][0]:.2f}, {s['speedup_paired_ci95'][1]:.2f}], "
                f"A/A {s['aa_engine_again_over_engine_paired_median']:.3f}"
                + (f", {identical}/{meta['n_prompts']} rows identical" if identical is not None else ""),
            )
        )
    cpu = meta.get("cpu") or {"model": meta["cpu_model"], "flags_of_interest": meta["cpu_flags"]}
    # Runs since 2026-12-05 keep one result per CPU kind (generation_speed_<kind>.json, keys
    # generation_speed.<kind>.*), as precision's and train_speed's: decode speed depends on the CPU's matmul units.
    # The first run keeps its names.
    kind = meta.get("cpu_kind")
    if kind:
        for fig in figures:
            fig["figure"] = fig["figure"].replace("generation_speed.", f"generation_speed.{kind}.", 1)
            fig["label"] += f" ({kind} CPU)"
    bench = f"generation_speed_{kind}" if kind else "generation_speed"
    return result_record(bench, meta["command"], meta["date"], meta["threads"], res["modes"], figures, cpu=cpu)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--new", type=int, default=128, help="max new tokens")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--modes", default="greedy,sample")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    parser.add_argument(
        "--quick", action="store_true", help="tiny model, 8 prompts x 16 tokens, 1 round; writes to a temp dir"
    )
    parser.add_argument(
        "--out", default=None, help="path stem of the .json/.md (default bench/results/generation_speed)"
    )
    parser.add_argument("--from-json", help="rewrite the .md of --out from this result JSON, without measuring")
    args = parser.parse_args(argv)
    if args.from_json:
        raw = json.loads(Path(args.from_json).read_text())
        raw = {k: raw[k] for k in ("meta", "modes", "runs")}
        out = Path(args.out or "bench/results/generation_speed")
        write_md(out.with_suffix(".md"), raw)
        write_result(result(raw), out.parent, raw=raw)
        return 0
    if args.quick:
        args.prompts, args.new, args.batch, args.rounds = 8, 16, 8, 1
    set_offline_env()
    import torch

    torch.set_num_threads(args.threads)
    modes = args.modes.split(",")
    load_before = load_average()
    model, tok, encoded, stop = load(args.prompts, args.quick)
    for mode in modes:  # untimed warm-up: first-touch allocations, lazy initialisation
        for arm in ARMS[:2]:
            run_arm(arm, mode, model, tok, encoded[:8], stop, 8, 8)
    runs = {mode: {a: [] for a in ARMS} for mode in modes}
    orders = balanced_orders(len(ARMS))
    for r in range(args.rounds):
        for mode in modes:
            for a in orders[r % len(orders)]:
                arm = ARMS[a]
                res = run_arm(arm, mode, model, tok, encoded, stop, args.new, args.batch)
                runs[mode][arm].append(res)
                print(f"round {r} {mode:6s} {arm:12s} {res['seconds']:7.1f} s  {res['tokens']} tokens", flush=True)
    cpu = cpu_info()
    measured = {
        "meta": {
            "command": command_line(argv),
            "date": datetime.datetime.now().isoformat(timespec="minutes"),
            "cpu_model": cpu["model"],
            "cpu_flags": cpu["flags_of_interest"],
            "cpu": cpu,
            "cpu_kind": cpu_kind(cpu["flags_of_interest"]),
            "threads": torch.get_num_threads(),
            "load_before": load_before,
            "load_after": load_average(),
            "n_prompts": args.prompts,
            "max_new_tokens": args.new,
            "batch": args.batch,
            "rounds": args.rounds,
            "modes": {m: MODES[m] for m in modes},
            "seed": SEED,
            "torch": torch.__version__,
            "malloc_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")},
        },
        "modes": summarize(runs, modes, args.prompts),
    }
    for mode, s in measured["modes"].items():
        print(
            f"{mode}: speed-up {s['speedup_paired_median']:.2f}x (goal {s['goal']}x, "
            f"{'met' if s['meets_goal'] else 'missed'}), A/A {s['aa_engine_again_over_engine_paired_median']:.3f}"
        )
    out = Path(args.out) if args.out else results_dir(args.quick) / f"generation_speed_{measured['meta']['cpu_kind']}"
    for runs_mode in runs.values():  # token ids stay out of the JSON; their checks are in the statistics
        for arm_runs in runs_mode.values():
            for res in arm_runs:
                res.pop("rows")
    path = write_result(result(measured), out.parent, raw={**measured, "runs": runs})
    write_md(out.with_suffix(".md"), measured)
    print(f"wrote {path} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
