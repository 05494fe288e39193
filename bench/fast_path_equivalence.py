"""Loss and gradients of one optimizer step of dpo-smol and sft-smol with the CPU fast path (``cpu_fast_path``) on
vs off, on the embedded model: issue 13's "loss and gradients equal to the slow path within bf16 tolerance (exact
in fp32 mode)", measured where the recipes run rather than on the tests' tiny model.

Arms, per recipe, built as ``alignkit train <recipe>`` builds them (``bench/train_speed.py``'s ``build_arm``: the
recipe's card, LoRA, batch, accumulation, max_length and the precision chosen for this CPU), each one optimizer step
from the same seeded LoRA initialization on the same first batch:

* ``slow`` -- ``cpu_fast_path=false`` (TRL's own path);
* ``fast`` -- ``cpu_fast_path=true``;
* ``fp32`` -- only where the chosen precision is bf16 autocast: the slow path in fp32, the yardstick of bf16 rounding.

Two settings differ from the recipes, the same in every arm: ``lora_dropout=0`` (the fast path lays tokens out
without padding, so the two paths' dropout masks could not match) and ``max_grad_norm=0`` (the gradients are read
just before the optimizer step, after clipping, which would rescale each arm by its own norm).

Statistics, fixed before the first run: the relative L2 distance of the stacked LoRA gradient vectors,
``||g_fast - g_slow|| / ||g_slow||`` (the verdict), and the relative loss difference ``|l_fast - l_slow| / |l_slow|``.
Goals, as in tests/test_fast_path.py: in fp32 (a CPU without native bf16) both at most ``1e-4`` (summation order
only); under bf16 autocast, the fast step's distance to the slow step at most the slow bf16 step's own distance to
fp32, or ``1e-2`` if that is smaller (the figure's goal then carries the bound computed in the run).

    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE taskset -c 0 .venv/bin/python bench/fast_path_equivalence.py
    .venv/bin/python bench/fast_path_equivalence.py --quick    # tiny model, small batch; writes to a temp dir

dpo-smol's card is on-policy: its first build needs a trained ``runs/rm-smol`` (from a ``make``), as train_speed's.
Result: ``bench/results/fast_path_equivalence_<cpu kind>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import (
    command_line,
    cpu_kind,
    figure,
    header_command,
    header_cpu,
    met,
    result_header,
    result_record,
    results_dir,
    set_offline_env,
    write_raw_result,
)
from train_speed import build_arm

RECIPES = ("dpo-smol", "sft-smol")
FP32_GOAL = 1e-4
BF16_FLOOR = 1e-2
VERDICT = "||g_fast - g_slow|| / ||g_slow|| over the stacked LoRA gradients of one optimizer step, same batch"
SAME_STEP = ["lora_dropout=0.0", "max_grad_norm=0.0"]


def relative_distance(a: Any, b: Any) -> float:
    """``||a - b|| / ||b||`` of two tensors (the L2 norm of the difference over the norm of the reference)."""
    return float((a.double() - b.double()).norm() / b.double().norm())


def one_step(recipe: str, fast: bool, quick: bool, out_dir: str, extra: list[str]) -> tuple[float, Any, dict]:
    """Loss and stacked trainable gradient of one optimizer step of the arm, and the arm's build info. The global
    RNG is seeded before the build, so every arm starts from the same LoRA initialization."""
    import torch
    from transformers import TrainerCallback, set_seed

    grads: dict[str, torch.Tensor] = {}

    class Probe(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
            grads.update({n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None})

    set_seed(0)
    trainer, info = build_arm(recipe, fast, 1, quick, out_dir, extra=[*SAME_STEP, *extra])
    trainer.add_callback(Probe())
    losses: list[float] = []  # every micro-batch's loss at full precision (the Trainer logs it rounded to 4 places)
    compute_loss = trainer.compute_loss

    def recording(*args: Any, **kwargs: Any) -> Any:
        out = compute_loss(*args, **kwargs)
        losses.append(float((out[0] if isinstance(out, tuple) else out).detach()))
        return out

    trainer.compute_loss = recording
    trainer.train()
    if not losses:
        raise SystemExit(f"{recipe}: compute_loss was never called")
    loss = sum(losses)
    info["micro_batches"] = len(losses)
    if not grads:
        raise SystemExit(f"{recipe}: no trainable gradient reached the optimizer step")
    names = sorted(grads)
    info["trainable_tensors"] = len(names)
    return loss, torch.cat([grads[n].flatten().float() for n in names]), info


def measure(recipe: str, quick: bool, bf16: bool) -> dict:
    """The recipe's arms and its statistics."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        slow_loss, slow_g, info = one_step(recipe, False, quick, f"{tmp}/slow", [])
        if float(slow_g.norm()) == 0.0:
            raise SystemExit(f"{recipe}: the slow arm's gradient is zero; a comparison against it means nothing")
        fast_loss, fast_g, fast_info = one_step(recipe, True, quick, f"{tmp}/fast", [])
        row = {
            "recipe": recipe,
            "precision": "bf16 autocast" if bf16 else "fp32",
            "arms": {"slow": info, "fast": fast_info},
            "loss": {"slow": slow_loss, "fast": fast_loss},
            "grad_norm": {"slow": float(slow_g.norm()), "fast": float(fast_g.norm())},
            "grad_rel_distance": relative_distance(fast_g, slow_g),
            "loss_rel_difference": abs(fast_loss - slow_loss) / abs(slow_loss),
        }
        if bf16:
            ref_loss, ref_g, _ = one_step(recipe, False, quick, f"{tmp}/fp32", ["bf16=false"])
            row["loss"]["fp32"] = ref_loss
            row["bf16_grad_rel_distance_to_fp32"] = relative_distance(slow_g, ref_g)
            row["bf16_loss_rel_difference_to_fp32"] = abs(slow_loss - ref_loss) / abs(ref_loss)
            row["grad_goal"] = max(row["bf16_grad_rel_distance_to_fp32"], BF16_FLOOR)
            row["loss_goal"] = max(row["bf16_loss_rel_difference_to_fp32"], BF16_FLOOR)
        else:
            row["grad_goal"] = row["loss_goal"] = FP32_GOAL
        row["seconds"] = time.perf_counter() - start
    return row


def result(report: dict) -> dict:
    h = report["header"]
    kind = cpu_kind(h["cpu_bf16_flags"])
    figures = []
    for r in report["recipes"]:
        bound = "fp32: summation order only" if r["precision"] == "fp32" else "bf16: slow bf16's distance to fp32"
        figures.append(
            figure(
                f"fast_path_equivalence.{kind}.{r['recipe']}",
                f"{r['recipe']} one step, cpu_fast_path on vs off: relative gradient distance ({kind} CPU, "
                f"{r['precision']})",
                f"<= {r['grad_goal']:.2g} ({bound})",
                r["grad_rel_distance"],
                met(r["grad_rel_distance"], "<=", r["grad_goal"]),
                VERDICT,
                also=[
                    {
                        "statistic": "|loss_fast - loss_slow| / |loss_slow|",
                        "measured": r["loss_rel_difference"],
                        "met": met(r["loss_rel_difference"], "<=", r["loss_goal"]),
                    }
                ],
                note=f"loss slow {r['loss']['slow']:.6f}, fast {r['loss']['fast']:.6f}; gradient norm slow "
                f"{r['grad_norm']['slow']:.4g}; {r['arms']['slow']['trainable_tensors']} LoRA tensors",
            )
        )
    statistics = {r["recipe"]: {k: v for k, v in r.items() if k not in ("recipe", "arms")} for r in report["recipes"]}
    return result_record(
        f"fast_path_equivalence_{kind}",
        header_command(h),
        h["date"],
        h["torch_threads"],
        statistics,
        figures,
        header_cpu(h),
    )


def markdown(report: dict) -> str:
    h = report["header"]
    lines = [
        "# CPU fast path: loss and gradients of one step, on vs off (bench/fast_path_equivalence.py)",
        "",
        f"Command: `{header_command(h)}`  ",
        f"Date: {h['date']}; CPU: {h['cpu_model']} (bf16 flags: {', '.join(h['cpu_bf16_flags']) or 'none'}); "
        f"torch threads {h['torch_threads']}.",
        "",
        f"Verdict statistic (fixed before the run): {VERDICT}. Settings beside the recipe's, in every arm: "
        f"{', '.join(SAME_STEP)}.",
        "",
        "| recipe | precision | gradient distance | goal | loss slow | loss fast | loss difference | met? |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["recipes"]:
        ok = r["grad_rel_distance"] <= r["grad_goal"] and r["loss_rel_difference"] <= r["loss_goal"]
        lines.append(
            f"| {r['recipe']} | {r['precision']} | {r['grad_rel_distance']:.2e} | <= {r['grad_goal']:.2g} | "
            f"{r['loss']['slow']:.6f} | {r['loss']['fast']:.6f} | {r['loss_rel_difference']:.2e} | "
            f"{'met' if ok else 'MISSED'} |"
        )
    lines += ["", "Every statistic (each arm's build, batch and precision are in the JSON, `recipes[].arms`):", ""]
    for r in report["recipes"]:
        lines.append(f"- {r['recipe']}: " + ", ".join(f"{k} {v}" for k, v in r.items() if k not in ("recipe", "arms")))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipes", default=",".join(RECIPES))
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny model, small batch; temp dir")
    parser.add_argument("--out", default=None, help="path stem of the .json/.md")
    args = parser.parse_args(argv)
    set_offline_env()
    from alignkit.hardware import choose_settings, detect

    bf16 = bool(choose_settings(detect(), explicit=set())[0]["bf16"])
    header = result_header()
    header["command"] = command_line(argv)
    report = {"header": header, "recipes": []}
    for recipe in args.recipes.split(","):
        row = measure(recipe, args.quick, bf16)
        report["recipes"].append(row)
        print(
            f"{recipe}: gradient distance {row['grad_rel_distance']:.2e}, loss difference "
            f"{row['loss_rel_difference']:.2e} (goals {row['grad_goal']:.2g}, {row['loss_goal']:.2g})",
            flush=True,
        )
    kind = cpu_kind(header["cpu_bf16_flags"])
    out = Path(args.out) if args.out else results_dir(args.quick) / f"fast_path_equivalence_{kind}"
    path = write_raw_result({"header": header, "recipes": report["recipes"]}, result(report), markdown(report), out)
    print(f"wrote {path} and {path.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
