"""Time `make` as a new user runs it after `make setup`: a cold dataset cache, wall time, peak RSS, phase breakdown.

    .venv/bin/python bench/make_time.py                         # make recipe=dpo-smol -> bench/results/make_time.*
    .venv/bin/python bench/make_time.py --recipe sft-smol --args "max_steps=4"
    .venv/bin/python bench/make_time.py --quick                 # smoke run: sft-smol, tiny model, 1 step, no eval
    .venv/bin/python bench/make_time.py --pipeline              # make pipeline -> bench/results/pipeline.*

How: `make` runs in a scratch directory that links this checkout's Makefile, pyproject.toml and .venv (so the
setup stamp is current and nothing is reinstalled) and starts with no runs/, so every run the recipe, its dataset
cards and its eval suite need (rm-smol, the judge, the pair sets) is built inside the timed command. ALIGNKIT_CACHE
points at an empty directory, except that its models/ links to the real cache: the materialized embedded model is
a product of setup (a one-time GGUF conversion), not of `make` (``alignkit/cache.py`` keeps models/ and datasets/
apart, so this split is exact). The report says whether the model had to be materialized anyway.

Recorded: wall seconds of the whole `make`; peak RSS as the largest resident set of any process in the tree
(``ru_maxrss`` of the reaped children, what ``/usr/bin/time -v`` reports) and as the peak of the tree's summed RSS
(sampled from /proc every 0.5 s); the phases: each run's ``train_seconds`` (run.json), the eval's ``timing_s``
(report.json) and the time between the `alignkit:` lines `make` prints, plus what is left (imports, data builds).

Goal and verdict statistic, fixed here (issue 12): wall seconds of one cold `make` <= 600 on an idle 2-core CPU.
``--pipeline`` times `make pipeline` the same way (issue 14: <= 3600 s on 2 idle cores) and appends the pipeline's
own comparison table (runs/pipeline/report.md) to its report, bench/results/pipeline_<kind>.md.

One result per CPU kind (``benchlib.cpu_kind``: amx, avx512_bf16, no_bf16): ``make_time_<kind>.json`` and ``.md``,
``pipeline_time_<kind>.json`` and ``pipeline_<kind>.md``. Precision follows the hardware (bf16 where it is native,
fp32 elsewhere), so the same `make` takes very different times on different kinds, and a run on one kind must not
overwrite another kind's figure.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
from benchlib import (  # noqa: E402
    bench_model_path,
    command_line,
    cpu_info,
    cpu_kind,
    figure,
    result_record,
    results_dir,
    write_result,
)

GOAL_SECONDS = 600.0
PIPELINE_GOAL_SECONDS = 3600.0
QUICK_ARGS = "max_steps=1 max_train_samples=8 eval_suite=null logging_steps=1 save_strategy=no"


def tree_rss_bytes(root_pid: int) -> int:
    """Summed RSS of ``root_pid`` and all its descendants, from /proc (0 for processes that just exited)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ppid, pages = int(fields[1]), int(fields[21])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
        rss[int(entry)] = pages * os.sysconf("SC_PAGE_SIZE")
    total, todo = 0, [root_pid]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo += children.get(pid, [])
    return total


def result_name(family: str, kind: str) -> str:
    """The result's bench name: ``make_time_amx``, ``pipeline_time_no_bf16``, ... (one JSON per CPU kind)."""
    return f"{family}_{kind}"


def make_argv(recipe: str, args: str, pipeline: bool = False) -> list[str]:
    """`make recipe=R [ARGS=...]`, or `make pipeline [ARGS=...]`. -o: never remake the setup stamp here (its pip
    install would run in the scratch directory); main() checks beforehand that setup is current in the checkout."""
    cmd = ["make", "--no-print-directory", "-o", ".venv/.alignkit-setup"]
    cmd += ["pipeline"] if pipeline else [f"recipe={recipe}"]
    return cmd + ([f"ARGS={args}"] if args else [])


def run_make(workdir: Path, cmd: list[str], env: dict) -> dict:
    """Run ``cmd`` (:func:`make_argv`) in ``workdir``; wall time, both peak-RSS figures, timestamped output."""
    lines: list[tuple[float, str]] = []
    peak = [0]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.5):
            peak[0] = max(peak[0], tree_rss_bytes(proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    for line in proc.stdout:
        lines.append((time.perf_counter() - start, line.rstrip("\n")))
        print(line, end="", flush=True)
    code = proc.wait()
    wall = time.perf_counter() - start
    done.set()
    sampler.join()
    maxrss_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # Linux: KiB, the largest reaped child
    return {
        "cmd": cmd,
        "exit": code,
        "wall_s": wall,
        "maxrss_kib": maxrss_kib,
        "tree_peak_bytes": peak[0],
        "lines": lines,
    }


def phases(workdir: Path, lines: list[tuple[float, str]], wall: float) -> dict:
    """The phase breakdown: per-run train_seconds, the eval's timing_s, and the spans between `alignkit:` lines.

    A run trained in the side lane (alignkit/lanes.py: its log is runs/.side-lane/NAME.log) ran beside the others:
    it is marked ``side_lane`` and left out of the main lane's sum, so "everything else" stays wall - main lane."""
    runs, evals, root = {}, {}, workdir / "runs"
    side = {p.stem for p in (root / ".side-lane").glob("*.log")}
    # runs/NAME (make) or runs/pipeline/NAME (make pipeline, whose prerequisites such as the judge sit beside it)
    for run_json in sorted([*root.glob("*/run.json"), *root.glob("*/*/run.json")]):
        meta = json.loads(run_json.read_text())
        name = str(run_json.parent.relative_to(root))
        runs[name] = {"train_seconds": meta.get("train_seconds"), "status": meta.get("status")}
        if name in side:
            runs[name]["side_lane"] = True
    for report in sorted([*root.glob("*/report.json"), *root.glob("*/*/report.json")]):
        timing = json.loads(report.read_text()).get("timing_s")
        if timing is not None:  # runs/pipeline/report.json is the comparison table, not an eval
            evals[str(report.parent.relative_to(root))] = timing
    # Milestones: the `alignkit:` lines, without the hardware-choice lines printed at the start of every training.
    reasons = re.compile(r"^alignkit: (precision|gradient_checkpointing|dataloader_num_workers|omp_wait_policy):")
    starts = ("alignkit:", "alignkit pipeline:")
    marks = [(t, ln) for t, ln in lines if ln.startswith(starts) and not reasons.match(ln)]
    spans = []
    for (t0, line), (t1, _) in zip(marks, [*marks[1:], (wall, "end")][: len(marks)], strict=True):
        spans.append({"from_s": round(t0, 1), "seconds": round(t1 - t0, 1), "line": line[:160]})
    train = sum(r["train_seconds"] or 0 for r in runs.values() if not r.get("side_lane"))
    # timing_s carries its own "total" (eval/harness.py); summing its values would count every phase twice
    evaluated = sum(v.get("total", sum(v.values())) for v in evals.values() if isinstance(v, dict))
    return {
        "runs": runs,
        "eval_timing_s": evals,
        "spans": spans,
        "train_seconds_total": train,
        "eval_seconds_total": evaluated,
        "other_seconds": wall - train - evaluated,
    }


def report_goal_figures(run_dir: Path) -> dict | None:
    """The goal figures of the run's report (report.json ``goals.figures``: win rate, CI low, LC win rate, ratios),
    or None without a report."""
    path = run_dir / "report.json"
    if not path.exists():
        return None
    return (json.loads(path.read_text()).get("goals") or {}).get("figures")


def prepare(workdir: Path, real_cache: Path) -> dict:
    """The scratch checkout: links to Makefile, pyproject.toml and .venv; an empty cache whose models/ is shared."""
    for name in ("Makefile", "pyproject.toml", ".venv"):
        (workdir / name).symlink_to(ROOT / name)
    cache = workdir / "cache"
    cache.mkdir()
    models = real_cache / "models"
    had_model = any(models.glob("*/model.safetensors"))
    models.mkdir(parents=True, exist_ok=True)
    (cache / "models").symlink_to(models)
    return {"cache": str(cache), "shared_models": str(models), "model_materialized_before": had_model}


def render(record: dict) -> str:
    s = record["statistics"]
    ph = s["phases"]
    goal = PIPELINE_GOAL_SECONDS if s.get("pipeline") else GOAL_SECONDS
    lines = [
        f"# `{'make pipeline' if s.get('pipeline') else 'make'}` with a cold dataset cache, after setup",
        "",
        f"Command: `{record['command']}` (run {record['date']}; `{' '.join(s['make_command'])}` in a scratch "
        f"directory; load average before {s['load_before']}, after {s['load_after']}).",
        "",
        f"CPU: {record['cpu']['model']} ({', '.join(record['cpu']['flags_of_interest']) or 'no bf16 flags'}), "
        f"{record['cpu']['cores']} cores. Embedded model already materialized: {s['model_materialized_before']}.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| wall time (s) | {s['wall_seconds']:.1f} (goal <= {goal:.0f}) |",
        f"| peak RSS, largest process (GiB, ru_maxrss) | {s['peak_rss_gib']:.2f} |",
        f"| peak RSS, whole process tree summed (GiB, sampled) | {s['tree_peak_rss_gib']:.2f} |",
        f"| exit status | {s['exit']} |",
        "",
        "Phases: "
        + "; ".join(
            [
                f"train {name} {r['train_seconds']} s" + (" (side lane, beside it)" if r.get("side_lane") else "")
                for name, r in ph["runs"].items()
            ]
            + [f"eval {name} {t}" for name, t in ph["eval_timing_s"].items()]
            + [
                "everything else in the main lane (imports, data builds, judge accuracy, saving) "
                f"{ph['other_seconds']:.0f} s"
                if ph["other_seconds"] >= 0
                else "no remainder: runs trained side by side in lanes, so their seconds overlap (see the lines below)"
            ]
        )
        + ".",
        "",
        *(
            [
                "This make's own report (one seed, not an efficacy figure): "
                + ", ".join(f"{k} {v:.3f}" for k, v in s["report_goal_figures"].items() if isinstance(v, float))
                + ".",
                "",
            ]
            if s.get("report_goal_figures")
            else []
        ),
        "| from (s) | seconds | line `make` printed |",
        "|---|---|---|",
        *[f"| {sp['from_s']} | {sp['seconds']} | {sp['line'].replace('|', '/')} |" for sp in ph["spans"]],
        "",
    ]
    if s.get("pipeline_report"):
        lines += ["## The pipeline's report (runs/pipeline/report.md of this run)", ""]
        lines += [line for line in s["pipeline_report"].splitlines() if not line.startswith("![")]
        lines += [""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default="dpo-smol")
    parser.add_argument("--args", default="", help="recipe overrides, as make's ARGS")
    parser.add_argument("--quick", action="store_true", help="smoke run: sft-smol on a tiny model, no eval")
    parser.add_argument("--pipeline", action="store_true", help="time `make pipeline` (goal 3600 s) instead")
    parser.add_argument("--workdir", help="scratch directory to keep (default: a temporary one, removed)")
    parser.add_argument("--out", help="report path (default bench/results/make_time_<cpu kind>.md)")
    a = parser.parse_args(argv)
    if a.quick:
        a.recipe = "sft-smol"
        a.args = f"{QUICK_ARGS} model_name_or_path={bench_model_path(True)} {a.args}".strip()
    if a.quick and a.pipeline:
        parser.error("--quick times a 1-step sft-smol; it has no --pipeline form")
    kind = cpu_kind(cpu_info().get("flags_of_interest") or [])
    family, goal = ("pipeline_time", PIPELINE_GOAL_SECONDS) if a.pipeline else ("make_time", GOAL_SECONDS)
    bench = result_name(family, kind)
    out = Path(a.out) if a.out else results_dir(a.quick) / (f"pipeline_{kind}.md" if a.pipeline else f"{bench}.md")
    if not a.quick and subprocess.call(["make", "-q", "setup"], cwd=ROOT) != 0:
        print("make_time: run `make setup` first (the timed command is `make` after setup)", file=sys.stderr)
        return 2
    real_cache = Path(os.environ.get("ALIGNKIT_CACHE", Path.home() / ".cache" / "alignkit"))
    tmp = None if a.workdir else tempfile.TemporaryDirectory(prefix="alignkit-make-time-")
    workdir = Path(a.workdir or tmp.name)
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        setup = prepare(workdir, real_cache)
        env = {**os.environ, "ALIGNKIT_CACHE": setup["cache"]}
        date, load_before = time.strftime("%Y-%m-%d %H:%M"), " ".join(f"{x:.2f}" for x in os.getloadavg())
        ran = run_make(workdir, make_argv(a.recipe, a.args, a.pipeline), env)
        breakdown = phases(workdir, ran["lines"], ran["wall_s"])
        report_goals = None if a.pipeline else report_goal_figures(workdir / "runs" / a.recipe)
        report = workdir / "runs" / "pipeline" / "report.md"
        pipeline_report = report.read_text() if a.pipeline and report.exists() else None
    finally:
        if tmp is not None:
            tmp.cleanup()
    stats = {
        "pipeline": a.pipeline,
        "pipeline_report": pipeline_report,
        "recipe": None if a.pipeline else a.recipe,
        "args": a.args,
        "make_command": ran["cmd"],
        "exit": ran["exit"],
        "wall_seconds": ran["wall_s"],
        "peak_rss_gib": ran["maxrss_kib"] / 2**20,
        "tree_peak_rss_gib": ran["tree_peak_bytes"] / 2**30,
        "model_materialized_before": setup["model_materialized_before"],
        "load_before": load_before,
        "load_after": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "phases": breakdown,
        "report_goal_figures": report_goals,  # what this make's own report.md shows against issue 12's goals
        "output_tail": [line for _, line in ran["lines"][-20:]],
    }
    ok = ran["exit"] == 0
    what = "`make pipeline`" if a.pipeline else f"`make recipe={a.recipe}`"
    figures = [
        figure(
            f"{family}.{kind}.wall_seconds",
            f"{what} wall time, cold dataset cache, after setup ({kind} CPU)",
            f"<= {goal:g}",
            ran["wall_s"] if ok else None,
            ran["wall_s"] <= goal if ok else None,
            "wall seconds of one cold `make`",
            unit="s",
            note=None if ok else f"make failed (exit {ran['exit']})",
        ),
        figure(
            f"{family}.{kind}.peak_rss_gib",
            f"{what} peak RSS (largest process) ({kind} CPU)",
            "none: reported",
            stats["peak_rss_gib"] if ok else None,
            None,
            "ru_maxrss of the reaped process tree (the largest process)",
            unit="GiB",
            also=[
                {
                    "statistic": "peak of the tree's summed RSS, sampled",
                    "measured": stats["tree_peak_rss_gib"],
                    "met": None,
                }
            ],
        ),
    ]
    record = result_record(
        bench, command_line(argv), date, os.environ.get("OMP_NUM_THREADS", "default"), stats, figures
    )
    out.write_text(render(record), encoding="utf-8")
    print(f"wrote {out} and {write_result(record, out.parent)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
