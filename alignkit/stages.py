"""``alignkit pipeline`` (``make pipeline``): SFT, then the reward model, then each preference or RL method started
from the SFT run, then one comparison report. Two ``alignkit eval --compare`` runs (every stage against
the base model in ``vs-base/``, every method against SFT in ``vs-sft/``) feed one table with a plot, ``report.md``
(:mod:`alignkit.pipeline_report`), which also lists each stage's state and training time.

Every stage is a run under ``runs/pipeline/`` (``--runs-root``). A finished run is reused, an interrupted one
(``NAME.partial``) resumes from its last checkpoint, a missing one trains; so a rerun after a failure redoes only what
is missing. The methods start from ``run:sft-smol`` (``model_name_or_path`` override; ppo-smol-chat already does),
which :mod:`alignkit.run_start` merges once and uses as each method's reference.

Lanes (``--lanes``, default 2 on a process with 2+ threads): the stages train in child processes at one thread each,
two at a time, each as soon as the stages it needs (``Stage.after``) have finished, with the suite's held-out judge
trained early beside them; a free lane then warms the final eval's caches (every model's replies, scores and
perplexities, :mod:`alignkit.eval.baseline_warmup`). The two comparisons then run here at full threads and read
the caches the warm-ups filled. Why: one process at 2 threads runs ~1.45x faster than at 1 (:mod:`alignkit.lanes`),
so two stages side by side finish sooner than one after the other. Each job's output is in
``runs/pipeline/.lanes/<job>.log``; a failed stage stops the other lane (its run stays ``.partial`` and resumes on the
rerun). ``--lanes 1`` trains the stages one after another in this process.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path

from alignkit.runs import run_is_finished
from alignkit.stage_lanes import Job, run_lanes

FROM_SFT = "model_name_or_path=run:sft-smol"
JUDGED_PROMPTS = 64  # chat prompts the final comparisons judge on (the smol suite's; issue 12 asks >= 64)


@dataclass(frozen=True)
class Stage:
    recipe: str
    overrides: list[str] = field(default_factory=list)
    after: tuple[str, ...] = ()  # stages that must finish first (tests/test_stages.py checks them against the recipes)


STAGES = (
    Stage("sft-smol"),
    Stage("rm-smol"),
    Stage("dpo-smol", [FROM_SFT], after=("sft-smol", "rm-smol")),  # its on-policy card samples SFT, scores with RM
    # kto's card is made from dpo's on-policy card and simpo trains on that card: after dpo, so it is built once
    Stage("kto-smol", [FROM_SFT], after=("sft-smol", "rm-smol", "dpo-smol")),
    Stage("simpo-smol", [FROM_SFT], after=("sft-smol", "rm-smol", "dpo-smol")),
    Stage("ppo-smol-chat", after=("sft-smol", "rm-smol")),  # starts from run:sft-smol in its recipe
    # its recipe caps its own eval at 32 prompts; the comparisons cut the suite to the smallest cap of the compared
    # runs, so without this the whole report would judge on 32 chat prompts instead of the suite's 64
    Stage("grpo-smol-adaptive-kl", [FROM_SFT, f"max_eval_samples={JUDGED_PROMPTS}"], after=("sft-smol",)),
)
# In lanes, a free lane takes the first ready job in this order: the long chains first (ppo-smol-chat is the longest
# stage, dpo-smol gates kto and simpo), then the cache warm-ups of the final eval.
LANE_ORDER = ("sft-smol", "rm-smol", "ppo-smol-chat", "dpo-smol", "grpo-smol-adaptive-kl", "kto-smol", "simpo-smol")
BASELINE = "smollm2-135m-instruct"
LANE_LOGS = ".lanes"


def stage_state(runs_root: Path, stage: Stage) -> str:
    """``reuse`` (finished), ``resume`` (an interrupted ``.partial``) or ``train``."""
    final = runs_root / stage.recipe
    if run_is_finished(final):
        return "reuse"
    return "resume" if final.with_name(final.name + ".partial").exists() else "train"


def train_command(runs_root: Path, stage: Stage, state: str) -> list[str]:
    """The ``alignkit`` argv that trains (or resumes) ``stage`` into ``runs_root`` (its eval comes at the end)."""
    argv = ["train", stage.recipe, *stage.overrides, f"output_dir={runs_root / stage.recipe}", "--no-eval"]
    return argv + (["--resume"] if state == "resume" else [])


def eval_commands(runs_root: Path, suite: str) -> list[list[str]]:
    """Two comparisons with one suite (the generations are shared through the cache): every run against the base
    model (``runs_root/vs-base``), and every method against SFT (``runs_root/vs-sft``)."""
    sft, methods = str(runs_root / "sft-smol"), [str(runs_root / s.recipe) for s in STAGES[2:]]
    common = ["--suite", suite, "--runs-root", str(runs_root), "--train-missing"]
    return [
        ["eval", BASELINE, "--compare", sft, *methods, *common, "--out", str(runs_root / "vs-base")],
        ["eval", sft, "--compare", *methods, *common, "--out", str(runs_root / "vs-sft")],
    ]


def lane_jobs(runs_root: Path, suite: str, states: dict[str, str]) -> tuple[list[Job], set[str]]:
    """The jobs of a run in lanes, in :data:`LANE_ORDER`, and the names already finished: each stage not finished,
    each run the suite needs that is not a stage (its held-out judge), then optional cache warm-ups of the final eval
    (:mod:`alignkit.eval.baseline_warmup`: the base model's and each stage's replies, scores and perplexities), each
    after the runs the suite needs."""
    from alignkit.eval.suite import load_suite
    from alignkit.models import resolve_model_path

    by_name = {stage.recipe: stage for stage in STAGES}
    done = {name for name, state in states.items() if state == "reuse"}
    jobs = [
        Job(name, tuple(train_command(runs_root, by_name[name], states[name])), by_name[name].after)
        for name in LANE_ORDER
        if name not in done
    ]
    needs = load_suite(suite).required_runs()
    for need in needs:
        if need.name in by_name:
            continue
        if run_is_finished(runs_root / need.name):
            done.add(need.name)
            continue
        resume = (runs_root / f"{need.name}.partial").exists()
        argv = ("train", need.recipe, f"output_dir={runs_root / need.name}", "--no-eval") + (("--resume",) * resume)
        at = next((i for i, job in enumerate(jobs) if job.name not in ("sft-smol", "rm-smol")), len(jobs))
        jobs.insert(at, Job(need.name, argv))  # the judge goes early: every warm-up waits for it
    judges = tuple(need.name for need in needs)
    warm = ("-m", "alignkit.eval.baseline_warmup")
    common = ("--suite", suite, "--runs-root", str(runs_root))
    cap = comparison_cap()
    common += ("--max-eval-samples", str(cap)) if cap else ()  # the prompts the comparisons use: same cache keys
    base = resolve_model_path(BASELINE)
    jobs.append(Job("warm-base", (*warm, base, *common), judges, optional=True))
    # both comparisons score replies' perplexity under the base model (vs-sft's first model, sft-smol, starts there)
    ref = ("--reference", base)
    for stage in (STAGES[0], *STAGES[2:]):  # the models the two comparisons evaluate (rm-smol is a judge, not one)
        after = (stage.recipe, *[j for j in judges if j != stage.recipe])
        argv = (*warm, str(runs_root / stage.recipe), *ref, *common)
        jobs.append(Job(f"warm-{stage.recipe}", argv, after, optional=True))
    return jobs, done


def comparison_cap() -> int | None:
    """The prompt cap of the final comparisons: ``alignkit eval --compare`` cuts the suite to the smallest
    ``max_eval_samples`` of the compared runs (:mod:`alignkit.eval.command`), here read from their recipes."""
    from alignkit.recipe import load_recipe

    caps = []
    for stage in (STAGES[0], *STAGES[2:]):
        recipe = load_recipe(stage.recipe, [*stage.overrides, f"output_dir=runs/pipeline/{stage.recipe}"])
        caps += [int(recipe.args.max_eval_samples)] if recipe.args.max_eval_samples else []
    return min(caps) if caps else None


def train_in_lanes(runs_root: Path, suite: str, states: dict[str, str], lanes: int) -> int:
    """Train the stages (and the suite's judge) in ``lanes`` child processes (:mod:`alignkit.stage_lanes`)."""
    jobs, done = lane_jobs(runs_root, suite, states)
    log_dir = runs_root / LANE_LOGS
    print(f"alignkit pipeline: {len(jobs)} jobs in {lanes} lanes; each job's output goes to {log_dir}/", flush=True)
    result = run_lanes(jobs, lanes, log_dir, done)
    if result.failed is None:
        return 0
    log = log_dir / f"{result.failed}.log"
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()] if log.exists() else []
    stopped = f"; stopped {', '.join(result.stopped)} (resumed on the rerun)" if result.stopped else ""
    print(
        f"alignkit pipeline: stage {result.failed} failed (exit {result.exit_code}); rerun to continue from it"
        f"{stopped}. Its log: {log}" + (f" (last line: {lines[-1][-300:]})" if lines else ""),
        flush=True,
    )
    return result.exit_code


def default_lanes() -> int:
    """2 lanes when this process has 2 or more torch threads (one thread each), else 1 (stages one at a time)."""
    import torch

    return 2 if torch.get_num_threads() >= 2 and os.environ.get("ALIGNKIT_SIDE_LANE") != "0" else 1


def main(argv: list[str]) -> int:
    from alignkit.cli import main as alignkit_main

    parser = argparse.ArgumentParser(prog="alignkit pipeline", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs-root", default="runs/pipeline", help="where the stages' runs and the report go")
    parser.add_argument("--suite", default="smol", help="eval suite of the final comparison")
    parser.add_argument(
        "--lanes",
        type=int,
        default=None,
        help="stages trained at once, in child processes sharing the threads (default: 2 with 2+ threads, else 1; "
        "1 when ALIGNKIT_SIDE_LANE=0)",
    )
    parser.add_argument("--dry-run", action="store_true", help="print each stage's state and command, run nothing")
    args = parser.parse_args(argv)
    if args.lanes is not None and args.lanes < 1:
        parser.error(f"--lanes must be at least 1, got {args.lanes}")
    lanes = args.lanes or default_lanes()
    runs_root = Path(args.runs_root)
    states = {stage.recipe: stage_state(runs_root, stage) for stage in STAGES}
    for stage in STAGES:
        state = states[stage.recipe]
        command = train_command(runs_root, stage, state)
        print(
            f"alignkit pipeline: {stage.recipe}: {state}"
            + ("" if state == "reuse" else f": alignkit {' '.join(command)}")
        )
        if args.dry_run or lanes > 1 or state == "reuse":
            continue
        code = alignkit_main(command)
        if code != 0:
            print(f"alignkit pipeline: stage {stage.recipe} failed (exit {code}); rerun to continue from it")
            return code
    if lanes > 1 and not args.dry_run:
        code = train_in_lanes(runs_root, args.suite, states, lanes)
        if code != 0:
            return code
    notes = {} if args.dry_run else {s.recipe: stage_note(runs_root / s.recipe, states[s.recipe], s) for s in STAGES}
    for command in eval_commands(runs_root, args.suite):
        print(f"alignkit pipeline: report: alignkit {' '.join(command)}")
        code = 0 if args.dry_run else alignkit_main(command)
        if code != 0:
            return code
    if not args.dry_run:
        from alignkit.pipeline_report import write_pipeline_report

        print(f"alignkit pipeline: report: {write_pipeline_report(runs_root, notes)}")
    return 0


def stage_note(run_dir: Path, state: str, stage: Stage) -> str:
    """``trained in 312 s, 64 steps, from run:sft-smol`` (or ``reused (trained in ... earlier)``, ``resumed, ...``):
    what the report says of a stage, from its ``run.json``."""
    import json

    path = run_dir / "run.json"
    meta = json.loads(path.read_text()) if path.exists() else {}
    seconds, steps = meta.get("train_seconds"), meta.get("global_step")
    took = f"trained in {seconds:.0f} s" if isinstance(seconds, (int, float)) else "trained"
    how = {"reuse": f"reused ({took} earlier)", "resume": f"resumed, {took}", "train": took}[state]
    start = next((o.split("=", 1)[1] for o in stage.overrides if o.startswith("model_name_or_path=")), None)
    return f"{how}, {steps} steps, from {start or meta.get('model_name_or_path')}"
