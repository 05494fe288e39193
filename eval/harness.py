"""The eval harness: generate once per model, then let every metric of the suite score, and write the report.

Flow (each model is loaded once, and released before the next, so a comparison of N runs never holds N models)::

    preflight   prompt sets, then every metric's prepare()     (user errors surface before any compute)
    per model   generations (cached), then every metric's with_model()   (held-out perplexity, preference)
    shared      response facts, then every metric's score()    (diversity, RM score, response perplexity, win rates,
                                                                lm-eval)
    report      report.json, report.md, charts, metrics.json -- rendered in memory, then written atomically

Metrics are looked up by name in :data:`alignkit.eval.registries.METRICS` and run in its order; the harness knows
none of them. The first model is the baseline: win rates are "model vs baseline" (> 0.5 means the model wins). For a
run directory the baseline is the base checkpoint (no adapter) and the other model is the trained one. Nothing is
written until every metric has been computed, so a failure leaves no partial report behind.

The harness never trains: a reward model or judge that is a missing run is a prerequisite, trained beforehand by
:func:`alignkit.pipeline.ensure_runs` (``alignkit train``, or ``alignkit eval --train-missing``).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from alignkit.chat_format import transcript
from alignkit.errors import AlignkitError
from alignkit.eval.generation import generate
from alignkit.eval.goals import goal_table
from alignkit.eval.metric_base import EvalContext, LazyModel
from alignkit.eval.metric_responses import response_stats
from alignkit.eval.model_spec import ModelSpec
from alignkit.eval.prompt_sets import load_prompt_set
from alignkit.eval.registries import METRICS
from alignkit.eval.report_rows import cannot_move_metrics, undefined_metrics
from alignkit.eval.suite import Suite


class _Clock:
    """Wall and process-CPU seconds per phase (CPU seconds, all threads, compare across machines under load)."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self.last = time.perf_counter(), time.process_time()

    def lap(self, phase: str) -> None:
        now = time.perf_counter(), time.process_time()
        for out, then, current in ((self.wall, self.last[0], now[0]), (self.cpu, self.last[1], now[1])):
            out[phase] = round(out.get(phase, 0.0) + current - then, 2)
        self.last = now

    @staticmethod
    def total(d: dict[str, float]) -> dict[str, float]:
        return {**d, "total": round(sum(d.values()), 2)}


def run_eval(
    specs: list[ModelSpec],
    suite: Suite,
    use_cache: bool = True,
    runs_root: str | Path = "runs",
    run_dir: Path | None = None,
) -> dict[str, Any]:
    """Compute every metric of ``suite`` for ``specs`` (first = baseline) and return the report dict (no I/O)."""
    if not specs:
        raise AlignkitError("eval: no model to evaluate")
    if len({s.name for s in specs}) != len(specs):
        raise AlignkitError(f"eval: model names must be unique, got {[s.name for s in specs]}")
    clock = _Clock()
    data = {ps.name: load_prompt_set(ps) for ps in suite.prompt_sets}
    ctx = EvalContext(suite=suite, specs=specs, data=data, runs_root=Path(runs_root), use_cache=use_cache)
    metrics = {name: METRICS.get(name)(opts) for name, opts in suite.metrics.items()}
    for metric in metrics.values():
        metric.prepare(ctx)
    clock.lap("preflight")

    for spec in specs:
        lazy = LazyModel(spec)
        for name, pd in data.items():
            ctx.gens[spec.name][name] = generate(
                spec, pd.prompts, suite.generation, use_cache, lazy, f"{spec.name}/{name}"
            )
        clock.lap("generation")
        # Replies are always decoded in the exact precision (bf16 can flip a near-tied greedy token, and a changed
        # reply changes every metric); scoring passes follow the suite's (bench/results/eval_precision.md).
        lazy.use_precision(suite.precision)
        for name, metric in metrics.items():
            metric.with_model(ctx, spec, lazy)
            clock.lap(name)
        lazy.release()

    response_stats(ctx)
    clock.lap("responses")
    for name, metric in metrics.items():
        metric.score(ctx)
        clock.lap(name)

    report = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "suite": {"name": suite.name, "path": str(suite.path), "description": suite.description},
        "run_dir": str(run_dir) if run_dir else None,
        "baseline": specs[0].name,
        "models": [s.describe() for s in specs],
        "prompt_sets": [
            {**asdict(pd.spec), "n": len(pd.prompts), "graded": pd.references is not None} for pd in data.values()
        ],
        "generation": asdict(suite.generation),
        "machine": _machine(suite.precision),
        "generation_cache": {s.name: {n: str(g.cache_path) for n, g in ctx.gens[s.name].items()} for s in specs},
        "metrics": ctx.per_model,
        "win_rates": ctx.win_rates,
        "lengths": {s.name: {n: g.n_tokens for n, g in ctx.gens[s.name].items()} for s in specs},
        "samples": _samples(ctx),
        **ctx.sections,
        "notes": ctx.notes,
        "timing_s": clock.total(clock.wall),
        "cpu_s": clock.total(clock.cpu),
    }
    report["cannot_move"] = cannot_move_metrics(report)
    report["undefined"] = undefined_metrics(report)
    report["goals"] = goal_table(report)
    return report


def _machine(precision: str) -> dict[str, Any]:
    """Where the numbers were measured: CPU (or GPU), threads, and the scoring precision asked and used here."""
    import torch

    from alignkit.hardware import detect
    from alignkit.inference_precision import effective_precision

    hw = detect()
    return {
        "device": hw.device,
        "cpu_model": hw.cpu_model,
        "cpu_flags": hw.cpu_flags,
        "gpu_name": hw.gpu_name,
        "threads": torch.get_num_threads(),
        "precision": {"suite": precision, "effective": effective_precision(precision)},
    }


def _samples(ctx: EvalContext) -> list[dict[str, Any]]:
    """The first ``suite.samples`` prompts of each set with every model's response, for the report."""
    return [
        {
            "prompt_set": name,
            "index": i,
            "prompt": transcript(pd.prompts[i]),
            "responses": {s.name: ctx.gens[s.name][name].responses[i] for s in ctx.specs},
        }
        for name, pd in ctx.data.items()
        for i in range(min(ctx.suite.samples, len(pd.prompts)))
    ]


def write_report(report: dict[str, Any], out_dir: str | Path) -> Path:
    """Render every file in memory first, then write them all or none (:func:`alignkit.io.atomic_write_files`);
    ``report.md`` is renamed into place last, so its presence means the set is complete. Returns its path."""
    from alignkit.eval.report import render_files
    from alignkit.io import atomic_write_files

    # all or none: a full disk while writing leaves the previous report set whole
    atomic_write_files(out_dir, render_files(report), last="report.md")
    return Path(out_dir) / "report.md"


def evaluate(
    specs: list[ModelSpec],
    suite: Suite,
    out_dir: str | Path,
    use_cache: bool = True,
    runs_root: str | Path = "runs",
    run_dir: Path | None = None,
) -> Path:
    """:func:`run_eval` then :func:`write_report`; returns the path of ``report.md``."""
    report = run_eval(specs, suite, use_cache=use_cache, runs_root=runs_root, run_dir=run_dir)
    return write_report(report, out_dir)
