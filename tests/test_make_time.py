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


def test_tree_rss_counts_this_process():
    assert make_time.tree_rss_bytes(os.getpid()) > 10 * 2**20
