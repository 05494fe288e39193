"""Efficacy figures of issue 12 across seeds: bench/results/efficacy.json (its exact keys, mean and ``_sd`` over the
seeds) and bench/results/efficacy.md (mean ± sd, per-seed values, command, date, CPU).

    .venv/bin/python bench/efficacy.py                          # the default run's figures, seeds 0,1,2
    .venv/bin/python bench/efficacy.py --figures default,rm,ppo --seeds 0,1,2
    .venv/bin/python bench/efficacy.py --figures all            # hours on a 2-core CPU
    .venv/bin/python bench/efficacy.py --quick                  # smoke run: tiny model, 2 seeds, no eval, temp dir

Figure groups (``--figures``), each run once per seed with the recipe override ``seed=S`` into its own run
directory under ``--runs-root``:

* ``default``: ``alignkit train dpo-smol seed=S output_dir=<root>/dpo-smol-seedS`` (train, then the recipe's eval
  suite); the six ``default_*`` keys are ``report.json["goals"]["figures"]`` (eval/goals.py: the held-out judge's
  win rate, CI low, LC win rate, and the trained/start ratios). The runs a suite or card needs (rm-smol, the judge)
  are trained once in ``<root>`` and shared by the seeds: they are the measuring instrument, not the treatment.
* ``make``: ``bench/make_time.py --args seed=S`` per seed (cold dataset cache, fresh runs/): ``make_seconds``,
  ``make_peak_rss_gib`` (largest process).
* ``rm``: ``alignkit train rm-smol seed=S --no-eval``, then its accuracy on its card's held-out test pairs
  (``alignkit.eval.judge_info.heldout_pair_accuracy``, 64 pairs): ``rm_heldout_accuracy``.
* ``ppo`` / ``grpo``: ``bench/ppo_efficacy.py [--recipe grpo-smol-adaptive-kl] --set seed=S``: held-out arithmetic
  accuracy gain (and the truncation rate before and after, in the per-seed details).
* ``rdpo``: ``dpo-smol-rdpo`` as ``default``: ``rdpo_length_ratio``, with its judge win rate beside plain DPO's.
* ``kl``: the worst of the PPO, GRPO and DPO-β (dpo-smol-rdpo's ``kl_implicit``) in-band shares; needs all three.
* ``unlikelihood``: not measured by this script yet (the key is written as null with the reason).

A key that an invocation does not measure is written as null with ``<key>_reason``, never invented. Goals are
issue 12's, fixed in GOALS below before any run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

# key -> (goal, figure); exactly the keys of issue 12's table, in its order.
GOALS: dict[str, tuple[str, str]] = {
    "default_win_rate": (">= 0.65", "default run vs its start, held-out judge win rate"),
    "default_win_ci_low": ("> 0.5", "default run vs its start, win rate 95% CI lower bound"),
    "default_lc_win_rate": (">= 0.60", "default run vs its start, LC win rate"),
    "default_ppl_ratio": ("<= 1.15", "default run, held-out perplexity trained / start"),
    "default_distinct2_ratio": (">= 0.90", "default run, distinct-2 trained / start"),
    "default_length_ratio": ("<= 1.2", "default run, mean length trained / start"),
    "make_seconds": ("<= 600", "`make`, cold dataset cache, after setup, wall seconds"),
    "make_peak_rss_gib": ("none: reported", "`make` peak RSS, largest process (GiB)"),
    "rm_heldout_accuracy": (">= 0.75", "rm-smol held-out pair accuracy"),
    "grpo_accuracy_gain": (">= 0.20", "grpo-smol held-out arithmetic accuracy minus base"),
    "ppo_accuracy_gain": (">= 0.20", "ppo-smol held-out arithmetic accuracy minus base"),
    "kl_in_band_fraction": (">= 0.8", "adaptive KL in-band share, worst of PPO, GRPO, DPO beta"),
    "rdpo_length_ratio": ("<= 1.1", "R-DPO mean length / start's"),
    "unlikelihood_repetition_ratio": ("< 0.9", "sft-smol-unlikelihood / sft-smol 3-gram repetition rate"),
}
GROUPS = ("default", "make", "rm", "grpo", "ppo", "kl", "rdpo", "unlikelihood")
DEFAULT_KEYS = {  # efficacy key -> report.json["goals"]["figures"] key (eval/goals.py)
    "default_win_rate": "win_rate",
    "default_win_ci_low": "win_ci_low",
    "default_lc_win_rate": "lc_win_rate",
    "default_ppl_ratio": "ppl_ratio",
    "default_distinct2_ratio": "distinct2_ratio",
    "default_length_ratio": "length_ratio",
}
GRPO_RECIPE = "grpo-smol-adaptive-kl"
QUICK_OVERRIDES = ["max_steps=1", "max_train_samples=8", "save_strategy=no", "logging_steps=1"]


def aggregate(per_seed: dict[str, list[float | None]], reasons: dict[str, str]) -> dict[str, Any]:
    """Issue 12's flat dict: every key with its mean and ``_sd`` over seeds; null plus ``_reason`` when a key has
    no value for some seed (a partial mean would hide a failed seed)."""
    out: dict[str, Any] = {}
    for key in GOALS:
        values = per_seed.get(key)
        if values and all(v is not None for v in values):
            out[key] = statistics.fmean(values)
            out[f"{key}_sd"] = statistics.stdev(values) if len(values) > 1 else None
        else:
            out[key], out[f"{key}_sd"] = None, None
            if values and any(v is not None for v in values):
                reasons.setdefault(key, f"missing for some seeds: {values}")
            out[f"{key}_reason"] = reasons.get(key, "not run: select it with --figures")
    return out


def carry_over(data: dict[str, Any], previous: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Copy into ``data`` each key this invocation did not run (null with the "not run" reason) that ``previous``
    (an earlier efficacy.json) measured, with its ``_sd`` and per-seed values; returns ``{key: {command, date}}``
    of the run each carried figure comes from, so that the report can say so. Measured keys are never replaced."""
    carried: dict[str, dict[str, Any]] = {}
    old_meta = previous.get("meta", {})
    for key in GOALS:
        not_run = data[key] is None and str(data.get(f"{key}_reason", "")).startswith("not run")
        if not_run and previous.get(key) is not None:
            data[key], data[f"{key}_sd"] = previous[key], previous.get(f"{key}_sd")
            data.pop(f"{key}_reason", None)
            source = old_meta.get("carried_from", {}).get(key)
            carried[key] = source or {"command": old_meta.get("command"), "date": old_meta.get("date")}
            carried[key]["per_seed"] = old_meta.get("per_seed", {}).get(key) or carried[key].get("per_seed")
    return carried


def alignkit(args: list[str], env: dict) -> int:
    cmd = [str(ROOT / ".venv" / "bin" / "alignkit") if (ROOT / ".venv").exists() else "alignkit", *args]
    print("==> " + " ".join(cmd), flush=True)
    return subprocess.call(cmd, cwd=ROOT, env=env)


def report_figures(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / "report.json"
    if not path.exists():
        return None
    goals = json.loads(path.read_text()).get("goals") or {}
    return goals.get("figures")


def band_fraction(log: Path, key: str, target: float | None) -> float | None:
    """Share of the last half's ``key`` readings in train_log.jsonl within ±25 % of ``target``."""
    if not target or not log.exists():
        return None
    readings = [h[key] for h in map(json.loads, log.read_text().splitlines()) if h.get(key) is not None]
    last = readings[len(readings) - len(readings) // 2 :]
    return sum(abs(k / target - 1) <= 0.25 for k in last) / len(last) if last else None


def run_default(recipe, seeds, root, env, overrides, evaluate=True) -> dict[int, dict]:
    """Train (and evaluate) ``recipe`` once per seed; per seed the report's goal figures and the run directory."""
    out = {}
    for seed in seeds:
        run_dir = root / f"{recipe}-seed{seed}"
        extra = [] if evaluate else ["--no-eval"]
        code = alignkit(
            ["train", recipe, f"seed={seed}", f"output_dir={run_dir}", *overrides, "--overwrite", *extra], env
        )
        out[seed] = {"exit": code, "run_dir": run_dir, "figures": report_figures(run_dir) if code == 0 else None}
    return out


def rm_accuracy(run_dir: Path, runs_root: Path) -> float | None:
    """rm-smol's accuracy on its own card's held-out test pairs (the measure the eval reports for a judge)."""
    from alignkit.eval.judge_builders import _run_card
    from alignkit.eval.judge_info import heldout_pair_accuracy
    from alignkit.eval.rm_score import load_reward_scorer, resolve_reward_model

    resolved = resolve_reward_model(f"run:{run_dir.name}", runs_root)
    card = _run_card(run_dir)
    if resolved is None or card is None:
        return None
    scorer = load_reward_scorer(*resolved, name=run_dir.name)
    return heldout_pair_accuracy(scorer, card, "test", 64, None).get("value")


def rl_efficacy(recipe: str, seed: int, env: dict, quick: bool) -> dict | None:
    """bench/ppo_efficacy.py on ``recipe`` for one seed; its statistics (accuracy gain, truncation, KL band)."""
    with tempfile.TemporaryDirectory(prefix="efficacy-rl-") as tmp:
        cmd = [sys.executable, str(BENCH / "ppo_efficacy.py"), "--recipe", recipe, "--set", f"seed={seed}"]
        code = subprocess.call(
            cmd + (["--quick"] if quick else []), cwd=ROOT, env={**env, "ALIGNKIT_BENCH_RESULTS": tmp}
        )
        name = "ppo_efficacy" if recipe == "ppo-smol" else recipe.replace("-", "_") + "_efficacy"
        path = Path(tmp) / f"{name}.json"
        return json.loads(path.read_text())["statistics"] if code == 0 and path.exists() else None


def measure(groups: set[str], seeds: list[int], root: Path, env: dict, quick: bool) -> tuple[dict, dict, dict]:
    """Run the selected groups; returns (per-seed values by key, reasons for nulls, per-seed details)."""
    per_seed: dict[str, list] = {}
    reasons: dict[str, str] = {}
    details: dict[str, Any] = {}
    quick_over = (
        [*QUICK_OVERRIDES, f"model_name_or_path={os.environ.get('ALIGNKIT_BENCH_MODEL', '')}"] if quick else []
    )
    kl_parts: dict[str, list] = {}

    if "default" in groups:
        # --quick: sft-smol on the tiny model without its eval, to exercise the seed loop; the report-based keys
        # then stay null with the reason.
        recipe = "sft-smol" if quick else "dpo-smol"
        runs = run_default(recipe, seeds, root, env, quick_over, evaluate=not quick)
        details["default"] = {
            s: {"exit": r["exit"], "run_dir": str(r["run_dir"]), "figures": r["figures"]} for s, r in runs.items()
        }
        for key, fig in DEFAULT_KEYS.items():
            per_seed[key] = [(r["figures"] or {}).get(fig) for r in runs.values()]
            if all(r["figures"] is None for r in runs.values()):
                reasons[key] = "quick smoke run: no eval, no report" if quick else "no report.json goals (run failed?)"
    if "make" in groups:
        if quick:
            reasons["make_seconds"] = reasons["make_peak_rss_gib"] = "quick smoke run: make_time has its own smoke"
        else:
            walls, rss = [], []
            for seed in seeds:
                with tempfile.TemporaryDirectory(prefix="efficacy-make-") as tmp:
                    cmd = [sys.executable, str(BENCH / "make_time.py"), "--args", f"seed={seed}"]
                    code = subprocess.call(cmd, cwd=ROOT, env={**env, "ALIGNKIT_BENCH_RESULTS": tmp})
                    path = Path(tmp) / "make_time.json"
                    stats = json.loads(path.read_text())["statistics"] if path.exists() else {}
                    ok = code == 0 and stats.get("exit") == 0
                    walls.append(stats.get("wall_seconds") if ok else None)
                    rss.append(stats.get("peak_rss_gib") if ok else None)
            per_seed["make_seconds"], per_seed["make_peak_rss_gib"] = walls, rss
    if "rm" in groups:
        if quick:
            reasons["rm_heldout_accuracy"] = "quick smoke run: rm-smol not trained"
        else:
            runs = run_default("rm-smol", seeds, root, env, [], evaluate=False)
            per_seed["rm_heldout_accuracy"] = [
                rm_accuracy(r["run_dir"], root) if r["exit"] == 0 else None for r in runs.values()
            ]
    for group, recipe, key in (("ppo", "ppo-smol", "ppo_accuracy_gain"), ("grpo", GRPO_RECIPE, "grpo_accuracy_gain")):
        if group in groups or "kl" in groups:
            stats = [rl_efficacy(recipe, s, env, quick) for s in seeds]
            details[group] = stats
            per_seed[key] = [st.get("accuracy_gain") if st else None for st in stats]
            if not any(stats):
                reasons[key] = f"bench/ppo_efficacy.py --recipe {recipe} failed for every seed"
            kl_parts[group] = [st.get("kl_in_band_fraction") if st else None for st in stats]
    if "rdpo" in groups or "kl" in groups:
        if quick:
            reasons["rdpo_length_ratio"] = "quick smoke run: dpo-smol-rdpo not trained"
        else:
            runs = run_default("dpo-smol-rdpo", seeds, root, env, [])
            per_seed["rdpo_length_ratio"] = [(r["figures"] or {}).get("length_ratio") for r in runs.values()]
            details["rdpo_win_rate"] = [(r["figures"] or {}).get("win_rate") for r in runs.values()]
            target = 0.05  # dpo-smol-rdpo's kl_target (recipes/dpo-smol-rdpo.yaml)
            kl_parts["dpo"] = [
                band_fraction(r["run_dir"] / "train_log.jsonl", "kl_implicit", target) for r in runs.values()
            ]
    if "kl" in groups:
        if all(part in kl_parts for part in ("ppo", "grpo", "dpo")):
            per_seed["kl_in_band_fraction"] = [
                None if None in trio else min(trio)
                for trio in zip(kl_parts["ppo"], kl_parts["grpo"], kl_parts["dpo"], strict=True)
            ]
        else:
            reasons["kl_in_band_fraction"] = f"needs PPO, GRPO and DPO readings; measured: {kl_parts}"
    details["kl_parts"] = kl_parts
    reasons.setdefault(
        "unlikelihood_repetition_ratio",
        "not measured by bench/efficacy.py yet: needs sft-smol and sft-smol-unlikelihood evals' 3-gram repetition",
    )
    return per_seed, reasons, details


def render(data: dict[str, Any]) -> str:
    meta = data["meta"]
    cpu = meta["cpu"]
    lines = [
        "# Efficacy figures across seeds (issue 12)",
        "",
        f"Command: `{meta['command']}` (run {meta['date']}; seeds {meta['seeds']}; "
        f"figures {', '.join(meta['figures_run'])}).",
        "",
        f"CPU: {cpu['model']} ({', '.join(cpu.get('flags_of_interest') or []) or 'no bf16 flags'}), "
        f"threads {meta['threads']}.",
        "",
        "| key | figure | goal | mean ± sd | per seed | met? |",
        "|---|---|---|---|---|---|",
    ]
    for key, (goal, label) in GOALS.items():
        value, sd = data[key], data[f"{key}_sd"]
        if value is None:
            cell, state = f"null: {data.get(f'{key}_reason')}", "not measured"
        elif goal.startswith("none"):
            cell, state = f"{value:.3f}" + (f" ± {sd:.3f}" if sd is not None else ""), "– (no goal)"
        else:
            op, threshold = goal.split()
            ok = {
                "<=": value <= float(threshold),
                "<": value < float(threshold),
                ">=": value >= float(threshold),
                ">": value > float(threshold),
            }[op]
            cell, state = f"{value:.3f}" + (f" ± {sd:.3f}" if sd is not None else ""), "met" if ok else "**missed**"
        seeds = ", ".join("–" if v is None else f"{v:.3f}" for v in meta["per_seed"].get(key, []))
        lines.append(f"| `{key}` | {label} | {goal} | {cell} | {seeds or '–'} | {state} |")
    for key, source in (meta.get("carried_from") or {}).items():
        lines.append(f"\n`{key}` is carried from an earlier run: `{source.get('command')}` ({source.get('date')}).")
    lines += [
        "",
        "Per-seed details (run directories, truncation before/after for the arithmetic gains) are in "
        "efficacy.json's meta.details.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from benchlib import bench_model_path, command_line, cpu_info, results_dir, with_hand_notes

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--figures", default="default", help=f"comma-separated groups of {','.join(GROUPS)}, or all")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--runs-root", default="runs/efficacy", help="where the per-seed runs go")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny model, 2 seeds, no eval, temp dirs")
    parser.add_argument("--out", help="report path (default bench/results/efficacy.md)")
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the figures of groups not run now from the existing efficacy.json (each with its own command/date)",
    )
    a = parser.parse_args(argv)
    groups = set(GROUPS) if a.figures == "all" else set(a.figures.split(","))
    if unknown := groups - set(GROUPS):
        parser.error(f"--figures: unknown {sorted(unknown)}")
    seeds = [int(s) for s in a.seeds.split(",")]
    env = dict(os.environ)
    tmp = None
    if a.quick:
        seeds = seeds[:2]
        env["ALIGNKIT_BENCH_MODEL"] = os.environ["ALIGNKIT_BENCH_MODEL"] = bench_model_path(True)
        tmp = tempfile.TemporaryDirectory(prefix="efficacy-quick-")
        a.runs_root = tmp.name
    out = Path(a.out) if a.out else results_dir(a.quick) / "efficacy.md"
    date = time.strftime("%Y-%m-%d %H:%M")
    try:
        per_seed, reasons, details = measure(groups, seeds, Path(a.runs_root).resolve(), env, a.quick)
    finally:
        if tmp is not None:
            tmp.cleanup()
    data = aggregate(per_seed, reasons)
    previous_path = out.with_suffix(".json")
    carried = carry_over(data, json.loads(previous_path.read_text())) if a.keep and previous_path.exists() else {}
    data["meta"] = {
        "command": command_line(argv),
        "date": date,
        "cpu": cpu_info(),
        "threads": os.environ.get("OMP_NUM_THREADS", "default"),
        "seeds": seeds,
        "n_seeds": len(seeds),
        "figures_run": sorted(groups),
        "goals": {k: g for k, (g, _) in GOALS.items()},
        "labels": {k: label for k, (_, label) in GOALS.items()},
        "per_seed": {**{k: v["per_seed"] for k, v in carried.items()}, **per_seed},
        "details": details,
        "carried_from": carried,
    }
    from alignkit.io import atomic_write_text

    atomic_write_text(out.with_suffix(".json"), json.dumps(data, indent=1, default=str) + "\n")
    atomic_write_text(out, with_hand_notes(out, render(data), marker="## What was tried"))
    print(f"wrote {out} and {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
