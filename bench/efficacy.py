"""Efficacy figures of issue 12 across seeds: bench/results/efficacy.json (its exact keys, mean and ``_sd`` over the
seeds) and bench/results/efficacy.md (mean ± sd, per-seed values, command, date, CPU).

    .venv/bin/python bench/efficacy.py                          # the default run's figures, seeds 0,1,2
    .venv/bin/python bench/efficacy.py --figures default,rm,ppo --seeds 0,1,2
    .venv/bin/python bench/efficacy.py --figures all            # hours on a 2-core CPU
    .venv/bin/python bench/efficacy.py --quick                  # smoke run: tiny model, 2 seeds, no eval, temp dir
    .venv/bin/python bench/efficacy.py --figures rdpo,kl --keep     # R-DPO now; PPO/GRPO KL parts from efficacy.json
    .venv/bin/python bench/efficacy.py --quick --seeds 0 --figures unlikelihood   # its smoke: ~50 s, tiny model

Figure groups (``--figures``), each run once per seed with the recipe override ``seed=S`` into its own run
directory under ``--runs-root``:

* ``default``: ``alignkit train dpo-smol seed=S output_dir=<root>/dpo-smol-seedS`` (train, then the recipe's eval
  suite); the six ``default_*`` keys are ``report.json["goals"]["figures"]`` (eval/goals.py: the held-out judge's
  win rate, CI low, LC win rate, and the trained/start ratios). The runs a suite or card needs (rm-smol, the judge)
  are trained once in ``<root>`` and shared by the seeds: they are the measuring instrument, not the treatment.
* ``make``: ``bench/make_time.py --args seed=S`` per seed (cold dataset cache, fresh runs/): ``make_seconds``,
  ``make_peak_rss_gib`` (largest process).
* ``rm``: ``alignkit train rm-smol seed=S --no-eval`` and ``alignkit train rm-judge-smol seed=S --no-eval``, then
  each one's accuracy on its own card's held-out test pairs (``alignkit.eval.judge_info.heldout_pair_accuracy``, 64
  pairs): ``rm_heldout_accuracy`` is per seed the worse of the two (issue 12: "rm-smol (and the judge RM)"); both
  are in meta.details.rm_heldout and under the table.
* ``ppo`` / ``grpo``: ``bench/ppo_efficacy.py [--recipe grpo-smol-adaptive-kl] --set seed=S``: held-out arithmetic
  accuracy gain (and the truncation rate before and after, in the per-seed details). ``--jobs 2`` runs two seeds at
  once, each in its own process pinned to its own core with one thread (the only layout the 2-core machines allow
  beside nothing else; each seed's training time is then its time on one core beside another 1-thread job, as the
  sequential runs at ``OMP_NUM_THREADS=1`` measured it too).
* ``rdpo``: ``dpo-smol-rdpo`` (dpo-smol's card, loss, steps and batch, plus R-DPO and an adaptive β) as ``default``:
  ``rdpo_length_ratio``. Its verdict is compound (:func:`rdpo_verdict`): mean length ratio ≤ 1.1 AND its mean
  held-out judge win rate ≥ plain DPO's ``default_win_rate`` − 0.05, plain DPO's from this invocation or (``--keep``)
  the previous efficacy.json; both win rates and the verdict are in the md and in ``meta.verdicts``. Also gives the
  DPO-β part of ``kl``: the in-band share of its ``kl_implicit`` around its own recipe's ``kl_target``.
  Time at 1 thread: the calibration run took 599 s for 64 steps at ~60 % of a shared core (~6 min on a whole core),
  plus the smol eval (dpo-smol seed 0: 410 s, base generations cached): ~14 min a seed, ~45 min for 3 seeds.
* ``kl``: trains nothing. Per seed the worst (min) of the PPO, GRPO and DPO-β in-band shares
  (:func:`kl_worst_per_seed`), each part taken from this invocation's ``ppo``/``grpo``/``rdpo`` runs, else with
  ``--keep`` from the previous efficacy.json's ``meta.details.kl_parts``, else from ``--kl-from FILE`` (an older
  efficacy.json, e.g. ``git show REV:bench/results/efficacy.json``); the md names each part's command and date. With
  ``--keep``, parts not measured now are carried into the new efficacy.json, so separate invocations accumulate them.
* ``unlikelihood``: per seed ``sft-smol`` and ``sft-smol-unlikelihood`` (``--no-eval``), then one ``alignkit eval
  <sft-smol run> --compare <unlikelihood run> --suite smol-repetition`` (smol's chat prompts, decoding and held-out
  perplexity set, no judges): ``unlikelihood_repetition_ratio`` = the chat replies' 3-gram repetition rate
  (``diversity.repetition_rate``), unlikelihood / plain (:func:`unlikelihood_seed`). Verdict
  (:func:`unlikelihood_verdict`): mean ratio < 0.9 AND the mean held-out perplexity ratio within 5 %
  (|ppl_ul / ppl_sft − 1| ≤ 0.05). Time at 1 thread, an estimate: 6 steps took 94 s (sft-smol) and 148 s
  (sft-smol-unlikelihood) with three processes on one core (2026-12-02, AMD EPYC), i.e. ~5.5 and ~8.6 s a step on a
  whole core, so 40 steps ≈ 4 + 6 min; the eval ≈ 4 min (2 x 64 greedy replies of ≤ 256 tokens: dpo-smol's smol eval
  spent 83 s generating one model's 80 replies; + 2 x 16 held-out texts): ~15 min a seed, ~45 min for 3 seeds
  (± 50 %: scaled from a shared core). ``--quick --figures unlikelihood`` smoke-runs it in ~50 s.

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
    "rm_heldout_accuracy": (
        ">= 0.75",
        "held-out pair accuracy, the worse of rm-smol (the proxy) and rm-judge-smol (the judge)",
    ),
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
RM_RECIPES = ("rm-smol", "rm-judge-smol")  # the proxy and the held-out judge: rm_heldout_accuracy is the worse
QUICK_OVERRIDES = ["max_steps=1", "max_train_samples=8", "save_strategy=no", "logging_steps=1"]
# Compound verdicts, fixed before any run (issue 12's table):
RDPO_LENGTH_MAX = 1.1  # rdpo_length_ratio <= this ...
RDPO_WIN_SLACK = 0.05  # ... and R-DPO's judge win rate >= plain DPO's (default_win_rate) - this
UL_REPETITION_MAX = 0.9  # unlikelihood_repetition_ratio < this ...
UL_PPL_TOLERANCE = 0.05  # ... and |held-out ppl ratio (unlikelihood / sft-smol) - 1| <= this
UL_SUITE = "smol-repetition"  # eval/suites/smol-repetition.yaml: smol's chat set, decoding and held-out ppl
KL_PARTS = ("ppo", "grpo", "dpo")


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
    of the run each carried figure comes from (and its ``cpu``), so that the report can say so. Measured keys are
    never replaced."""
    carried: dict[str, dict[str, Any]] = {}
    old_meta = previous.get("meta", {})
    for key in GOALS:
        not_run = data[key] is None and str(data.get(f"{key}_reason", "")).startswith("not run")
        if not_run and previous.get(key) is not None:
            data[key], data[f"{key}_sd"] = previous[key], previous.get(f"{key}_sd")
            data.pop(f"{key}_reason", None)
            source = old_meta.get("carried_from", {}).get(key)
            carried[key] = dict(source or {"command": old_meta.get("command"), "date": old_meta.get("date")})
            cpu = old_meta.get("cpu") or {}  # the CPU it was measured on, not this run's
            carried[key].setdefault("cpu", {k: cpu[k] for k in ("model", "flags_of_interest", "cores") if k in cpu})
            carried[key]["per_seed"] = old_meta.get("per_seed", {}).get(key) or carried[key].get("per_seed")
    return carried


def rdpo_verdict(length_ratio: float | None, win_rate: float | None, default_win_rate: float | None) -> dict:
    """R-DPO's compound condition on the means over seeds::

        met = (L ≤ 1.1) and (W_rdpo ≥ W_dpo − 0.05)

    L = R-DPO's mean length / its start's (``rdpo_length_ratio``), W_rdpo its held-out judge win rate against its
    start, W_dpo plain DPO's (``default_win_rate``, the same judge, prompts and start). ``met`` is None when a term is
    missing (never guessed)."""
    floor = None if default_win_rate is None else default_win_rate - RDPO_WIN_SLACK
    length_ok = None if length_ratio is None else length_ratio <= RDPO_LENGTH_MAX
    win_ok = None if win_rate is None or floor is None else win_rate >= floor
    met = None if length_ok is None or win_ok is None else length_ok and win_ok
    return {
        "rule": f"length_ratio <= {RDPO_LENGTH_MAX} and win_rate >= default_win_rate - {RDPO_WIN_SLACK}",
        "length_ratio": length_ratio,
        "win_rate": win_rate,
        "default_win_rate": default_win_rate,
        "win_floor": floor,
        "length_ok": length_ok,
        "win_ok": win_ok,
        "met": met,
    }


def unlikelihood_seed(
    rep_ul: float | None, rep_sft: float | None, ppl_ul: float | None, ppl_sft: float | None
) -> dict:
    """One seed's ratios, unlikelihood run over plain SFT run::

        repetition_ratio = rep_ul / rep_sft     (3-gram repetition rate of the chat replies, 1 − unique/total)
        ppl_ratio        = ppl_ul / ppl_sft     (perplexity on the held-out reference answers)

    None where a term is missing or a denominator is 0."""

    def ratio(a, b):
        return None if a is None or b is None or b == 0 else a / b

    return {"repetition_ratio": ratio(rep_ul, rep_sft), "ppl_ratio": ratio(ppl_ul, ppl_sft)}


def unlikelihood_verdict(repetition_ratio: float | None, ppl_ratio: float | None) -> dict:
    """The unlikelihood figure's compound condition on the means over seeds::

        met = (R < 0.9) and (|P − 1| ≤ 0.05)

    R = mean 3-gram repetition ratio, P = mean held-out perplexity ratio (unlikelihood / sft-smol); "perplexity within
    5 %" read both ways. None when a term is missing."""
    rep_ok = None if repetition_ratio is None else repetition_ratio < UL_REPETITION_MAX
    ppl_ok = None if ppl_ratio is None else abs(ppl_ratio - 1) <= UL_PPL_TOLERANCE
    met = None if rep_ok is None or ppl_ok is None else rep_ok and ppl_ok
    return {
        "rule": f"repetition_ratio < {UL_REPETITION_MAX} and |ppl_ratio - 1| <= {UL_PPL_TOLERANCE}",
        "repetition_ratio": repetition_ratio,
        "ppl_ratio": ppl_ratio,
        "repetition_ok": rep_ok,
        "ppl_ok": ppl_ok,
        "met": met,
    }


def kl_worst_per_seed(parts: dict[str, dict[str, Any]], seeds: list[int]) -> list[float | None]:
    """Per seed s, ``min(ppo[s], grpo[s], dpo[s])``: the worst of the three adaptive-KL in-band shares; None for a seed
    that any part lacks. ``parts[name]`` is ``{"seeds": [...], "values": [...], ...}`` (see :func:`kl_part`)."""
    out: list[float | None] = []
    for seed in seeds:
        trio = []
        for name in KL_PARTS:
            part = parts.get(name) or {}
            by_seed = dict(zip(part.get("seeds") or [], part.get("values") or [], strict=False))
            trio.append(by_seed.get(seed))
        out.append(None if None in trio else min(trio))
    return out


def kl_part(seeds: list[int], values: list[float | None], command: str | None, date: str | None) -> dict[str, Any]:
    """One in-band-share series with its origin: the form efficacy.json keeps in ``meta.details.kl_parts``."""
    return {"seeds": list(seeds), "values": list(values), "command": command, "date": date}


def previous_kl_parts(previous: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The KL parts an earlier efficacy.json holds, in :func:`kl_part` form. Older files kept bare per-seed lists
    (seeds = their ``meta.seeds``, origin = their own command and date)."""
    meta = previous.get("meta") or {}
    out = {}
    for name, part in ((meta.get("details") or {}).get("kl_parts") or {}).items():
        if isinstance(part, list):
            part = kl_part(meta.get("seeds") or list(range(len(part))), part, meta.get("command"), meta.get("date"))
        if part.get("values") and any(v is not None for v in part["values"]):
            out[name] = part
    return out


def merge_kl_parts(now: dict[str, dict], *earlier: dict[str, dict]) -> dict[str, dict]:
    """Each part from the first source that has it: this invocation first, then the earlier files in order."""
    merged = dict(now)
    for source in earlier:
        for name, part in source.items():
            merged.setdefault(name, part)
    return merged


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


def run_kl_target(run_dir: Path) -> float | None:
    """The ``kl_target`` the run trained with (its resolved_config.json), so the band is the recipe's own."""
    path = run_dir / "resolved_config.json"
    if not path.exists():
        return None
    config = json.loads(path.read_text())
    return (config.get("training") or config).get("kl_target")


def run_default(
    recipe, seeds, root, env, overrides, evaluate=True, done: dict | None = None, reuse: bool = False
) -> dict[int, dict]:
    """Train (and evaluate) ``recipe`` once per seed; per seed the report's goal figures and the run directory.
    ``done`` memoizes runs of this invocation by (recipe, seed, evaluate, overrides): a run two groups need (the
    quick smoke's sft-smol) is trained once. ``reuse`` (``--reuse-finished``) takes a finished run already in
    ``root`` (and its report.json, when evaluated) instead of training it again."""
    from alignkit.runs import run_is_finished

    out = {}
    for seed in seeds:
        key = (recipe, seed, evaluate, tuple(overrides))
        if done is not None and key in done:
            out[seed] = done[key]
            continue
        run_dir = root / f"{recipe}-seed{seed}"
        if reuse and run_is_finished(run_dir) and (not evaluate or (run_dir / "report.json").exists()):
            print(f"==> reusing the finished run {run_dir} (--reuse-finished)", flush=True)
            out[seed] = {"exit": 0, "run_dir": run_dir, "figures": report_figures(run_dir) if evaluate else None}
            if done is not None:
                done[key] = out[seed]
            continue
        extra = [] if evaluate else ["--no-eval"]
        code = alignkit(
            ["train", recipe, f"seed={seed}", f"output_dir={run_dir}", *overrides, "--overwrite", *extra], env
        )
        out[seed] = {"exit": code, "run_dir": run_dir, "figures": report_figures(run_dir) if code == 0 else None}
        if done is not None:
            done[key] = out[seed]
    return out


def repetition_and_ppl(report: dict[str, Any], model: str) -> tuple[float | None, float | None]:
    """``model``'s chat 3-gram repetition rate and held-out perplexity in an eval report.json."""
    metrics = (report.get("metrics") or {}).get(model) or {}
    rep = (((metrics.get("sets") or {}).get("chat") or {}).get("diversity") or {}).get("repetition_rate")
    ppl = (metrics.get("perplexity_heldout") or {}).get("perplexity")
    return rep, ppl


def run_unlikelihood(seeds, root, env, overrides, quick, done, reuse=False) -> dict[int, dict]:
    """Per seed: sft-smol and sft-smol-unlikelihood (no eval), then both in one smol-repetition eval."""
    plain = run_default("sft-smol", seeds, root, env, overrides, evaluate=False, done=done, reuse=reuse)
    ul = run_default("sft-smol-unlikelihood", seeds, root, env, overrides, evaluate=False, done=done, reuse=reuse)
    out = {}
    for seed in seeds:
        row: dict[str, Any] = {"sft_run": str(plain[seed]["run_dir"]), "unlikelihood_run": str(ul[seed]["run_dir"])}
        if plain[seed]["exit"] or ul[seed]["exit"]:
            out[seed] = {**row, "error": "training failed", **unlikelihood_seed(None, None, None, None)}
            continue
        out_dir = root / f"unlikelihood-compare-seed{seed}"
        args = ["eval", str(plain[seed]["run_dir"]), "--compare", str(ul[seed]["run_dir"]), "--suite", UL_SUITE]
        code = alignkit([*args, "--out", str(out_dir), *(["--max-prompts", "2"] if quick else [])], env)
        report_path = out_dir / "report.json"
        if code or not report_path.exists():
            out[seed] = {**row, "error": f"eval exit {code}", **unlikelihood_seed(None, None, None, None)}
            continue
        report = json.loads(report_path.read_text())
        names = [m["name"] for m in report["models"]]  # [sft-smol, sft-smol-unlikelihood]: the order given
        (rep_sft, ppl_sft), (rep_ul, ppl_ul) = (repetition_and_ppl(report, n) for n in names[:2])
        out[seed] = {
            **row,
            "report": str(report_path),
            "repetition_rate": {"sft": rep_sft, "unlikelihood": rep_ul},
            "heldout_ppl": {"sft": ppl_sft, "unlikelihood": ppl_ul},
            **unlikelihood_seed(rep_ul, rep_sft, ppl_ul, ppl_sft),
        }
    return out


def worse_per_seed(*per_model: list[float | None]) -> list[float | None]:
    """Per seed, min over the models (None when any model has no value for that seed)."""
    return [None if None in values else min(values) for values in zip(*per_model, strict=True)]


def render_rm_heldout(accuracy: dict[str, list[float | None]]) -> list[str]:
    if not accuracy:
        return []
    parts = [
        f"{name} {', '.join('–' if v is None else f'{v:.3f}' for v in values)}"
        + (f" (mean {statistics.fmean(values):.3f})" if values and None not in values else "")
        for name, values in accuracy.items()
    ]
    return ["", f"`rm_heldout_accuracy` per seed is the worse of: {'; '.join(parts)}."]


def rm_accuracy(run_dir: Path, runs_root: Path) -> float | None:
    """A reward model run's accuracy on its own card's held-out test pairs (the measure the eval reports for a
    judge)."""
    from alignkit.eval.judge_builders import _run_card
    from alignkit.eval.judge_info import heldout_pair_accuracy
    from alignkit.eval.rm_score import load_reward_scorer, resolve_reward_model

    resolved = resolve_reward_model(f"run:{run_dir.name}", runs_root)
    card = _run_card(run_dir)
    if resolved is None or card is None:
        return None
    scorer = load_reward_scorer(*resolved, name=run_dir.name)
    return heldout_pair_accuracy(scorer, card, "test", 64, None).get("value")


def rl_efficacy(recipe: str, seed: int, env: dict, quick: bool, core: int | None = None) -> dict | None:
    """bench/ppo_efficacy.py on ``recipe`` for one seed; its statistics (accuracy gain, truncation, KL band). With
    ``core``, the process is pinned to that CPU core and runs one thread."""
    with tempfile.TemporaryDirectory(prefix="efficacy-rl-") as tmp:
        cmd = [sys.executable, str(BENCH / "ppo_efficacy.py"), "--recipe", recipe, "--set", f"seed={seed}"]
        env = {**env, "ALIGNKIT_BENCH_RESULTS": tmp}
        if core is not None:
            env["OMP_NUM_THREADS"] = "1"
        proc = subprocess.Popen(cmd + (["--quick"] if quick else []), cwd=ROOT, env=env)
        if core is not None:  # pinned from its first milliseconds (no preexec_fn: unsafe from a worker thread)
            os.sched_setaffinity(proc.pid, {core})
        code = proc.wait()
        name = "ppo_efficacy" if recipe == "ppo-smol" else recipe.replace("-", "_") + "_efficacy"
        path = Path(tmp) / f"{name}.json"
        return json.loads(path.read_text())["statistics"] if code == 0 and path.exists() else None


def rl_efficacy_seeds(recipe: str, seeds: list[int], env: dict, quick: bool, jobs: int = 1) -> list[dict | None]:
    """:func:`rl_efficacy` for each seed, in order; ``jobs`` > 1 runs that many at once, job i pinned to core i."""
    if jobs <= 1:
        return [rl_efficacy(recipe, s, env, quick) for s in seeds]
    from concurrent.futures import ThreadPoolExecutor
    from queue import SimpleQueue

    cores: SimpleQueue = SimpleQueue()
    for core in sorted(os.sched_getaffinity(0))[:jobs]:
        cores.put(core)

    def one(seed: int) -> dict | None:
        core = cores.get()
        try:
            return rl_efficacy(recipe, seed, env, quick, core)
        finally:
            cores.put(core)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(one, seeds))


def measure(
    groups: set[str],
    seeds: list[int],
    root: Path,
    env: dict,
    quick: bool,
    origin: tuple[str, str] = (None, None),
    reuse: bool = False,
    jobs: int = 1,
) -> tuple[dict, dict, dict]:
    """Run the selected groups; returns (per-seed values by key, reasons for nulls, per-seed details). The KL parts
    measured now are in ``details["kl_parts"]`` (:func:`kl_part` form, ``origin`` = this command and date); the
    ``kl`` group itself is combined in :func:`main`, which may add parts of earlier runs."""
    per_seed: dict[str, list] = {}
    reasons: dict[str, str] = {}
    details: dict[str, Any] = {}
    quick_over = (
        [*QUICK_OVERRIDES, f"model_name_or_path={os.environ.get('ALIGNKIT_BENCH_MODEL', '')}"] if quick else []
    )
    kl_parts: dict[str, dict] = {}
    done: dict = {}  # runs trained by this invocation, shared between groups (run_default)

    if "default" in groups:
        # --quick: sft-smol on the tiny model without its eval, to exercise the seed loop; the report-based keys
        # then stay null with the reason.
        recipe = "sft-smol" if quick else "dpo-smol"
        runs = run_default(recipe, seeds, root, env, quick_over, evaluate=not quick, done=done, reuse=reuse)
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
            walls, rss, reports = [], [], []
            for seed in seeds:
                with tempfile.TemporaryDirectory(prefix="efficacy-make-") as tmp:
                    cmd = [sys.executable, str(BENCH / "make_time.py"), "--args", f"seed={seed}"]
                    code = subprocess.call(cmd, cwd=ROOT, env={**env, "ALIGNKIT_BENCH_RESULTS": tmp})
                    path = next(Path(tmp).glob("make_time_*.json"), None)  # make_time_<cpu kind>.json
                    stats = json.loads(path.read_text())["statistics"] if path else {}
                    ok = code == 0 and stats.get("exit") == 0
                    walls.append(stats.get("wall_seconds") if ok else None)
                    rss.append(stats.get("peak_rss_gib") if ok else None)
                    reports.append(stats.get("report_goal_figures") if ok else None)
            per_seed["make_seconds"], per_seed["make_peak_rss_gib"] = walls, rss
            # Each cold make trains its own proxy, pairs, judge and policy: its report's figures vary the whole chain,
            # not only the DPO seed as the default group does (its pairs, proxy and judge are shared by the seeds).
            details["make_reports"] = [{"seed": s, "figures": f} for s, f in zip(seeds, reports, strict=True)]
    if "rm" in groups:
        if quick:
            reasons["rm_heldout_accuracy"] = "quick smoke run: rm-smol and rm-judge-smol not trained"
        else:
            accuracy = {}
            for recipe in RM_RECIPES:
                runs = run_default(recipe, seeds, root, env, [], evaluate=False, done=done, reuse=reuse)
                accuracy[recipe] = [rm_accuracy(r["run_dir"], root) if r["exit"] == 0 else None for r in runs.values()]
            details["rm_heldout"] = accuracy
            per_seed["rm_heldout_accuracy"] = worse_per_seed(*accuracy.values())
    for group, recipe, key in (("ppo", "ppo-smol", "ppo_accuracy_gain"), ("grpo", GRPO_RECIPE, "grpo_accuracy_gain")):
        if group in groups:
            stats = rl_efficacy_seeds(recipe, seeds, env, quick, jobs)
            details[group] = stats
            per_seed[key] = [st.get("accuracy_gain") if st else None for st in stats]
            if not any(stats):
                reasons[key] = f"bench/ppo_efficacy.py --recipe {recipe} failed for every seed"
            values = [st.get("kl_in_band_fraction") if st else None for st in stats]
            kl_parts[group] = kl_part(seeds, values, *origin)
    if "rdpo" in groups:
        if quick:
            # The on-policy card needs rm-smol and 640 sampled replies: too slow for a smoke run. rdpo_verdict is
            # covered by tests/test_bench_quick.py.
            reasons["rdpo_length_ratio"] = "quick smoke run: dpo-smol-rdpo not trained"
        else:
            runs = run_default("dpo-smol-rdpo", seeds, root, env, [], done=done, reuse=reuse)
            per_seed["rdpo_length_ratio"] = [(r["figures"] or {}).get("length_ratio") for r in runs.values()]
            details["rdpo"] = {
                s: {
                    "exit": r["exit"],
                    "run_dir": str(r["run_dir"]),
                    "figures": r["figures"],
                    "kl_target": run_kl_target(r["run_dir"]),
                }
                for s, r in runs.items()
            }
            details["rdpo_win_rate"] = [(r["figures"] or {}).get("win_rate") for r in runs.values()]
            values = [
                band_fraction(r["run_dir"] / "train_log.jsonl", "kl_implicit", run_kl_target(r["run_dir"]))
                for r in runs.values()
            ]
            kl_parts["dpo"] = kl_part(seeds, values, *origin)
    if "unlikelihood" in groups:
        rows = run_unlikelihood(seeds, root, env, quick_over, quick, done, reuse)
        details["unlikelihood"] = rows
        per_seed["unlikelihood_repetition_ratio"] = [rows[s]["repetition_ratio"] for s in seeds]
        details["unlikelihood_ppl_ratio"] = [rows[s]["ppl_ratio"] for s in seeds]
        if all(v is None for v in per_seed["unlikelihood_repetition_ratio"]):
            reasons["unlikelihood_repetition_ratio"] = "no repetition rates: " + "; ".join(
                f"seed {s}: {rows[s].get('error', 'no repetition_rate in the report')}" for s in seeds
            )
    details["kl_parts"] = kl_parts
    return per_seed, reasons, details


def combine_kl(
    groups: set[str], seeds: list[int], details: dict, per_seed: dict, reasons: dict, earlier: list[dict]
) -> None:
    """Fill ``details["kl_parts"]`` with this invocation's parts plus the earlier files' (``earlier``: the parts of
    --keep's efficacy.json, then of each --kl-from file), and, when the ``kl`` group is selected, the per-seed worst
    of the three (:func:`kl_worst_per_seed`). Trains nothing."""
    parts = merge_kl_parts(details.get("kl_parts") or {}, *earlier)
    details["kl_parts"] = parts
    if "kl" not in groups:
        return
    missing = [name for name in KL_PARTS if name not in parts]
    if missing:
        run = ",".join("rdpo" if m == "dpo" else m for m in missing)
        reasons["kl_in_band_fraction"] = (
            f"no {', '.join(missing)} in-band shares: run --figures {run} (with --keep, or --kl-from an efficacy.json"
            " that has them)"
        )
        return
    per_seed["kl_in_band_fraction"] = kl_worst_per_seed(parts, seeds)


def _f(x: Any) -> str:
    return "–" if x is None else f"{x:.3f}"


def render_verdicts(verdicts: dict[str, dict]) -> list[str]:
    """The compound conditions, with every term (the table's met? column shows their result)."""
    lines = []
    if v := verdicts.get("rdpo_length_ratio"):
        state = {True: "met", False: "**missed**", None: "undecided (a term is missing)"}[v.get("met")]
        lines += [
            "",
            f"`rdpo_length_ratio` verdict ({v['rule']}): {state}. R-DPO length ratio {_f(v.get('length_ratio'))}; "
            f"R-DPO judge win rate {_f(v.get('win_rate'))} (per seed: "
            f"{', '.join(_f(w) for w in v.get('win_rate_per_seed') or []) or '–'}) against plain DPO's "
            f"{_f(v.get('default_win_rate'))} − {RDPO_WIN_SLACK} = {_f(v.get('win_floor'))} (plain DPO's from "
            f"{v.get('default_win_rate_from') or 'nowhere'}).",
        ]
    if v := verdicts.get("unlikelihood_repetition_ratio"):
        state = {True: "met", False: "**missed**", None: "undecided (a term is missing)"}[v.get("met")]
        lines += [
            "",
            f"`unlikelihood_repetition_ratio` verdict ({v['rule']}): {state}. 3-gram repetition ratio "
            f"{_f(v.get('repetition_ratio'))}; held-out perplexity ratio {_f(v.get('ppl_ratio'))} (per seed: "
            f"{', '.join(_f(r) for r in v.get('ppl_ratio_per_seed') or []) or '–'}).",
        ]
    return lines


def render_kl_parts(parts: dict[str, Any]) -> list[str]:
    """Where each of the three adaptive-KL in-band shares came from."""
    if not parts:
        return []
    lines = ["", "`kl_in_band_fraction` parts (per seed; the figure is the worst of the three per seed):", ""]
    for name in KL_PARTS:
        part = parts.get(name)
        if not part:
            lines.append(f"- {name}: not measured")
            continue
        seeds = ", ".join(f"seed {s} {_f(v)}" for s, v in zip(part["seeds"], part["values"], strict=False))
        lines.append(f"- {name}: {seeds}; from `{part.get('command')}` ({part.get('date')})")
    return lines


def render_make_reports(reports: list[dict[str, Any]]) -> list[str]:
    """The default goal figures each cold ``make`` of the ``make`` group printed in its own report: every link of the
    chain (proxy, pairs, judge, policy) trained afresh, so their spread is what a user's ``make`` can show."""
    if not reports:
        return []
    keys = ["win_rate", "win_ci_low", "lc_win_rate", "ppl_ratio", "distinct2_ratio", "length_ratio"]
    lines = [
        "",
        "Each cold `make` of the `make` group, its own report (`recipe=dpo-smol seed=S`; proxy, pairs, judge and "
        "policy all trained afresh, not shared as in the default group):",
        "",
        "| seed | " + " | ".join(keys) + " |",
        "|---|" + "---|" * len(keys),
    ]
    for entry in reports:
        figures = entry.get("figures") or {}
        cells = ["–" if figures.get(k) is None else f"{figures[k]:.3f}" for k in keys]
        lines.append(f"| {entry['seed']} | " + " | ".join(cells) + " |")
    return lines


def render(data: dict[str, Any]) -> str:
    meta = data["meta"]
    cpu = meta["cpu"]
    verdicts = meta.get("verdicts") or {}
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
            if key in verdicts:  # a compound condition decides (see below the table)
                ok = verdicts[key].get("met")
            cell = f"{value:.3f}" + (f" ± {sd:.3f}" if sd is not None else "")
            state = "undecided (see below)" if ok is None else "met" if ok else "**missed**"
        seeds = ", ".join("–" if v is None else f"{v:.3f}" for v in meta["per_seed"].get(key, []))
        lines.append(f"| `{key}` | {label} | {goal} | {cell} | {seeds or '–'} | {state} |")
    for key, source in (meta.get("carried_from") or {}).items():
        cpu = (source.get("cpu") or {}).get("model", "CPU not recorded")
        lines.append(
            f"\n`{key}` is carried from an earlier run: `{source.get('command')}` ({source.get('date')}, {cpu})."
        )
    lines += render_verdicts(verdicts) + render_kl_parts((meta.get("details") or {}).get("kl_parts") or {})
    lines += render_make_reports((meta.get("details") or {}).get("make_reports") or [])
    lines += render_rm_heldout((meta.get("details") or {}).get("rm_heldout") or {})
    lines += [
        "",
        "Per-seed details (run directories, truncation before/after for the arithmetic gains) are in "
        "efficacy.json's meta.details.",
        "",
    ]
    return "\n".join(lines)


def _mean_or_none(values: list[float | None] | None) -> float | None:
    return statistics.fmean(values) if values and None not in values else None


def compound_verdicts(
    data: dict[str, Any], details: dict[str, Any], groups: set[str], carried: dict, previous: dict | None
) -> dict[str, dict]:
    """The compound conditions (:func:`rdpo_verdict`, :func:`unlikelihood_verdict`) of the groups run now; a figure
    carried by --keep keeps the verdict it had."""
    old = ((previous or {}).get("meta") or {}).get("verdicts") or {}
    out: dict[str, dict] = {}
    if "rdpo" in groups and data["rdpo_length_ratio"] is not None:
        wins = details.get("rdpo_win_rate")
        source = carried.get("default_win_rate")
        out["rdpo_length_ratio"] = {
            **rdpo_verdict(data["rdpo_length_ratio"], _mean_or_none(wins), data["default_win_rate"]),
            "win_rate_per_seed": wins,
            "default_win_rate_from": (
                "this invocation"
                if "default" in groups
                else f"`{source['command']}` ({source['date']})"
                if source
                else None
            ),
        }
    if "unlikelihood" in groups and data["unlikelihood_repetition_ratio"] is not None:
        ppl = details.get("unlikelihood_ppl_ratio")
        out["unlikelihood_repetition_ratio"] = {
            **unlikelihood_verdict(data["unlikelihood_repetition_ratio"], _mean_or_none(ppl)),
            "ppl_ratio_per_seed": ppl,
        }
    for key in ("rdpo_length_ratio", "unlikelihood_repetition_ratio"):
        if key in carried and key not in out and key in old:
            out[key] = old[key]
    return out


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
    parser.add_argument(
        "--kl-from",
        action="append",
        default=[],
        metavar="FILE",
        help="an earlier efficacy.json whose meta.details.kl_parts the kl group may use (repeatable; after --keep's)",
    )
    parser.add_argument(
        "--reuse-finished",
        action="store_true",
        help="take finished per-seed runs (and their report.json) already in --runs-root instead of retraining them "
        "(ppo/grpo always train: bench/ppo_efficacy.py runs in a temporary directory)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="ppo/grpo: seeds run at once, each pinned to its own core at one thread (at most the usable cores)",
    )
    a = parser.parse_args(argv)
    if not 1 <= a.jobs <= len(os.sched_getaffinity(0)):
        parser.error(f"--jobs must be between 1 and the {len(os.sched_getaffinity(0))} usable cores, got {a.jobs}")
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
    command = command_line(argv)
    previous_path = out.with_suffix(".json")
    previous = json.loads(previous_path.read_text()) if a.keep and previous_path.exists() else None
    earlier = [previous_kl_parts(previous)] if previous else []
    earlier += [previous_kl_parts(json.loads(Path(f).read_text())) for f in a.kl_from]  # read before hours of runs
    try:
        per_seed, reasons, details = measure(
            groups, seeds, Path(a.runs_root).resolve(), env, a.quick, (command, date), a.reuse_finished, a.jobs
        )
    finally:
        if tmp is not None:
            tmp.cleanup()
    if a.keep and previous_path.exists():  # again: another invocation may have written it while this one ran
        previous = json.loads(previous_path.read_text())
    combine_kl(groups, seeds, details, per_seed, reasons, earlier if (a.keep or a.kl_from) else [])
    data = aggregate(per_seed, reasons)
    carried = carry_over(data, previous) if previous else {}
    for key, value in ((previous or {}).get("meta", {}).get("details") or {}).items():
        details.setdefault(key, value)  # --keep: the details of groups not run now stay beside their figures
    verdicts = compound_verdicts(data, details, groups, carried, previous)
    data["meta"] = {
        "command": command,
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
        "verdicts": verdicts,
    }
    from alignkit.io import atomic_write_text

    atomic_write_text(out.with_suffix(".json"), json.dumps(data, indent=1, default=str) + "\n")
    atomic_write_text(out, with_hand_notes(out, render(data), marker="## What was tried"))
    print(f"wrote {out} and {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
