"""The start model's half of a run's eval, computed ahead of the run into the eval's caches.

A run's eval compares the trained model with the model it started from, and everything the eval computes for the
start model (its greedy replies, their proxy RM scores and perplexities, its held-out perplexity and preference
log-probs) depends only on that model, the suite and the suite's reward models, not on the training. ``alignkit
train`` therefore runs this module in its side lane (:mod:`alignkit.lanes`) while the main process trains, and the
eval afterwards finds those rows in the generation cache (:mod:`alignkit.eval.generation`) and the score cache
(:mod:`alignkit.eval.score_cache`) and computes only the trained model's half. Nothing else is written: no report.

The start model's spec is the one :func:`alignkit.eval.model_spec.run_specs` gives the finished run (``base`` = the
run's ``base_model``), and the suite is cut to the run's ``max_eval_samples`` as ``alignkit eval`` cuts it, so the
cache keys are the same. A suite whose reward model or judge is not trained yet is skipped (exit 0, one line): the
eval computes everything then, as without this step.

Measured (2026-12-03, Intel Xeon with AMX, idle, dpo-smol's finished run, suite smol, each from a copy of the
dataset cache without generations and scores): ``OMP_NUM_THREADS=2 alignkit eval runs/dpo-smol`` 144.8 s; this step,
``OMP_NUM_THREADS=1 python -m alignkit.eval.baseline_warmup <the run's base_model> --suite smol``, 116.3 s, then
the same eval 84.2 s.

``alignkit pipeline`` also runs it on each finished stage's run directory (``MODEL_PATH`` holding a ``run.json``): then
it warms the run's *trained* model (the spec ``alignkit eval`` gives a run it compares, :func:`run_specs`), in a
lane beside the stages still training (:mod:`alignkit.stage_lanes`), so the pipeline's final comparisons mostly read
caches.

A comparison scores every model's replies under one reference (the suite's ``perplexity.reference_model: base``: the
base of the comparison's *first* model). Warming a run alone, that first model is the run itself, whose start (for a
method started from ``run:sft-smol``, the merged SFT model) is not the comparison's reference, so those perplexities
would miss the cache. ``--reference MODEL`` names the comparison's reference instead.

Usage: ``python -m alignkit.eval.baseline_warmup MODEL_PATH --suite SUITE [--max-eval-samples N] [--runs-root R]
[--reference MODEL] [--trust-remote-code]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m alignkit.eval.baseline_warmup", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "model_path", help="the start model's directory (the run's base_model), or a finished run's directory"
    )
    parser.add_argument("--suite", required=True, help="suite name or YAML path (the run's eval_suite)")
    parser.add_argument("--max-eval-samples", type=int, default=None, help="the run's max_eval_samples")
    parser.add_argument("--runs-root", default="runs", help="where run:NAME reward models and judges live")
    parser.add_argument(
        "--reference",
        default=None,
        help="the model the comparison scores replies' perplexity under (its first model's base), when the suite's "
        "perplexity.reference_model is 'base'",
    )
    parser.add_argument("--trust-remote-code", action="store_true", help="the run's trust_remote_code")
    return parser


def warm_baseline(
    model_path: str,
    suite_name: str,
    max_eval_samples: int | None,
    runs_root: str | Path,
    trust_remote_code=False,
    reference: str | None = None,
) -> bool:
    """Compute the start model's eval rows (or, for a run directory, its trained model's) into the caches; False
    (nothing computed) when a run the suite needs is missing. ``reference``: see the module docstring."""
    from alignkit.eval.harness import run_eval
    from alignkit.eval.model_spec import ModelSpec, run_specs
    from alignkit.eval.suite import load_suite
    from alignkit.pipeline import missing_runs

    suite = load_suite(suite_name)
    if max_eval_samples:
        suite.limit(max_eval_samples, cap_only=True)
    perplexity = suite.metric("perplexity")
    if reference and perplexity is not None and perplexity.reference_model == "base":
        perplexity.reference_model = reference
    pending = missing_runs(suite.required_runs(), Path(runs_root))
    if pending:
        print(f"baseline warm-up: skipped, run:{pending[0].need.name} is not trained yet", flush=True)
        return False
    if (Path(model_path) / "run.json").exists():
        spec = run_specs(model_path)[1]
    else:
        spec = ModelSpec(name="base", base=str(model_path), trust_remote_code=trust_remote_code)
    run_eval([spec], suite, runs_root=runs_root)
    return True


def main(argv: list[str] | None = None) -> int:
    from alignkit.errors import AlignkitError

    args = build_parser().parse_args(argv)
    try:
        done = warm_baseline(
            args.model_path, args.suite, args.max_eval_samples, args.runs_root, args.trust_remote_code, args.reference
        )
    except AlignkitError as exc:
        print(f"baseline warm-up: {exc}", file=sys.stderr, flush=True)
        return 2
    if done:
        print("baseline warm-up: done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
