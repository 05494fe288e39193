"""bench/make_time.py's bookkeeping: the phase breakdown from run.json / report.json, and the process-tree RSS."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import make_time  # noqa: E402


def test_phases_from_runs_reports_and_printed_lines(tmp_path):
    for name, seconds in (("dpo-smol", 120.0), ("rm-smol", 60.0)):
        (tmp_path / "runs" / name).mkdir(parents=True)
        (tmp_path / "runs" / name / "run.json").write_text(
            json.dumps({"train_seconds": seconds, "status": "finished"})
        )
    timing = {"generation": 100.0, "rm_score": 50.0, "total": 150.0}
    (tmp_path / "runs" / "dpo-smol" / "report.json").write_text(json.dumps({"timing_s": timing}))
    lines = [
        (1.0, "alignkit: recipe dpo-smol (dpo) -> runs/dpo-smol"),
        (2.0, "alignkit: precision: bf16: ..."),  # a hardware-choice line, not a milestone
        (10.0, "alignkit: trained run in runs/dpo-smol"),
        (11.0, "some training log line"),
    ]
    ph = make_time.phases(tmp_path, lines, wall=400.0)
    assert ph["train_seconds_total"] == 180.0
    assert ph["eval_seconds_total"] == 150.0  # timing_s's own total, not total + phases
    assert ph["other_seconds"] == 400.0 - 180.0 - 150.0
    assert [(s["from_s"], s["seconds"]) for s in ph["spans"]] == [(1.0, 9.0), (10.0, 390.0)]


def test_a_side_lane_run_is_marked_and_left_out_of_the_main_lane_sum(tmp_path):
    for name, seconds in (("dpo-smol", 120.0), ("rm-judge-smol", 60.0)):
        (tmp_path / "runs" / name).mkdir(parents=True)
        (tmp_path / "runs" / name / "run.json").write_text(json.dumps({"train_seconds": seconds}))
    (tmp_path / "runs" / ".side-lane").mkdir()
    (tmp_path / "runs" / ".side-lane" / "rm-judge-smol.log").write_text("trained beside dpo-smol\n")
    ph = make_time.phases(tmp_path, [], wall=400.0)
    assert ph["runs"]["rm-judge-smol"]["side_lane"] and "side_lane" not in ph["runs"]["dpo-smol"]
    assert ph["train_seconds_total"] == 120.0 and ph["other_seconds"] == 280.0  # the judge overlapped the rest


def test_tree_rss_counts_this_process():
    assert make_time.tree_rss_bytes(os.getpid()) > 10 * 2**20


def test_pipeline_phases_read_nested_runs_and_skip_the_comparison_table(tmp_path):
    root = tmp_path / "runs" / "pipeline"
    for name, seconds in (("sft-smol", 100.0), ("dpo-smol", 200.0)):
        (root / name).mkdir(parents=True)
        (root / name / "run.json").write_text(json.dumps({"train_seconds": seconds, "status": "finished"}))
    (root / "vs-base").mkdir()
    (root / "vs-base" / "report.json").write_text(json.dumps({"timing_s": {"total": 50.0}}))
    (root / "report.json").write_text(json.dumps({"rows": []}))  # the pipeline's table: no eval timing
    ph = make_time.phases(tmp_path, [], wall=1000.0)
    assert set(ph["runs"]) == {"pipeline/sft-smol", "pipeline/dpo-smol"} and ph["train_seconds_total"] == 300.0
    assert ph["eval_timing_s"] == {"pipeline/vs-base": {"total": 50.0}} and ph["other_seconds"] == 650.0


def test_pipeline_argv_and_report_carry_the_pipeline_table():
    assert make_time.make_argv("dpo-smol", "", pipeline=True)[-1] == "pipeline"
    assert make_time.make_argv("dpo-smol", "max_steps=2")[-2:] == ["recipe=dpo-smol", "ARGS=max_steps=2"]
    stats = {
        "pipeline": True,
        "pipeline_report": "# make pipeline\n\n| model | win |\n|---|---|\n| dpo-smol | 0.7 |\n\n![p](x.png)\n",
        "make_command": ["make", "pipeline"],
        "load_before": "0",
        "load_after": "0",
        "model_materialized_before": True,
        "wall_seconds": 3000.0,
        "peak_rss_gib": 9.0,
        "tree_peak_rss_gib": 9.5,
        "exit": 0,
        "phases": {"runs": {}, "eval_timing_s": {}, "spans": [], "other_seconds": 0.0},
    }
    record = {
        "command": "c",
        "date": "d",
        "cpu": {"model": "M", "flags_of_interest": [], "cores": 2},
        "statistics": stats,
    }
    text = make_time.render(record)
    assert text.startswith("# `make pipeline`") and "(goal <= 3600)" in text
    assert "| dpo-smol | 0.7 |" in text and "![p]" not in text  # the plot is not copied beside the results


def test_the_report_goal_figures_of_the_timed_make_are_kept(tmp_path):
    run = tmp_path / "runs" / "dpo-smol"
    run.mkdir(parents=True)
    assert make_time.report_goal_figures(run) is None  # no report: nothing claimed
    (run / "report.json").write_text(json.dumps({"goals": {"figures": {"win_rate": 0.7, "lc_win_rate": 0.49}}}))
    assert make_time.report_goal_figures(run) == {"win_rate": 0.7, "lc_win_rate": 0.49}
