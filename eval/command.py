"""``alignkit eval``: score one run or model, or compare several, with an eval suite.

Usage::

    alignkit eval runs/dpo-smol                       # base vs trained, report written into the run directory
    alignkit eval smollm2-135m-instruct --out out/    # one model
    alignkit eval smollm2-135m-instruct --compare runs/sft-smol runs/dpo-smol   # each vs the first
    alignkit eval runs/dpo-smol --suite default --max-prompts 16 --no-cache

Targets are run directories (``runs/NAME`` or just ``NAME`` when ``runs/NAME/run.json`` exists), model directories,
embedded aliases or hub ids. User errors raise :class:`~alignkit.errors.AlignkitError` (one line, exit code 2).

A suite may need runs of its own (a reward model ``run:rm-smol`` with ``train_missing``, a judge ``run:NAME``). The
eval does not train them: when one is missing it names the ``alignkit train`` command to run, unless
``--train-missing`` asks it to train them first (:func:`alignkit.pipeline.ensure_runs`, as ``alignkit train`` does).
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path

from alignkit.errors import AlignkitError
from alignkit.eval import preflight
from alignkit.eval.model_spec import ModelSpec, resolve_target, run_specs
from alignkit.runs import read_finished_run


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="alignkit eval", description="Evaluate a run or model with an eval suite.")
    p.add_argument("target", nargs="?", help="run directory, run name, model directory, embedded alias or hub id")
    p.add_argument(
        "--compare",
        nargs="+",
        metavar="RUN_OR_MODEL",
        default=[],
        help="compare these against the first target (win rates of each vs the first)",
    )
    p.add_argument(
        "--suite",
        default=None,
        help="suite name (smol, default) or YAML path; default: the run's eval_suite, else smol",
    )
    p.add_argument("--out", default=None, help="output directory (default: the run directory, else runs/eval-*)")
    p.add_argument(
        "--max-prompts",
        type=int,
        default=None,
        help="rows per prompt set, held-out set and pair set (default: the suite's, capped by the run's "
        "max_eval_samples)",
    )
    p.add_argument(
        "--precision",
        choices=("exact", "fast"),
        default=None,
        help="scoring precision, overriding the suite's `precision`: exact (fp32 on a CPU) or fast (bf16 where the "
        "CPU has it natively, else exact); replies are always generated exactly",
    )
    p.add_argument("--no-cache", action="store_true", help="ignore cached generations and scores")
    p.add_argument("--runs-root", default="runs", help="where run names and run:NAME references live")
    p.add_argument(
        "--train-missing",
        action="store_true",
        help="train the runs the suite needs (run:NAME reward model or judge) when missing, as `alignkit train` does",
    )
    return p


def _slug(names: list[str]) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", "-vs-".join(names))[:120]


@dataclass
class Plan:
    specs: list[ModelSpec]
    out_dir: Path
    runs_root: Path
    run_dir: Path | None = None  # set when evaluating one run (base vs trained; metrics.json is written)
    suite: str | None = None  # the runs' eval_suite, when they agree
    max_eval_samples: int | None = None  # the smallest of the runs' max_eval_samples


def plan(args: argparse.Namespace) -> Plan:
    """Resolve the CLI targets into model specs and an output directory."""
    targets = ([args.target] if args.target else []) + list(args.compare)
    if not targets:
        raise AlignkitError("alignkit eval: give a run directory or model (or --compare A B ...)")
    runs_root = Path(args.runs_root)
    resolved = [resolve_target(t, runs_root) for t in targets]
    runs = {str(v): read_finished_run(v) for kind, v in resolved if kind == "run"}
    preflight.check_same_suite(runs, suite_given=bool(args.suite))
    metas = list(runs.values())
    suites = {m.get("eval_suite") for m in metas} - {None}
    caps = [int(m["max_eval_samples"]) for m in metas if m.get("max_eval_samples")]
    common = dict(suite=suites.pop() if len(suites) == 1 else None, max_eval_samples=min(caps) if caps else None)
    if len(resolved) == 1 and resolved[0][0] == "run":
        run_dir = Path(resolved[0][1])
        return Plan(list(run_specs(run_dir)), Path(args.out or run_dir), run_dir.parent, run_dir, **common)
    specs = [run_specs(v)[1] if kind == "run" else v for kind, v in resolved]
    seen: set[str] = set()
    for i, s in enumerate(specs):  # the same name twice (two runs of one recipe): disambiguate by position
        if s.name in seen:
            specs[i] = ModelSpec(**{**vars(s), "name": f"{s.name}#{i}"})
        seen.add(specs[i].name)
    default_out = runs_root / f"{'compare' if len(specs) > 1 else 'eval'}-{_slug([s.name for s in specs])}"
    return Plan(specs, Path(args.out) if args.out else default_out, runs_root, **common)


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``alignkit eval``; returns the exit code (user errors raise AlignkitError)."""
    from alignkit.eval.harness import evaluate
    from alignkit.eval.suite import load_suite
    from alignkit.pipeline import missing_run_error, missing_runs, train_runs

    args = build_parser().parse_args(argv)
    p = plan(args)
    suite = load_suite(args.suite or p.suite or "smol")
    if args.precision is not None:
        suite.precision = args.precision
    if args.max_prompts is not None:
        suite.limit(args.max_prompts)
    elif p.max_eval_samples:
        suite.limit(p.max_eval_samples, cap_only=True)
    preflight.check_model_refs(suite)
    for spec in p.specs:
        preflight.check_adapter_base(spec)
    pending = missing_runs(suite.required_runs(), p.runs_root)
    if pending and not args.train_missing:
        raise missing_run_error(pending[0], p.runs_root)
    train_runs(pending)
    names = " vs ".join(s.name for s in p.specs)
    print(f"alignkit eval: {names} with suite '{suite.name}' ({suite.path}) -> {p.out_dir}", flush=True)
    report = evaluate(p.specs, suite, p.out_dir, use_cache=not args.no_cache, runs_root=p.runs_root, run_dir=p.run_dir)
    if p.run_dir is not None and p.out_dir.resolve() == p.run_dir.resolve():
        from alignkit.model_card import write_model_card

        print(f"model card: {write_model_card(p.run_dir)} (eval table from report.json)")
    print(f"report: {report}")
    return 0
