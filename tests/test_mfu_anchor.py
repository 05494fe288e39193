"""bench/mfu.py's anchor: the peak a step's matmul rate is divided by is that of the dtype the step computes in."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import mfu  # noqa: E402


def _report(flags: list[str]) -> dict:
    """A raw mfu report on a CPU with ``flags``: fp32 peak 60 GFLOP/s, bf16 1 GFLOP/s, fast steps at 30 GFLOP/s."""
    steps = [
        {
            "step": i,
            "wall_s": 1.0,
            "matmul_gflop": 30.0,
            "matmul_gflops_per_s": 30.0,
            "phase_s": dict.fromkeys(mfu.PHASES, 0.1),
        }
        for i in (1, 2, 3)
    ]
    report = {
        "header": {
            "date": "2026-12-04", "command": "bench/mfu.py", "cpu_model": "AMD EPYC", "cpu_bf16_flags": flags,
            "cpu_flags": flags, "torch_threads": 1, "cpus_allowed": [1], "load_average_start": [0.0, 0.0, 0.0],
        },
        "cpu_busy_during_peak": {},
        "peak": {"sizes": [576, 1024], "gflops": {"fp32": {576: 50.0, 1024: 60.0}, "bf16": {576: 1.0}},
                 "peak_gflops": {"fp32": 60.0, "bf16": 1.0}},
        "steps": {"before": steps, "after": steps},
        "median_step_wall_s": {"before": 1.0, "after": 1.0},
        "median_phase_s": {p: dict.fromkeys(mfu.PHASES, 0.1) for p in ("before", "after")},
        "median_phase_share": {p: dict.fromkeys(mfu.PHASES, 1 / 6) for p in ("before", "after")},
        "fraction_of_bf16_peak_per_fast_step": [30.0, 30.0, 30.0],
        "fraction_of_fp32_peak_median": 0.5,
        "before_fraction_of_bf16_peak_median": 30.0,
        "verdict": {"statistic": mfu.VERDICT, "measured": 0.5, "goal": mfu.GOAL, "met": True},
        "load_average_end": [0.0, 0.0, 0.0],
    }  # fmt: skip
    return report


def test_the_anchor_is_bf16_where_native_and_fp32_where_bf16_is_emulated():
    assert mfu.anchor_dtype("amx") == "bf16"
    assert mfu.anchor_dtype("avx512_bf16") == "bf16"
    assert mfu.anchor_dtype("no_bf16") == "fp32"


def test_a_no_bf16_result_is_judged_against_the_fp32_peak_not_the_emulated_bf16_one():
    record = mfu.result(_report(["avx2"]))
    (fig,) = record["figures"]
    assert fig["figure"] == "mfu.no_bf16.dpo-smol.fast"
    assert fig["measured"] == 0.5 and fig["met"] is True
    assert "fp32 peak" in fig["label"] and "fp32 peak 60" in fig["note"]
    assert record["statistics"]["fraction_of_bf16_peak_median"] == 30.0  # kept, but not the verdict
    text = mfu.markdown(_report(["avx2"]))
    assert "0.500 of the fp32 peak" in text
    assert "| bf16 | 1 | – | 1 |" in text  # bf16 timed at the smallest size only


def test_a_report_from_a_native_bf16_cpu_reads_as_bf16_anchored():
    anchor, fractions, before = mfu.anchor_of(_report(["avx2", "avx512_bf16"]))
    assert anchor == "bf16" and fractions == [30.0, 30.0, 30.0] and before == 30.0
    assert mfu.result(_report(["avx2", "avx512_bf16"]))["figures"][0]["measured"] == 30.0


def test_speedup_ceiling_and_the_recipe_name_the_row():
    report = _report(["avx2"])
    assert mfu.ceiling(report) is None and "ceiling" not in mfu.markdown(report)  # no unprofiled steps recorded
    report["unprofiled_wall_s"] = {"before": [3.0, 2.0, 4.0], "after": [1.5, 1.0, 1.0]}
    # the fast step's 30 GFLOP at the 60 GFLOP/s fp32 peak take 0.5 s: no such path beats the 3.0-s median by over 6x
    assert mfu.ceiling(report) == 6.0 and mfu.unprofiled_speedup(report) == 2.0  # paired: 2, 2, 4
    record = mfu.result(report)
    assert record["statistics"]["speedup_ceiling"] == 6.0 and record["statistics"]["unprofiled_speedup"] == 2.0
    assert record["bench"] == "mfu_no_bf16" and record["figures"][0]["figure"] == "mfu.no_bf16.dpo-smol.fast"
    assert "ceiling at this peak 6.00x" in record["figures"][0]["note"]
    report["header"]["recipe"] = "sft-smol"
    record = mfu.result(report)
    assert record["bench"] == "mfu_no_bf16_sft-smol" and record["figures"][0]["figure"] == "mfu.no_bf16.sft-smol.fast"
    assert "sft-smol steps" in record["figures"][0]["verdict_statistic"]
    assert "Speed-up ceiling at this peak (no goal): **6.00x**" in mfu.markdown(report)
