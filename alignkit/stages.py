"""``alignkit pipeline`` (``make pipeline``): SFT, then the reward model, then each preference or RL method started
from the SFT run, then one comparison report. A skeleton of issue 14's pipeline: the stages, caching and resuming
are real; two ``alignkit eval --compare`` runs (every stage against the base model in ``vs-base/``, every method
against SFT in ``vs-sft/``) feed one table with a plot, ``report.md`` (:mod:`alignkit.pipeline_report`), which also
lists each stage's state and training time.

Every stage is a run under ``runs/pipeline/`` (``--runs-root``). A finished run is reused, an interrupted one
(``NAME.partial``) resumes from its last checkpoint, a missing one trains; so a rerun after a failure redoes only what
is missing. The methods start from ``run:sft-smol`` (``model_name_or_path`` override; ppo-smol-chat already does),
which :mod:`alignkit.run_start` merges once and uses as each method's reference.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from alignkit.runs import run_is_finished

FROM_SFT = "model_name_or_path=run:sft-smol"


@dataclass(frozen=True)
class Stage:
    recipe: str
    overrides: list[str] = field(default_factory=list)


STAGES = (
    Stage("sft-smol"),
    Stage("rm-smol"),
    Stage("dpo-smol", [FROM_SFT]),
    Stage("kto-smol", [FROM_SFT]),
    Stage("simpo-smol", [FROM_SFT]),
    Stage("ppo-smol-chat"),  # starts from run:sft-smol in its recipe
    Stage("grpo-smol-adaptive-kl", [FROM_SFT]),
)
BASELINE = "smollm2-135m-instruct"


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


def main(argv: list[str]) -> int:
    from alignkit.cli import main as alignkit_main

    parser = argparse.ArgumentParser(prog="alignkit pipeline", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs-root", default="runs/pipeline", help="where the stages' runs and the report go")
    parser.add_argument("--suite", default="smol", help="eval suite of the final comparison")
    parser.add_argument("--dry-run", action="store_true", help="print each stage's state and command, run nothing")
    args = parser.parse_args(argv)
    runs_root = Path(args.runs_root)
    notes: dict[str, str] = {}
    for stage in STAGES:
        state = stage_state(runs_root, stage)
        command = train_command(runs_root, stage, state)
        print(
            f"alignkit pipeline: {stage.recipe}: {state}"
            + ("" if state == "reuse" else f": alignkit {' '.join(command)}")
        )
        if args.dry_run:
            continue
        if state != "reuse":
            code = alignkit_main(command)
            if code != 0:
                print(f"alignkit pipeline: stage {stage.recipe} failed (exit {code}); rerun to continue from it")
                return code
        notes[stage.recipe] = stage_note(runs_root / stage.recipe, state, stage)
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
