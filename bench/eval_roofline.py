"""Roofline of bench/eval_speed.py: the matmul FLOPs each arm must do, against one core's measured fp32 GEMM peak.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python bench/eval_roofline.py --n 256   # after eval_speed.py --n 256

It prints its tables and writes ``eval_roofline.json`` (benchlib's result schema) beside the eval_speed report.

It reads the timings from the results file of ``eval_speed.py`` and the batched arm's generations from the harness's
generation cache (written by that run), so it loads no model and times no eval. It counts only the linear layers and
the LM head (2 FLOPs per multiply-add), at the shapes each arm runs: attention scores, norms and activations are left
out, so the floors below are lower bounds on the work, and the best-possible ratios are upper bounds.

* per-sample loop: every prompt token through the body, one LM-head row per prompt, then one full forward per
  decoded token; the RM's and perplexity's full texts, perplexity with LM-head rows at every position;
* batched: the shared prefix once per stage, each row's remaining prompt once, a decode step for every row of a
  batch until its longest row stops, and LM-head rows only at the scored positions (padding not counted).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import eval_speed  # noqa: E402


def gemm_gflops(rows: int, k: int, n: int) -> float:
    """Measured fp32 GFLOPS of ``(rows, k) @ (k, n)`` on this process's threads (process CPU time)."""
    import torch

    x, w = torch.randn(rows, k), torch.randn(n, k)
    torch.nn.functional.linear(x, w)
    reps = max(3, int(4e9 / (2 * rows * k * n)))
    start = time.process_time()
    for _ in range(reps):
        torch.nn.functional.linear(x, w)
    return 2 * rows * k * n * reps / (time.process_time() - start) / 1e9


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--results", type=Path, default=None, help="eval_speed's report (default: bench/results)")
    parser.add_argument("--quick", action="store_true", help="smoke run after eval_speed.py --quick (tiny model)")
    args = parser.parse_args(argv)
    from benchlib import bench_model_path, command_line, cpu_info, figure, result_record, results_dir, write_result

    if args.quick:
        args.n = 4
    if args.results is None:
        args.results = results_dir(True) / "eval_speed.md" if args.quick else eval_speed.DEFAULT_OUT

    import torch
    from transformers import AutoConfig

    from alignkit.chat_format import encode_pair, prompt_text
    from alignkit.eval.generation import GenerationConfig, generate
    from alignkit.eval.model_spec import ModelSpec
    from alignkit.eval.rm_score import RewardModelScorer
    from alignkit.models import load_tokenizer
    from alignkit.prefix_cache import shared_prefix_len

    torch.set_num_threads(1)
    text = args.results.read_text(encoding="utf-8")
    stages = {s["name"]: s for s in json.loads(re.search(r"```json\n(.*?)\n```", text, re.S).group(1))}
    sizes = {k: int(v) for k, v in re.findall(r"(generation|RM|perplexity) (\d+)", text.split("batch sizes:")[1])}
    max_new = int(re.search(r"max_new_tokens=(\d+)", text).group(1))

    base = bench_model_path(args.quick)
    cfg, tok = AutoConfig.from_pretrained(base), load_tokenizer(base)
    h, hd = cfg.hidden_size, cfg.hidden_size // cfg.num_attention_heads
    layer = h * hd * (2 * cfg.num_attention_heads + 2 * cfg.num_key_value_heads) + 3 * h * cfg.intermediate_size
    body, head = cfg.num_hidden_layers * layer, h * cfg.vocab_size  # multiply-adds per token

    rows = eval_speed.load_rows(args.n)
    prompts, refs = [r["prompt"] for r in rows], [r["reference"] for r in rows]

    def no_model():
        raise SystemExit("no cached generations for these prompts: run bench/eval_speed.py with the same --n first")

    spec = ModelSpec(name="smollm2-135m-instruct", base=base)
    gens = generate(
        spec, prompts, GenerationConfig(max_new_tokens=max_new, batch_size=sizes["generation"]), model_fn=no_model
    )
    steps = [min(n + 1, max_new) - 1 for n in gens.n_tokens]  # decode forwards after the prefill's first token

    enc = [tok.encode(prompt_text(tok, p), add_special_tokens=False) for p in prompts]
    k_gen = shared_prefix_len(enc, min(map(len, enc)) - 1)
    order = sorted(range(len(enc)), key=lambda i: -len(enc[i]))
    b = sizes["generation"]
    batched_steps = sum(
        len(order[s : s + b]) * max(steps[i] for i in order[s : s + b]) for s in range(0, len(order), b)
    )
    scorer = RewardModelScorer.__new__(RewardModelScorer)
    scorer.tokenizer, scorer.max_length = tok, 1024
    rm_rows = [scorer.render(p, r) for p, r in zip(prompts, gens.responses, strict=True)]
    k_rm = shared_prefix_len(rm_rows, min(map(len, rm_rows)) - 1)
    pairs = [encode_pair(tok, p, c) for p, c in zip(prompts, refs, strict=True)]
    k_ppl = shared_prefix_len([p + c for p, c in pairs], min(len(p) for p, _ in pairs) - 1)
    n = len(prompts)
    ppl_tokens, scored = sum(len(p) + len(c) for p, c in pairs), sum(len(c) for _, c in pairs)

    gflop = {  # (loop, batched)
        "generation": (
            sum(map(len, enc)) * body + n * head + sum(steps) * (body + head),
            (sum(map(len, enc)) - (n - 1) * k_gen) * body + n * head + batched_steps * (body + head),
        ),
        "rm_score": (sum(map(len, rm_rows)) * body, (sum(map(len, rm_rows)) - (n - 1) * k_rm) * body),
        "perplexity": (ppl_tokens * (body + head), (ppl_tokens - (n - 1) * k_ppl) * body + scored * head),
    }
    gflop = {s: (2 * lo / 1e9, 2 * ba / 1e9) for s, (lo, ba) in gflop.items()}
    peak = {f"body, {m} rows": gemm_gflops(m, h, cfg.intermediate_size) for m in (64, 512)}
    peak["LM head, 512 rows"] = gemm_gflops(512, h, cfg.vocab_size)
    best = max(peak.values())
    # one row against a 113 MB weight (> L3): a batch-1 decode step streams all 540 MB of weights from memory
    peak["LM head, 1 row (memory-bound)"] = gemm_gflops(1, h, cfg.vocab_size)

    out = [
        f"Matmul work at n={n} (shared prefix: {k_gen} prompt tokens; body {2 * body / 1e6:.0f} MFLOP/token, "
        f"LM head {2 * head / 1e6:.0f} MFLOP/token), against one core's measured fp32 GEMM rate:",
        "",
        "| GEMM (x 576 -> 1536, or -> vocab) | GFLOPS |",
        "|---|---:|",
        *[f"| {name} | {v:.0f} |" for name, v in peak.items()],
        "",
        "| stage | loop GFLOP | batched GFLOP | loop CPU s | batched CPU s | loop GFLOPS | batched GFLOPS "
        f"| batched floor at {best:.0f} GFLOPS (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    tot = [0.0, 0.0, 0.0, 0.0]
    for name, (lo, ba) in gflop.items():
        lc, bc = stages[name]["loop_cpu_s"], stages[name]["batched_cpu_s"]
        tot = [tot[0] + lo, tot[1] + ba, tot[2] + lc, tot[3] + bc]
        out.append(
            f"| {name} | {lo:.0f} | {ba:.0f} | {lc:.1f} | {bc:.1f} | {lo / lc:.0f} | {ba / bc:.0f} | {ba / best:.0f} |"
        )
    out.append(
        f"| **total** | {tot[0]:.0f} | {tot[1]:.0f} | {tot[2]:.1f} | {tot[3]:.1f} | {tot[0] / tot[2]:.0f} "
        f"| {tot[1] / tot[3]:.0f} | {tot[1] / best:.0f} |"
    )
    free_gen = (gflop["rm_score"][1] + gflop["perplexity"][1]) / best
    out += [
        "",
        f"- best possible CPU ratio, every batched matmul at {best:.0f} GFLOPS: {tot[2]:.0f} / {tot[1] / best:.0f} = "
        f"{tot[2] / (tot[1] / best):.1f}x",
        f"- even with generation free: {tot[2]:.0f} / {free_gen:.0f} = {tot[2] / free_gen:.1f}x "
        f"(RM + perplexity floor {free_gen:.0f} s; 10x needs the whole batched arm within {tot[2] / 10:.0f} s)",
    ]
    print("\n".join(out))
    ceiling = tot[2] / (tot[1] / best)
    stats = {
        "gemm_gflops": peak,
        "gflop_loop_batched": gflop,
        "cpu_s_loop_batched": {k: [stages[k]["loop_cpu_s"], stages[k]["batched_cpu_s"]] for k in gflop},
        "best_gemm_gflops": best,
        "ceiling_cpu_ratio": ceiling,
        "ceiling_cpu_ratio_generation_free": tot[2] / free_gen,
    }
    fig = figure(
        "eval_roofline.ceiling",
        "Eval speed-up ceiling at the best measured fp32 GEMM rate (upper bound)",
        "none: bounds eval_speed's goal",
        ceiling,
        None,
        "loop CPU s / (batched GFLOP / best measured GEMM GFLOPS)",
        unit="x",
    )
    record = result_record("eval_roofline", command_line(argv), time.strftime("%Y-%m-%d %H:%M"), 1, stats, [fig])
    record["cpu"] = cpu_info()
    print(f"wrote {write_result(record, args.results.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
