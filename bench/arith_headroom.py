"""How much an RL recipe can raise held-out arithmetic accuracy: the start model's greedy accuracy against its pass@k.

RL on a grader (ppo-smol, grpo-smol-*) can only reinforce answers the policy already samples: a problem it never
answers correctly in k samples gives no positive reward. So the share of held-out problems solved at least once in
k samples (pass@k) bounds what a short RL run can bring greedy decoding up to, and ``pass@k - greedy`` is the
headroom that issue 12's accuracy-gain goal (>= 0.20) has to fit in.

Measured on the card's held-out rows (``arith-smol`` test split, ``--n`` rows, seed 0) with ppo-smol's model, prompt
and ``max_completion_length`` (32), under the recipe's grader (``math_answer``): greedy accuracy, mean sample
accuracy, pass@k at ``--temperature`` (default 0.7, ppo-smol's), and the histogram of correct samples per problem.
HF ``generate`` in the recipe's precision (bf16 autocast where the CPU has it). One run, no goal: it explains the gap.

    OMP_NUM_THREADS=1 .venv/bin/python bench/arith_headroom.py                    # 64 test rows, k=8: ~75 s
    .venv/bin/python bench/arith_headroom.py --quick                              # tiny model, 4 rows, temp dir
"""

from __future__ import annotations

import argparse
import collections
import time
from contextlib import nullcontext

import torch
from benchlib import bench_model_path, command_line, figure, result_record, results_dir, write_result
from ppo_efficacy import accuracy  # the greedy accuracy ppo-smol's own figure is measured with


def measure(n: int, k: int, temperature: float, quick: bool) -> dict:
    from alignkit.data.cards import load_card, load_split
    from alignkit.models import load_tokenizer
    from alignkit.recipe import load_recipe
    from alignkit.train import load_model, recipe_model_path, reward_funcs_for

    overrides = ["output_dir=/tmp/alignkit-arith-headroom"]
    if quick:
        overrides.append(f"model_name_or_path={bench_model_path(True)}")
    recipe = load_recipe("ppo-smol", overrides)
    path = recipe_model_path(recipe)
    tokenizer = load_tokenizer(path)
    tokenizer.padding_side = "left"
    model = load_model(recipe, path, tokenizer).eval()
    rows = load_split(load_card(recipe.args.dataset), "test", max_samples=n, seed=0)
    grader = reward_funcs_for(recipe)[0]
    max_new = recipe.training_args.max_completion_length
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if recipe.training_args.bf16 else nullcontext()
    start = time.time()
    greedy = accuracy(model, tokenizer, rows, grader, max_new, autocast=recipe.training_args.bf16)["accuracy"]
    torch.manual_seed(0)  # greedy decoding draws no random numbers: the samples do not depend on it
    hits = []
    for i in range(0, len(rows), 16):
        batch = rows[i : i + 16]
        texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in batch["prompt"]]
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad(), ctx:
            s = model.generate(
                **enc,
                do_sample=True,
                temperature=temperature,
                num_return_sequences=k,
                max_new_tokens=max_new,
                pad_token_id=tokenizer.pad_token_id,
            )
        width = enc["input_ids"].shape[1]
        extra = {key: v for key, v in batch.items() if key != "prompt"}
        repeated = {key: [x for x in v for _ in range(k)] for key, v in extra.items()}
        prompts = [p for p in batch["prompt"] for _ in range(k)]
        scores = grader(prompts, tokenizer.batch_decode(s[:, width:], skip_special_tokens=True), **repeated)
        hits += [sum(x or 0.0 for x in scores[j * k : (j + 1) * k]) for j in range(len(batch["prompt"]))]
    count = len(hits)
    return {
        "rows": count,
        "k": k,
        "temperature": temperature,
        "max_new_tokens": max_new,
        "greedy_accuracy": greedy,
        "sample_accuracy": sum(hits) / (count * k),
        f"pass_at_{k}": sum(h > 0 for h in hits) / count,
        "headroom": sum(h > 0 for h in hits) / count - greedy,
        "correct_per_problem": {str(int(c)): m for c, m in sorted(collections.Counter(hits).items())},
        "seconds": round(time.time() - start, 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=64, help="held-out rows")
    parser.add_argument("--k", type=int, default=8, help="samples per problem")
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--quick", action="store_true", help="tiny model, 4 rows, k=2; results to a temp dir")
    a = parser.parse_args(argv)
    n, k = (4, 2) if a.quick else (a.n, a.k)
    stats = measure(n, k, a.temperature, a.quick)
    print(stats, flush=True)
    fig = figure(
        "arith_headroom.pass_at_k_minus_greedy",
        f"start model on arith-smol: pass@{k} minus greedy accuracy (headroom for an RL accuracy gain)",
        "none: bounds the ppo/grpo accuracy-gain goal (0.20)",
        stats["headroom"],
        None,
        f"share of {stats['rows']} held-out problems solved in >= 1 of {k} samples at T={a.temperature}, minus greedy",
        also=[
            {"statistic": "greedy accuracy", "measured": stats["greedy_accuracy"], "met": None},
            {"statistic": f"pass@{k}", "measured": stats[f"pass_at_{k}"], "met": None},
        ],
    )
    record = result_record(
        "arith_headroom", command_line(argv), time.strftime("%Y-%m-%d %H:%M"), torch.get_num_threads(), stats, [fig]
    )
    print(f"wrote {write_result(record, results_dir(a.quick))}")


if __name__ == "__main__":
    main()
