"""LoRA (fp32 base) vs QLoRA (nf4 base) training-step time on the embedded model, measured side by side.

Why: the smol recipes pick LoRA or QLoRA by measured step time on the project's 2-core CPUs. Steps alternate between
the two arms so machine noise hits both equally; the figure that matters is the ratio of medians.

    .venv/bin/python bench/lora_vs_qlora.py [--steps 6] [--batch 4] [--seq 320]
    .venv/bin/python bench/lora_vs_qlora.py --quick     # smoke run: tiny model, 1 step, written to a temp dir

No goal: the ratio decides which of the two the smol recipes use (QLoRA only if it is faster here).
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, BitsAndBytesConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import bench_model_path, command_line, figure, result_record, results_dir, write_result  # noqa: E402

from alignkit.io import atomic_write_text  # noqa: E402


def build(path: str, quantized: bool):
    kwargs = {"dtype": torch.float32}
    if quantized:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.float32,
        )
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    lora = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    return model, opt


def step(model, opt, batch) -> float:
    start = time.perf_counter()
    loss = model(input_ids=batch, labels=batch).loss
    loss.backward()
    opt.step()
    opt.zero_grad()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=320)
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny model, 1 step of 2x32; temp dir")
    parser.add_argument("--out", default=None, help="report (default bench/results/lora_vs_qlora.md)")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.batch, args.seq = 1, 2, 32
    out = Path(args.out) if args.out else results_dir(args.quick) / "lora_vs_qlora.md"
    date = time.strftime("%Y-%m-%d %H:%M")
    path = bench_model_path(args.quick)
    torch.manual_seed(0)
    batch = torch.randint(0, 49152, (args.batch, args.seq))
    arms = {"lora": build(path, False), "qlora": build(path, True)}
    for model, opt in arms.values():  # warm-up (allocations, kernel selection)
        step(model, opt, batch)
    times = {name: [] for name in arms}
    for _ in range(args.steps):
        for name, (model, opt) in arms.items():
            times[name].append(step(model, opt, batch))
    med = {name: statistics.median(t) for name, t in times.items()}
    ratio = med["qlora"] / med["lora"]
    text = (
        "# LoRA vs QLoRA step time (embedded SmolLM2-135M, CPU)\n\n"
        f"Command: `.venv/bin/python bench/lora_vs_qlora.py --steps {args.steps} --batch {args.batch} "
        f"--seq {args.seq}`\n\n"
        f"Forward+backward+AdamW on {args.batch}x{args.seq} tokens, LoRA r=16 on all linear layers, "
        f"{torch.get_num_threads()} threads, arms interleaved.\n\n"
        "| arm | median step (s) | all steps (s) |\n|---|---|---|\n"
        + "".join(f"| {n} | {med[n]:.2f} | {', '.join(f'{t:.2f}' for t in times[n])} |\n" for n in arms)
        + f"\n**QLoRA / LoRA step-time ratio: {ratio:.2f}x**\n"
    )
    atomic_write_text(out, text)
    fig = figure(
        "lora_vs_qlora.step_ratio",
        "QLoRA (nf4 base) / LoRA (fp32 base) step time",
        "none: decides LoRA or QLoRA for the smol recipes",
        ratio,
        None,
        "ratio of median step times, arms interleaved step by step",
        unit="x",
    )
    stats = {"median_step_s": med, "step_s": times, "ratio": ratio, "batch": args.batch, "seq": args.seq}
    record = result_record("lora_vs_qlora", command_line(argv), date, torch.get_num_threads(), stats, [fig])
    print(text)
    print(f"wrote {out} and {write_result(record, out.parent)}")


if __name__ == "__main__":
    main()
