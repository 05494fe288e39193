"""Write bench/results/ppo_peer.md and ppo_peer.json from the runners' outputs in bench/ppo_peer/out/ (run each
pair of runners first, at the same time, one thread each). A hand-written section starting with "## Reading" in the
existing report is kept.

    .venv/bin/python bench/ppo_peer/compare.py
    .venv/bin/python bench/ppo_peer/compare.py --ours alignkit-defaults --peer trl112-defaults --label "..." \
        --result /tmp/ppo_defaults.md --bench-name ppo_defaults   # one ad-hoc pair, the report of that pair only

The report has one section per arm (ARMS): the fp32 headline (alignkit's shared-base LoRA critic) and the like-for-
like arm of issue 13 (`run_alignkit.py --full-value-model`: a separate, fully trained value model, as TRL 1.12 has).
An arm is re-measured when both of its out/ JSONs exist and the two runs overlapped in time (they ran side by side);
otherwise its section of the existing report and its rows of the existing JSON are kept as they are, with the run
they come from named. Verdict statistics, fixed here: seconds per update while both ran (the median per update of
updates 2+ when the runs kept no marks), and peak RSS, each alignkit / TRL 1.12 against the arm's goals.

The headline arm also runs at the other seeds of common.SEEDS (`--seed N` on both runners, side by side; out/
alignkit-seed<N>.json and trl112-seed<N>.json): the section "Reward curves over seeds" compares the two reward curves
over the seeds (seed 0 is the headline pair itself), with one row without a goal: the last half's mean reward,
alignkit minus TRL 1.12, averaged over the seeds. A seed whose pair is not in out/ keeps its numbers from the
existing JSON. The like-for-like arm's other seeds (`run_alignkit.py --full-value-model --seed N`, out/
alignkit-fullvalue-seed<N>.json) get a section of their own against the headline's TRL 1.12 run of the same seed (the
TRL side is the same command in both arms), side by side or not: their reward curves are compared, their time and
memory are not.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from common import SEEDS, seeded  # noqa: E402

RESULT = HERE.parent / "results" / "ppo_peer.md"
sys.path.insert(0, str(HERE.parent))
TITLE = "# PPO peer comparison: alignkit PPOTrainer (TRL 1.16) vs trl==1.12.0 experimental PPOTrainer"
KEPT = "Kept from the run of"  # opens the note on an arm that this compare did not re-measure
SEEDS_HEADINGS = {
    "headline": "## Reward curves over seeds (fp32 headline arm)",
    "ll": "## Reward curves over seeds (like for like)",
}
SEEDS_HEADING = SEEDS_HEADINGS["headline"]
SEED_STATS = {"headline": "seeds", "ll": "ll_seeds"}  # the statistics key of each arm's seeds


@dataclass(frozen=True)
class Arm:
    ours: str  # bench/ppo_peer/out/<ours>.json (alignkit) and <peer>.json (TRL 1.12)
    peer: str
    label: str
    suffix: str  # figure keys: <bench>[<suffix>].seconds_per_update / .peak_rss
    # alignkit / TRL 1.12, fixed before the arm's run: the goals it was run against
    goals: dict
    heading: str | None  # the arm's "## " heading in the report; None = the first section, right under the title
    commands: str = ""


ARMS = {
    "headline": Arm(
        "alignkit",
        "trl112",
        "fp32 on both sides (the headline)",
        "",
        {"seconds_per_update": 0.8, "peak_rss": 0.8},
        None,
        "`OMP_NUM_THREADS=1 .venv/bin/python bench/ppo_peer/run_alignkit.py --updates 6` beside "
        "`OMP_NUM_THREADS=1 TRL_EXPERIMENTAL_SILENCE=1 bench/.venv-trl112/bin/python bench/ppo_peer/run_trl112.py "
        "--updates 6`",
    ),
    # Issue 13: goals 0.5 and 0.6, fixed in this file before the arm's first run (2026-12-03).
    "ll": Arm(
        "alignkit-fullvalue",
        "trl112",
        "like for like: fp32, a separate full value model on both sides",
        ".ll",
        {"seconds_per_update": 0.5, "peak_rss": 0.6},
        "## Like for like: a separate, fully trained value model on both sides (issue 13)",
        "`OMP_NUM_THREADS=1 TRL_EXPERIMENTAL_SILENCE=1 .venv/bin/python bench/ppo_peer/run_alignkit.py --updates 6 "
        "--full-value-model` beside `OMP_NUM_THREADS=1 TRL_EXPERIMENTAL_SILENCE=1 bench/.venv-trl112/bin/python "
        "bench/ppo_peer/run_trl112.py --updates 6`",
    ),
}

# Rows of the phase table: (label, alignkit probe phase, TRL 1.12 probe phase); None = that side has no such phase.
PHASES = [
    ("rollout: sampling (generate)", "train/rollout/generate", "train/generate"),
    ("rollout: policy/reference log-prob forwards", "train/rollout/logps_fwd", "train/ref_fwd"),
    ("rollout: value forward", "train/rollout/values_fwd", "train/values_fwd"),
    ("rollout: reward", "train/rollout/reward", "train/reward"),
    ("update: loss forwards (policy + value)", "train/loss_fwd", "train/train_fwd"),
    ("update: backward", "train/backward", "train/backward"),
    ("update: optimizer step", "train/optimizer_step", "train/optimizer_step"),
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ours", help="an ad-hoc pair instead of ARMS: alignkit's out/ JSON name")
    ap.add_argument("--peer", help="... and TRL 1.12's (default trl112)")
    ap.add_argument("--label", help="the ad-hoc pair's label")
    ap.add_argument("--result", default=str(RESULT))
    ap.add_argument("--bench-name", default="ppo_peer", help="name of the result JSON written beside --result")
    ap.add_argument("--out", default=str(HERE / "out"), help="where the runners wrote their JSONs")
    a = ap.parse_args(argv)
    adhoc = a.ours is not None or a.peer is not None or a.label is not None
    arms = ARMS
    if adhoc:  # one pair, re-measured whether or not the two ran side by side
        arms = {"headline": replace(ARMS["headline"], ours=a.ours or "alignkit", peer=a.peer or "trl112")}
        arms["headline"] = replace(arms["headline"], label=a.label or arms["headline"].label, commands="")
    result = Path(a.result)
    json_path = result.parent / f"{a.bench_name}.json"
    old_md = result.read_text() if result.exists() else ""
    generated_old, tail = old_md, ""
    if "\n## Reading" in old_md:
        at = old_md.index("\n## Reading")
        generated_old, tail = old_md[:at], old_md[at:]
    generated_old, old_seed_sections = _split_seed_sections(generated_old)
    old_sections = {} if adhoc else _sections(generated_old, arms)
    old_record = json.loads(json_path.read_text()) if json_path.exists() and not adhoc else None

    from benchlib import command_line, cpu_info, result_record, write_result

    sections, figures, stats_by_arm, dates, measured, arm_dates = [], [], {}, [], [], {}
    for name, arm in arms.items():
        pair = _pair(Path(a.out), arm, require_overlap=not adhoc)
        if pair is not None:
            ours, peer, date = pair
            sections.append(_section(arm, ours, peer, date))
            stats, figs = _figures(arm, ours, peer, a.bench_name)
            # each row carries its own pair's date: one compare can re-measure arms whose pairs ran hours apart
            figures += [{**f, "date": date} for f in figs]
            stats_by_arm[name] = stats
            dates.append(date)
            arm_dates[name] = date
            measured.append(name)
            continue
        kept = _kept_figures(old_record, arm, a.bench_name)
        arm_dates[name] = next((f.get("date") for f in kept if f.get("date")), None)
        figures += kept
        if old_record and isinstance(old_record.get("statistics", {}).get(name), dict):
            stats_by_arm[name] = old_record["statistics"][name]
        if name in old_sections:
            sections.append(_kept_note(old_sections[name], arm, kept))
        print(f"{name}: not re-measured (no side-by-side pair out/{arm.ours}.json + out/{arm.peer}.json); kept")
    for name in () if adhoc else SEEDS_HEADINGS:
        seeds = _over_seeds(Path(a.out), name, stats_by_arm.get(name), arm_dates.get(name), old_record, a.bench_name)
        if seeds is not None:
            stats_by_arm[SEED_STATS[name]], seed_figures, seed_lines, fresh = seeds
            figures += seed_figures
            sections.append("\n".join(seed_lines))
            if fresh:
                dates.append(max(fresh))
                measured.append(SEED_STATS[name])
        elif name in old_seed_sections:
            sections.append(old_seed_sections[name])
    if not measured:
        print("nothing to compare: run a pair of runners first (see ARMS)", file=sys.stderr)
        return 1
    text = "\n\n".join([TITLE, *(s.strip("\n") for s in sections)]) + "\n"
    result.write_text(text + tail)
    print(text)
    record = result_record(a.bench_name, command_line(), max(dates), 1, stats_by_arm, figures, cpu=cpu_info())
    print(f"wrote {write_result(record, result.parent)}")
    return 0


def _split_seed_sections(generated: str) -> tuple[str, dict[str, str]]:
    """The report without its seeds sections (they come last), and each arm's seeds section by arm name."""
    at = {name: generated.find(f"\n{h}") for name, h in SEEDS_HEADINGS.items() if f"\n{h}" in generated}
    if not at:
        return generated, {}
    order = sorted(at, key=at.get)
    sections = {
        name: generated[at[name] + 1 : at[order[i + 1]] if i + 1 < len(order) else len(generated)]
        for i, name in enumerate(order)
    }
    return generated[: at[order[0]]], sections


def _pair(out: Path, arm: Arm, require_overlap: bool) -> tuple[dict, dict, str] | None:
    """The arm's two runner outputs and the time the later one was written (UTC), or None when either is missing
    or (``require_overlap``) the two runs did not overlap in time: then they were not a side-by-side pair."""
    paths = [out / f"{n}.json" for n in (arm.ours, arm.peer)]
    if not all(p.exists() for p in paths):
        return None
    ours, peer = (json.loads(p.read_text()) for p in paths)
    if require_overlap and not _side_by_side(ours, peer):
        return None
    date = time.strftime("%Y-%m-%d %H:%M", time.gmtime(max(p.stat().st_mtime for p in paths)))
    return ours, peer, ours.get("date") or date


def _side_by_side(ours: dict, peer: dict) -> bool:
    """Both runs' training windows (CLOCK_MONOTONIC marks) overlap for at least half of the shorter one."""
    if "update_marks" not in ours or "update_marks" not in peer:
        return False
    (a0, a1), (b0, b1) = ((d["update_marks"][0], d["update_marks"][-1]) for d in (ours, peer))
    return min(a1, b1) - max(a0, b0) >= 0.5 * min(a1 - a0, b1 - b0)


def _sections(generated: str, arms: dict[str, Arm]) -> dict[str, str]:
    """The existing report's section of each arm: the headline's is everything under the title up to the first other
    arm's heading."""
    body = generated.split("\n", 1)[1] if generated.startswith(TITLE) else generated
    cuts = sorted((body.find(arm.heading), n) for n, arm in arms.items() if arm.heading and arm.heading in body)
    out = {}
    first = cuts[0][0] if cuts else len(body)
    if body[:first].strip():
        out["headline"] = body[:first]
    for i, (at, name) in enumerate(cuts):
        out[name] = body[at : cuts[i + 1][0] if i + 1 < len(cuts) else len(body)]
    return out


def _kept_figures(old: dict | None, arm: Arm, bench: str) -> list[dict]:
    """The arm's rows of the existing result JSON, each carrying the command, date and CPU of the run that measured
    it (the record's own are about to become this compare's); no rows yet: its goals, marked not measured."""
    keys = [f"{bench}{arm.suffix}.{k}" for k in ("seconds_per_update", "peak_rss")]
    rows = [f for f in (old or {}).get("figures", []) if f["figure"] in keys]
    if rows:
        return [{"command": old["command"], "date": old["date"], "cpu": old["cpu"], **f} for f in rows]
    note = f"not measured yet: {arm.commands} (one thread each, at the same time), then compare.py"
    return [
        {**_row(bench, arm, key, what, None, stat), "note": note}
        for key, what, stat in (
            ("seconds_per_update", "PPO seconds per update", "seconds per update while both ran"),
            ("peak_rss", "PPO peak RSS", "ru_maxrss of each runner process"),
        )
    ]


def _row(bench: str, arm: Arm, key: str, what: str, value: float | None, stat: str, **kw) -> dict:
    from benchlib import figure

    goal = arm.goals[key]
    return figure(
        f"{bench}{arm.suffix}.{key}",
        f"{what}, alignkit / TRL 1.12 ({arm.label})",
        f"<= {goal}",
        value,
        None if value is None else value <= goal,
        f"{stat}, alignkit / TRL 1.12",
        unit="x",
        **kw,
    )


def _kept_note(section: str, arm: Arm, kept: list[dict]) -> str:
    if KEPT in section:
        return section
    date = kept[0]["date"] if kept else "an earlier day"
    files = f"`bench/ppo_peer/out/{arm.ours}.json` and `bench/ppo_peer/out/{arm.peer}.json`"
    note = (
        f"{KEPT} {date}: not re-measured by the latest compare.py (its outputs {files} were not there as a side-by-"
        "side pair), so these tables, and this arm's rows in `ppo_peer.json` and RESULTS.md, are that run's."
    )
    if arm.heading is None:
        return note + "\n\n" + section.lstrip("\n")
    head, _, rest = section.lstrip("\n").partition("\n")
    return f"{head}\n\n{note}\n{rest}"


def _figures(arm: Arm, ours: dict, peer: dict, bench: str) -> tuple[dict, list[dict]]:
    """The arm's statistics and its two RESULTS.md rows."""
    med = [statistics.median(d["update_seconds"][1:] or d["update_seconds"]) for d in (ours, peer)]
    overlap = _overlap_ratio(ours, peer)
    cpu = [d["probe"].get("cpu_seconds", {}).get("train", float("nan")) for d in (ours, peer)]
    stats = {
        "train_seconds_ratio": ours["train_seconds"] / peer["train_seconds"],
        "train_cpu_seconds_ratio": cpu[0] / cpu[1],
        "median_update_seconds_ratio": med[0] / med[1],
        "overlap_update_seconds_ratio": overlap[0] / overlap[1] if overlap else None,
        "peak_rss_ratio": ours["peak_rss_mib"] / peer["peak_rss_mib"],
        "peak_rss_mib": [ours["peak_rss_mib"], peer["peak_rss_mib"]],
        "rss_floor_mib": [rss_floor_mib(d) for d in (ours, peer)],
        "seconds_per_update": {"median_2plus": med, "while_both_ran": list(overlap) if overlap else None},
        "train_cpu_seconds": cpu,
        "reward_curve": [ours["reward_curve"], peer["reward_curve"]],
        "kl_curve": [ours.get("kl_curve", []), peer.get("kl_curve", [])],
        **_alignkit_kl_split(ours),
        **_completion_curves(ours, peer),
        "critic": ours.get("critic"),
        "settings": ours["settings"],
        "outputs": [f"bench/ppo_peer/out/{arm.ours}.json", f"bench/ppo_peer/out/{arm.peer}.json"],
        "label": arm.label,
        "goals": arm.goals,
    }
    speed = stats["overlap_update_seconds_ratio"] or stats["median_update_seconds_ratio"]
    speed_stat = "seconds per update while both ran" if overlap else "median seconds per update, updates 2+"
    goal = arm.goals["seconds_per_update"]
    also = [
        {
            "statistic": "median seconds per update, updates 2+",
            "measured": stats["median_update_seconds_ratio"],
            "met": stats["median_update_seconds_ratio"] <= goal,
        },
        {
            "statistic": "training CPU time, main thread",
            "measured": stats["train_cpu_seconds_ratio"],
            "met": stats["train_cpu_seconds_ratio"] <= goal,
        },
        {
            "statistic": "training wall time, all updates",
            "measured": stats["train_seconds_ratio"],
            "met": stats["train_seconds_ratio"] <= goal,
        },
    ]
    figures = [
        _row(bench, arm, "seconds_per_update", "PPO seconds per update", speed, speed_stat, also=also),
        _row(
            bench,
            arm,
            "peak_rss",
            "PPO peak RSS",
            stats["peak_rss_ratio"],
            "ru_maxrss of each runner process",
            also=_floor_stats(stats["rss_floor_mib"], stats["peak_rss_mib"]),
        ),
    ]
    return stats, figures


def rss_floor_mib(run: dict) -> float | None:
    """RSS that training holds whatever its activations: the RSS after imports plus parameters, gradients and
    optimizer state (``memory_floor_mib``, common.py); None for a run that did not record them."""
    floor = run.get("memory_floor_mib")
    if floor is None:
        return None
    imports = {m[0]: m[2] for m in run["probe"]["marks"]}["imports done"]
    return imports + floor["parameters"] + floor["gradients"] + floor["optimizer_state"]


def _floor_stats(floors: list[float | None], peaks: list[float]) -> list[dict]:
    """The peak-RSS figure's floor statistics (no verdict): alignkit's floor / TRL 1.12's peak is the ratio a run
    with no activation memory at all would reach; the peaks above the floors compare what each side adds to it."""
    if None in floors:
        return []
    above = [peak - floor for peak, floor in zip(peaks, floors, strict=True)]
    return [
        {
            "statistic": "alignkit's floor (RSS after imports + parameters + gradients + optimizer state) / TRL "
            "1.12's peak: the ratio with no activation memory at all",
            "measured": floors[0] / peaks[1],
            "met": None,
        },
        {"statistic": "peak RSS above the floor, alignkit / TRL 1.12", "measured": above[0] / above[1], "met": None},
    ]


def _section(arm: Arm, ours: dict, peer: dict, date: str) -> str:
    lines = [*([arm.heading, ""] if arm.heading else []), *_summary(arm, ours, peer, date)]
    lines += ["", *_phases(ours, peer), "", *_memory(ours, peer), "", *_curves(ours, peer)]
    return "\n".join(lines)


def _summary(arm: Arm, ours: dict, peer: dict, date: str) -> list[str]:
    def row(name: str, x: float, y: float, fmt: str = "{:.1f}", goal: float | None = None) -> str:
        ratio = x / y
        verdict = "" if goal is None else (" met" if ratio <= goal else " missed")
        return f"| {name} | {fmt.format(x)} | {fmt.format(y)} | **{ratio:.2f}**{verdict} |"

    # The first update includes one-off warm-up (first-touch of the weights, allocator growth).
    med = [statistics.median(d["update_seconds"][1:] or d["update_seconds"]) for d in (ours, peer)]
    cpu = [d["probe"].get("cpu_seconds", {}).get("train", float("nan")) for d in (ours, peer)]
    loads = [m[3] for d in (ours, peer) for m in d["probe"]["marks"] if len(m) > 3]
    steps = [d["probe"]["calls"].get("train/optimizer_step", 0) for d in (ours, peer)]
    overlap = _overlap_ratio(ours, peer)
    speed_goal, rss_goal = arm.goals["seconds_per_update"], arm.goals["peak_rss"]
    critic = ours.get("critic")
    lines = [
        f"Arm: {arm.label}. Outputs: `bench/ppo_peer/out/{arm.ours}.json`, `bench/ppo_peer/out/{arm.peer}.json` "
        f"(written {date} UTC).",
        *([f"Runs: {arm.commands}, started together."] if arm.commands else []),
        f"Settings (both): `{json.dumps(ours['settings'])}`; embedded SmolLM2-135M-Instruct, CPU, one thread each.",
    ]
    if critic:
        lines.append(
            f"alignkit's critic: {critic['kind']} ({critic['trainable_params'] / 1e6:.1f} M parameters in the "
            f"optimizer, {', '.join(critic['dtypes'])}); TRL 1.12's: its separate AutoModelForSequenceClassification "
            "value model, fully trained. Policy: LoRA on both sides."
        )
    return [
        *lines,
        f"Work (both): {len(ours['update_seconds'])} vs {len(peer['update_seconds'])} rollouts of "
        f"{ours['settings']['rollout']} sequences; {steps[0]} vs {steps[1]} optimizer steps. "
        f"1-min load average at the runners' marks: {min(loads, default=float('nan')):.2f}-"
        f"{max(loads, default=float('nan')):.2f}.",
        f"Goals (alignkit / TRL 1.12, fixed before the run): seconds per update <= {speed_goal}, "
        f"peak RSS <= {rss_goal}.",
        "",
        "| | alignkit | TRL 1.12 | ratio |",
        "|---|---|---|---|",
        row("training wall time, all updates (s)", ours["train_seconds"], peer["train_seconds"]),
        row("training CPU time, main thread (s)", *cpu),
        row(
            "median seconds per update (rollout + epochs), updates 2+",
            *med,
            goal=None if overlap else speed_goal,
        ),
        *([row("wall seconds per update while both ran (verdict)", *overlap, goal=speed_goal)] if overlap else []),
        row(
            "peak RSS, whole process (MiB, ru_maxrss; verdict)",
            ours["peak_rss_mib"],
            peer["peak_rss_mib"],
            "{:.0f}",
            goal=rss_goal,
        ),
    ]


def _overlap_ratio(ours: dict, peer: dict) -> tuple[float, float] | None:
    """Seconds per update of each side over the window in which both were training. The side that finishes first
    leaves the other a freer CPU for its last updates, which the totals would credit to it."""
    if "update_marks" not in ours or "update_marks" not in peer:
        return None
    start = max(ours["update_marks"][0], peer["update_marks"][0])
    end = min(ours["update_marks"][-1], peer["update_marks"][-1])

    def progress(marks: list[float], t: float) -> float:  # updates done by time t, interpolated within an update
        done = sum(m <= t for m in marks[1:])
        if done == len(marks) - 1:
            return float(done)
        lo, hi = marks[done], marks[done + 1]
        return done + max(0.0, min(1.0, (t - lo) / (hi - lo)))

    rates = [
        (end - start) / (progress(m, end) - progress(m, start)) for m in (ours["update_marks"], peer["update_marks"])
    ]
    return rates[0], rates[1]


def _phases(ours: dict, peer: dict) -> list[str]:
    lines = [
        "Where the time goes (probe phase timers, summed over the run; CPU seconds of the main thread, wall in "
        "brackets):",
        "",
        "| phase | alignkit | TRL 1.12 |",
        "|---|---|---|",
    ]
    for label, mine, theirs in PHASES:
        lines.append(f"| {label} | {_phase(ours, mine)} | {_phase(peer, theirs)} |")
    return lines


def _phase(d: dict, name: str | None) -> str:
    p = d["probe"]
    if name not in p["seconds"]:
        return "-"
    cpu = p.get("cpu_seconds", {}).get(name)
    calls = p["calls"][name]
    return f"{cpu:.1f} ({p['seconds'][name]:.1f}) ×{calls}" if cpu is not None else f"({p['seconds'][name]:.1f})"


def _memory(ours: dict, peer: dict) -> list[str]:
    floors = [rss_floor_mib(d) for d in (ours, peer)]
    with_floor = None not in floors
    lines = ["RSS (MiB): after imports, after building the trainer, the highest sample and the phase it fell in"]
    if with_floor:
        lines[0] += (
            "; the floor, what training holds whatever its activations (RSS after imports + parameters + gradients "
            "+ optimizer state, counted from the tensors), and the peak (ru_maxrss) above it"
        )
    lines[0] += ":"
    lines += [
        "",
        "| | imports | trainer built | peak sample (phase) |"
        + (" floor | peak above the floor |" if with_floor else ""),
    ]
    lines += ["|---|---|---|---|" + ("---|---|" if with_floor else "")]
    for name, d, floor in (("alignkit", ours, floors[0]), ("TRL 1.12", peer, floors[1])):
        marks = {m[0]: m[2] for m in d["probe"]["marks"]}
        top = d["probe"]["top"]
        built = marks.get("trainer built", float("nan"))
        row = f"| {name} | {marks['imports done']:.0f} | {built:.0f} | {top['rss_mib']:.0f} ({top['phase']}) |"
        if with_floor:
            row += f" {floor:.0f} | {d['peak_rss_mib'] - floor:.0f} |"
        lines.append(row)
    return lines


def _curves(ours: dict, peer: dict) -> list[str]:
    n = max(len(ours["reward_curve"]), len(peer["reward_curve"]))
    curve = [f"| {i + 1} | {_at(ours['reward_curve'], i)} | {_at(peer['reward_curve'], i)} |" for i in range(n)]
    kl = [f"| {i + 1} | {_at(ours.get('kl_curve', []), i)} | {_at(peer.get('kl_curve', []), i)} |" for i in range(n)]
    return [
        "Reward (math_answer mean per rollout) and KL (mean sequence KL to the reference, per rollout; fixed β):",
        "",
        "| rollout | alignkit reward | TRL 1.12 reward |",
        "|---|---|---|",
        *curve,
        "",
        "| rollout | alignkit KL | TRL 1.12 KL |",
        "|---|---|---|",
        *kl,
    ]


def last_half_mean(curve: list[float]) -> float:
    """Mean reward over the last half of the rollouts, rollouts ⌊n/2⌋+1..n (4-6 of 6)."""
    tail = curve[len(curve) // 2 :]
    return sum(tail) / len(tail)


def _seed_entry(stats: dict, date: str | None) -> dict:
    """What the seeds section keeps of one pair's statistics (:func:`_figures`)."""
    return {
        "reward_curve": stats["reward_curve"],
        "kl_curve": stats["kl_curve"],
        **{key: stats[key] for key in (*KL_SPLIT, *COMPLETION_CURVES) if key in stats},
        "seconds_per_update_ratio": stats["overlap_update_seconds_ratio"] or stats["median_update_seconds_ratio"],
        "peak_rss_ratio": stats["peak_rss_ratio"],
        "outputs": stats["outputs"],
        "date": date,
    }


def _over_seeds(
    out: Path, name: str, arm_stats: dict | None, arm_date: str | None, old_record: dict | None, bench: str
):
    """An arm's curves over common.SEEDS: (statistics, figure rows, report lines, dates of the pairs measured now),
    or None with fewer than two seeds. Seed 0 is the arm's own pair (as measured or kept); another seed comes from
    its pair in out/, else from the existing JSON. The headline's seed pairs must have run side by side. The
    like-for-like arm's need not: TRL 1.12 always trains a full value model, so its side of a seed is the headline's
    run of that seed (``trl112-seed<N>``); reward curves do not depend on what ran beside them. Time and memory
    ratios are taken only from pairs that ran side by side (otherwise None)."""
    arm = ARMS[name]
    side_by_side = name == "headline"
    old = (((old_record or {}).get("statistics") or {}).get(SEED_STATS[name]) or {}).get("per_seed", {})
    per_seed: dict[str, dict] = {}
    fresh: list[str] = []
    if arm_stats:
        per_seed[str(SEEDS[0])] = _seed_entry(arm_stats, arm_date)
    for seed in SEEDS[1:]:
        seed_arm = replace(arm, ours=seeded(arm.ours, seed), peer=seeded("trl112", seed))
        pair = _pair(out, seed_arm, require_overlap=side_by_side)
        if pair is None:
            if str(seed) in old:
                per_seed[str(seed)] = old[str(seed)]
            continue
        ours, peer, date = pair
        if side_by_side or _side_by_side(ours, peer):
            per_seed[str(seed)] = _seed_entry(_figures(seed_arm, ours, peer, bench)[0], date)
        else:  # curves only: no time or memory ratio between runs that did not share the machine's load
            per_seed[str(seed)] = {
                "reward_curve": [ours["reward_curve"], peer["reward_curve"]],
                "kl_curve": [ours.get("kl_curve", []), peer.get("kl_curve", [])],
                **_alignkit_kl_split(ours),
                **_completion_curves(ours, peer),
                "seconds_per_update_ratio": None,
                "peak_rss_ratio": None,
                "outputs": [f"bench/ppo_peer/out/{seed_arm.ours}.json", f"bench/ppo_peer/out/{seed_arm.peer}.json"],
                "date": date,
            }
        fresh.append(date)
    if len(per_seed) < 2:
        return None
    seeds = sorted(per_seed, key=int)
    halves = {s: [last_half_mean(c) for c in per_seed[s]["reward_curve"]] for s in seeds}
    diffs = [halves[s][0] - halves[s][1] for s in seeds]
    side_means = [statistics.mean(halves[s][i] for s in seeds) for i in (0, 1)]
    stats = {
        "per_seed": per_seed,
        "seeds": [int(s) for s in seeds],
        "last_half_mean_reward": {s: halves[s] for s in seeds},
        "last_half_diff_mean": statistics.mean(diffs),
        "last_half_diff_sd": statistics.stdev(diffs),
        "last_half_mean_reward_over_seeds": side_means,
        "per_rollout": _per_rollout(per_seed, seeds),
        **_kl_last_half(per_seed, seeds),
        "seconds_per_update_ratio_mean": _mean_of_known(per_seed[s]["seconds_per_update_ratio"] for s in seeds),
        "peak_rss_ratio_mean": _mean_of_known(per_seed[s]["peak_rss_ratio"] for s in seeds),
    }
    from benchlib import figure

    n = len(seeds)
    also = [
        {"statistic": "alignkit's last-half mean reward, mean over seeds", "measured": side_means[0], "met": None},
        {"statistic": "TRL 1.12's last-half mean reward, mean over seeds", "measured": side_means[1], "met": None},
    ]
    paired = all(per_seed[s]["seconds_per_update_ratio"] is not None for s in seeds)
    for key, what in (("seconds_per_update_ratio_mean", "seconds per update"), ("peak_rss_ratio_mean", "peak RSS")):
        if stats[key] is not None:
            over = "seeds" if paired else "the seeds that ran side by side"
            also.append({"statistic": f"{what} alignkit / TRL 1.12, mean over {over}", "measured": stats[key],
                         "met": None})  # fmt: skip
    row = figure(
        f"{bench}{arm.suffix}.seeds.reward_last_half_diff",
        f"PPO reward (math_answer), last half of the rollouts, alignkit minus TRL 1.12, over {n} seeds ({arm.label})",
        "none: the reward curves compared over 3 seeds (issue 13)",
        stats["last_half_diff_mean"],
        None,
        f"mean over seeds of (alignkit's - TRL 1.12's mean reward over the last half's rollouts); sd over seeds "
        f"{stats['last_half_diff_sd']:.3f}",
        also=also,
    )
    latest = max((per_seed[s].get("date") or "" for s in seeds), default="")
    if latest:  # the row's date: its latest pair's
        row["date"] = latest
    return stats, [row], _seed_lines(name, per_seed, seeds, stats), fresh


def _per_rollout(per_seed: dict, seeds: list[str]) -> dict[str, list[dict]]:
    """Reward and KL per rollout, and completion lengths and EOS rates where every seed's pair recorded them:
    ``[mean, sd]`` over the seeds for each side (None where a seed lacks the rollout); alignkit's KL split by token
    (``kl_peer_tokens``, ``kl_eos``) where every seed's run recorded it."""
    n = min(len(per_seed[s]["reward_curve"][i]) for s in seeds for i in (0, 1))
    out: dict[str, list[dict]] = {}
    recorded = [c for c in COMPLETION_CURVES if all(c in per_seed[s] for s in seeds)]  # newer runners only
    for curve in ("reward_curve", "kl_curve", *recorded):
        rows = []
        for r in range(n):
            row = {}
            for i, side in enumerate(("alignkit", "trl112")):
                values = [per_seed[s][curve][i][r] for s in seeds if len(per_seed[s][curve][i]) > r]
                row[side] = [statistics.mean(values), statistics.stdev(values)] if len(values) == len(seeds) else None
            rows.append(row)
        out[curve.removesuffix("_curve")] = rows
    for key in KL_SPLIT:  # alignkit's side only; None unless every seed's run recorded it
        curves = [per_seed[s].get(key) for s in seeds]
        if all(c is not None and len(c) >= n for c in curves):
            out[key.removesuffix("_curve")] = [
                [statistics.mean(c[r] for c in curves), statistics.stdev(c[r] for c in curves)] for r in range(n)
            ]
    return out


def _kl_last_half(per_seed: dict, seeds: list[str]) -> dict:
    """Per seed, the mean KL over the last half's rollouts: alignkit's on TRL 1.12's tokens (``kl_peer_tokens_curve``)
    and TRL 1.12's; their paired difference, mean and sd over the seeds. Empty unless every seed recorded the split."""
    if not all("kl_peer_tokens_curve" in per_seed[s] for s in seeds):
        return {}
    halves = {s: [last_half_mean(per_seed[s]["kl_peer_tokens_curve"]), last_half_mean(per_seed[s]["kl_curve"][1])]
              for s in seeds}  # fmt: skip
    diffs = [a - b for a, b in halves.values()]
    return {
        "kl_last_half_same_tokens": halves,
        "kl_last_half_diff_mean": statistics.mean(diffs),
        "kl_last_half_diff_sd": statistics.stdev(diffs),
    }


# alignkit's k1 KL split by token (bench/ppo_peer/run_alignkit.py, _record_kl_on_peer_tokens): on the tokens TRL 1.12
# counts (before the first pad id; SmolLM2's pad is its EOS) and at the EOS token, which TRL 1.12 leaves out.
KL_SPLIT = ("kl_peer_tokens_curve", "kl_eos_curve")


def _alignkit_kl_split(ours: dict) -> dict:
    return {key: ours[key] for key in KL_SPLIT if key in ours}


# Both runners' completion lengths per rollout (common.completion_curves): tokens before EOS, and the share that
# ended with EOS rather than at response_length.
COMPLETION_CURVES = ("length_curve", "eos_rate_curve")


def _completion_curves(ours: dict, peer: dict) -> dict:
    return {key: [ours[key], peer[key]] for key in COMPLETION_CURVES if key in ours and key in peer}


def _mean_of_known(values) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.mean(known) if known else None


def _mean_sd(mean_sd: list[float] | None) -> str:
    return "-" if mean_sd is None else f"{mean_sd[0]:.3f} ± {mean_sd[1]:.3f}"


SEEDS_INTRO = {
    "headline": "each a side-by-side pair of the headline runners with `--seed N` (its prompts and training seed; "
    "seed 0 is the headline pair above)",
    "ll": "alignkit's like-for-like runner (`--full-value-model --seed N`) against TRL 1.12's run of the same seed. "
    "TRL 1.12 always trains a full value model, so both arms share its run of a seed (`trl112-seed<N>`, written by "
    "whichever arm's pair ran last); seed 0 is the like-for-like pair above. A seed that did not run beside its TRL "
    "1.12 run shows no time or memory ratio (-)",
}


def _seed_lines(name: str, per_seed: dict, seeds: list[str], stats: dict) -> list[str]:
    lines = [
        SEEDS_HEADINGS[name],
        "",
        f"Seeds {', '.join(seeds)}: {SEEDS_INTRO[name]}. Per seed, the pair's outputs and date: "
        + "; ".join(
            f"{s}: {', '.join(f'`{o}`' for o in per_seed[s]['outputs'])}"
            + (f" ({per_seed[s]['date']})" if per_seed[s].get("date") else "")
            for s in seeds
        )
        + ".",
        "",
        "Reward (math_answer mean per rollout of 16) and KL, mean ± sd over the seeds:",
        "",
    ]
    rollouts = stats["per_rollout"]
    split = "kl_peer_tokens" in rollouts and "kl_eos" in rollouts
    header = "| rollout | alignkit reward | TRL 1.12 reward | alignkit KL | TRL 1.12 KL |"
    lines += [
        header + (" alignkit KL on TRL 1.12's tokens | alignkit KL at EOS |" if split else ""),
        "|---|---|---|---|---|" + ("---|---|" if split else ""),
    ]
    for i, (reward, kl) in enumerate(zip(rollouts["reward"], rollouts["kl"], strict=True)):
        cells = [_mean_sd(row[side]) for row in (reward, kl) for side in ("alignkit", "trl112")]
        if split:
            cells += [_mean_sd(rollouts[key][i]) for key in ("kl_peer_tokens", "kl_eos")]
        lines.append(f"| {i + 1} | " + " | ".join(cells) + " |")
    if split:
        lines += [
            "",
            "TRL 1.12 counts a completion's tokens before its first pad id, and SmolLM2's pad is its EOS: the EOS "
            "token is outside TRL 1.12's loss and its KL. alignkit's KL on TRL 1.12's tokens leaves it out too "
            "(`kl_peer_tokens_curve` in alignkit's output); its KL at EOS is the rest.",
        ]
    if "kl_last_half_same_tokens" in stats:
        per = stats["kl_last_half_same_tokens"]
        lines += [
            "",
            "KL over the last half's rollouts, on the same tokens (alignkit's on TRL 1.12's tokens, TRL 1.12's), per "
            "seed: "
            + "; ".join(f"{s}: {per[s][0]:.3f} vs {per[s][1]:.3f}" for s in seeds)
            + f". Difference, mean ± sd over the seeds: {stats['kl_last_half_diff_mean']:+.3f} ± "
            f"{stats['kl_last_half_diff_sd']:.3f}.",
        ]
    if "length" in rollouts and "eos_rate" in rollouts:
        lines += [
            "",
            "Completions, mean ± sd over the seeds: tokens before EOS (EOS not counted, on both sides), and the share "
            "that ended with EOS rather than at the length limit:",
            "",
            "| rollout | alignkit tokens | TRL 1.12 tokens | alignkit ended with EOS | TRL 1.12 ended with EOS |",
            "|---|---|---|---|---|",
        ]
        for i, (length, eos) in enumerate(zip(rollouts["length"], rollouts["eos_rate"], strict=True)):
            cells = [_mean_sd(row[side]) for row in (length, eos) for side in ("alignkit", "trl112")]
            lines.append(f"| {i + 1} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Per seed: mean reward over the last half's rollouts, and the pair's ratios (alignkit / TRL 1.12):",
        "",
        "| seed | alignkit | TRL 1.12 | difference | seconds per update | peak RSS |",
        "|---|---|---|---|---|---|",
    ]
    for s in seeds:
        a, b = stats["last_half_mean_reward"][s]
        lines.append(
            f"| {s} | {a:.3f} | {b:.3f} | {a - b:+.3f} | {_ratio(per_seed[s]['seconds_per_update_ratio'])} | "
            f"{_ratio(per_seed[s]['peak_rss_ratio'])} |"
        )
    a, b = stats["last_half_mean_reward_over_seeds"]
    lines.append(
        f"| mean | {a:.3f} | {b:.3f} | {stats['last_half_diff_mean']:+.3f} ± {stats['last_half_diff_sd']:.3f} | "
        f"{_ratio(stats['seconds_per_update_ratio_mean'])} | {_ratio(stats['peak_rss_ratio_mean'])} |"
    )
    return lines


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _at(values: list[float], i: int) -> str:
    return f"{values[i]:.3f}" if i < len(values) else "-"


if __name__ == "__main__":
    sys.exit(main())
