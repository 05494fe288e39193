"""bench/fast_path_equivalence.py's verdicts: the fp32 goal, the bf16 bound taken from the run's own fp32 arm, and
the relative distance it is judged on."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import fast_path_equivalence as fpe  # noqa: E402


def test_relative_distance_by_hand():
    # ||(3, 4) - (0, 0)|| / ||(0, 5)||... with b = (3, 0): a - b = (0, 4), |a - b| = 4, |b| = 3 -> 4/3
    assert fpe.relative_distance(torch.tensor([3.0, 4.0]), torch.tensor([3.0, 0.0])) == pytest.approx(4 / 3)


def _report(flags: list[str], rows: list[dict]) -> dict:
    header = {"command": "c", "date": "d", "cpu_model": "M", "cpu_bf16_flags": flags, "cpu_flags": flags}
    return {"header": {**header, "torch_threads": 1, "omp": {}}, "recipes": rows}


def _row(recipe: str, precision: str, grad: float, loss: float, grad_goal: float, loss_goal: float) -> dict:
    arms = {"slow": {"trainable_tensors": 28}, "fast": {"trainable_tensors": 28}}
    return {
        "recipe": recipe, "precision": precision, "arms": arms, "loss": {"slow": 1.0, "fast": 1.0},
        "grad_norm": {"slow": 1.0, "fast": 1.0}, "grad_rel_distance": grad, "loss_rel_difference": loss,
        "grad_goal": grad_goal, "loss_goal": loss_goal,
    }  # fmt: skip


def test_fp32_figures_meet_at_summation_order_and_miss_above_it():
    rows = [_row("dpo-smol", "fp32", 4e-7, 2e-7, 1e-4, 1e-4), _row("sft-smol", "fp32", 3e-3, 0.0, 1e-4, 1e-4)]
    record = fpe.result(_report(["avx2"], rows))
    assert record["bench"] == "fast_path_equivalence_no_bf16"
    dpo, sft = record["figures"]
    assert dpo["figure"] == "fast_path_equivalence.no_bf16.dpo-smol" and dpo["met"] is True
    assert sft["met"] is False and sft["also"][0]["met"] is True  # the gradient misses while the loss is equal
    assert "fp32" in sft["goal"]


def test_bf16_goal_is_the_bound_the_run_measured():
    # under bf16 autocast the goal is the slow bf16 step's own distance to fp32 (here 0.03, above the 1e-2 floor)
    rows = [_row("dpo-smol", "bf16 autocast", 0.02, 0.001, 0.03, 0.01)]
    (fig,) = fpe.result(_report(["avx512_bf16", "amx_bf16"], rows))["figures"]
    assert fig["met"] is True and fig["goal"].startswith("<= 0.03")
    rows = [_row("dpo-smol", "bf16 autocast", 0.05, 0.001, 0.03, 0.01)]
    assert fpe.result(_report(["avx512_bf16"], rows))["figures"][0]["met"] is False
