"""PPO efficacy on the CPU: does ppo-smol (LoRA PPO + adaptive KL, math_answer reward) raise held-out arithmetic
accuracy over the base model, and does the adaptive controller hold the measured KL near its target?

Greedy held-out accuracy of the base model (adapters disabled) and of the trained policy on the same prompts; the
per-rollout KL and β come from the trainer's log. Results go to bench/results/ppo_efficacy.md with the command.

    .venv/bin/python bench/ppo_efficacy.py [--max-steps 24] [--kl-target 0.5] [--kl-horizon 16] [--eval 100]

Data: the ``arith-smol`` card through ``alignkit.data.cards.load_split`` when it is available, else the same kind of
seeded synthetic prompts built here (the report says which).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

import torch
from datasets import Dataset
from peft import LoraConfig

from alignkit.io import atomic_write_text
from alignkit.models import materialize_embedded
from alignkit.plugins.graders import MathAnswer
from alignkit.plugins.ppo import PPOConfig, PPOTrainer

RESULTS = Path(__file__).parent / "results" / "ppo_efficacy.md"


def synthetic_arith(n: int, seed: int) -> Dataset:
    """Seeded a ± b / a × b prompts (conversational, prompt-only) with an ``answer`` column."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        op = rng.choice("+-*")
        a, b = (rng.randint(2, 30), rng.randint(2, 30)) if op != "*" else (rng.randint(2, 12), rng.randint(2, 9))
        value = {"+": a + b, "-": a - b, "*": a * b}[op]
        question = f"What is {a} {op} {b}? Reply with just the number."
        rows.append({"prompt": [{"role": "user", "content": question}], "answer": str(value)})
    return Dataset.from_list(rows)


def load_data(n_train: int, n_eval: int, seed: int) -> tuple[Dataset, Dataset, str]:
    try:
        from alignkit.data.cards import load_card, load_split

        card = load_card("arith-smol")
        train = load_split(card, "train", max_samples=n_train, seed=seed)
        test = load_split(card, "test", max_samples=n_eval, seed=seed)
        return train, test, "card arith-smol (alignkit.data.cards.load_split)"
    except ImportError:
        # Disjoint seeds: train and held-out prompts are drawn independently (overlap only by chance).
        return synthetic_arith(n_train, seed), synthetic_arith(n_eval, seed + 1), "synthetic (bench/ppo_efficacy.py)"


@torch.no_grad()
def accuracy(model, tokenizer, dataset: Dataset, max_new_tokens: int, batch: int = 16) -> float:
    """Greedy accuracy under the math_answer grader."""
    grader = MathAnswer()
    tokenizer.padding_side = "left"
    correct = 0.0
    for i in range(0, len(dataset), batch):
        rows = dataset[i : i + batch]
        texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in rows["prompt"]]
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        out = model.generate(
            **enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )
        completions = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        correct += sum(grader(rows["prompt"], completions, answer=rows["answer"]))
    return correct / len(dataset)


def _env() -> str:
    threads = os.environ.get("OMP_NUM_THREADS")
    return f"OMP_NUM_THREADS={threads} " if threads else ""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-steps", type=int, default=24)
    ap.add_argument("--kl-target", type=float, default=0.5)
    ap.add_argument("--beta", type=float, default=0.05)
    ap.add_argument("--kl-horizon", type=float, default=16)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--train", type=int, default=400)
    ap.add_argument("--eval", type=int, default=100)
    ap.add_argument("--out", default="/tmp/alignkit-ppo-efficacy")
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args()
    torch.manual_seed(0)
    model_path = str(materialize_embedded())
    train, test, source = load_data(a.train, a.eval, seed=0)
    args = PPOConfig(
        output_dir=a.out, per_device_train_batch_size=8, gradient_accumulation_steps=1, steps_per_generation=2,
        num_iterations=2, num_generations=1, max_completion_length=16, temperature=0.7, learning_rate=a.lr,
        max_steps=a.max_steps, beta=a.beta, kl_target=a.kl_target, kl_horizon=a.kl_horizon, kl_estimator="k1",
        gamma=1.0, lam=0.95, vf_coef=0.1, missing_eos_penalty=0.5, logging_steps=1, save_strategy="no",
        bf16=False, use_cpu=True, gradient_checkpointing=False, report_to="none", seed=0,
    )  # fmt: skip
    lora = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = PPOTrainer(model_path, [MathAnswer()], args=args, train_dataset=train, peft_config=lora)
    policy, tok = trainer.model, trainer.processing_class

    start = time.time()
    with policy.disable_adapter():
        base_acc = accuracy(policy, tok, test, args.max_completion_length)
    eval_seconds = time.time() - start
    print(f"base accuracy {base_acc:.3f} ({eval_seconds:.0f} s)", flush=True)
    start = time.time()
    trainer.train()
    train_seconds = time.time() - start
    ppo_acc = accuracy(policy, tok, test, args.max_completion_length)

    rollouts = [h for h in trainer.state.log_history if "kl" in h]
    kls = [h["kl"] for h in rollouts]
    last = kls[len(kls) // 2 :]
    in_band = sum(abs(k / a.kl_target - 1) <= 0.25 for k in last)
    summary = {
        "data": source, "train_rows": len(train), "eval_rows": len(test),
        "base_accuracy": base_acc, "ppo_accuracy": ppo_acc, "train_seconds": round(train_seconds, 1),
        "eval_seconds_base": round(eval_seconds, 1), "optimizer_steps": trainer.state.global_step,
        "rollouts": len(rollouts), "kl_target": a.kl_target,
        "kl_last_half_mean": statistics.fmean(last) if last else float("nan"),
        "kl_last_half_in_band": f"{in_band}/{len(last)}",
    }  # fmt: skip
    print(json.dumps(summary, indent=1))
    if a.no_write:
        return
    lines = [
        "# PPO efficacy (ppo-smol settings, CPU)",
        "",
        f"Command: `{_env()}.venv/bin/python bench/ppo_efficacy.py {' '.join(sys.argv[1:])}`".replace(" `", "`"),
        f"Machine: {os.cpu_count()} CPU cores (shared), torch {torch.__version__}, threads {torch.get_num_threads()}.",
        "",
        "| metric | value |",
        "|---|---|",
        *[f"| {k} | {v:.3f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in summary.items()],
        "",
        "Per rollout (KL = mean over sequences of Σ_t k1_t; β before its update; score = math_answer − EOS penalty):",
        "",
        "| step | kl | kl_coef | score | math_answer | value/explained_variance |",
        "|---|---|---|---|---|---|",
        *[
            f"| {h['step']} | {h['kl']:.3f} | {h['kl_coef']:.4f} | {h['score']:.3f} | "
            f"{h['rewards/math_answer/mean']:.3f} | {h['value/explained_variance']:.3f} |"
            for h in rollouts
        ],
        "",
    ]
    atomic_write_text(RESULTS, "\n".join(lines))


if __name__ == "__main__":
    main()
