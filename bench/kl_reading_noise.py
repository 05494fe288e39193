"""How noisy is one rollout's KL reading? For a fixed PPO policy (a ppo-smol adapter), sample R rollouts of 64
completions the way ppo-smol does (temperature, 32 new tokens, no top-k/top-p) and read each rollout's sequence KL
to the reference (adapters off) three ways, all unbiased for the same KL:

- k1: Σ_t (log π(y_t) − log π_ref(y_t)), the reward's default estimator;
- k3: Σ_t (r_t − 1 − log r_t) with r_t = π_ref(y_t) / π(y_t), what PPO's controller reads (plugins/ppo/ppo_trainer.py);
- analytic: Σ_t KL(π(·|y_<t) ‖ π_ref(·|y_<t)), the exact KL of each next-token distribution over the whole
  vocabulary, summed along the sampled path (only the prefixes are sampled);
- top-k analytic: the same over π's top ``--top-k`` tokens with the rest pooled
  (:func:`~alignkit.plugins.common.kl_estimators.kl_topk_analytic`, a lower bound), what ``kl_reading: analytic``
  reads in training (plugins/ppo/ppo_analytic_kl.py); its gap to the full analytic value is the tail's bias.

Prints per rollout each reading's mean and standard error over the 64 sequences, then, over the rollouts, the mean,
the standard deviation across rollouts (the policy is fixed, so this is the reading's own noise) and the mean SE.
Analysis, not a benchmark (bench/run.py leaves it out); bench/results/efficacy.md (session 18) quotes a run of it.

    .venv/bin/alignkit train ppo-smol max_steps=40 output_dir=/tmp/ppo40 --no-eval   # or any PPO adapter
    OMP_NUM_THREADS=1 .venv/bin/python bench/kl_reading_noise.py /tmp/ppo40/checkpoint-40 --rollouts 6
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from alignkit.plugins.common.kl_estimators import kl_k1, kl_k3, kl_topk_analytic

ROWS = 64


def sequence_kls(
    policy, ids, attn, n_prompt: int, mask: torch.Tensor, temperature: float, chunk: int = 16, top_k: int = 64
):
    """(k1, k3, analytic, top-k analytic) per-sequence sums over the valid completion tokens, each (B,)."""
    k1s, k3s, ans, tops = [], [], [], []
    for i in range(0, ids.size(0), chunk):
        rows, rows_attn = ids[i : i + chunk], attn[i : i + chunk]
        logits = policy(input_ids=rows, attention_mask=rows_attn).logits[:, n_prompt - 1 : -1]
        logp = torch.log_softmax(logits.float() / temperature, -1)
        with policy.disable_adapter():
            logits = policy(input_ids=rows, attention_mask=rows_attn).logits[:, n_prompt - 1 : -1]
        ref = torch.log_softmax(logits.float() / temperature, -1)
        y = rows[:, n_prompt:, None]
        logp_y, ref_y = logp.gather(2, y)[..., 0], ref.gather(2, y)[..., 0]
        m = mask[i : i + chunk].float()
        k1s.append((kl_k1(logp_y, ref_y) * m).sum(1))
        k3s.append((kl_k3(logp_y, ref_y) * m).sum(1))
        ans.append(((logp.exp() * (logp - ref)).sum(-1) * m).sum(1))
        top_logp, top_ids = logp.topk(min(top_k, logp.size(-1)), dim=-1)
        tops.append((kl_topk_analytic(top_logp, ref.gather(2, top_ids))[0] * m).sum(1))
    return torch.cat(k1s), torch.cat(k3s), torch.cat(ans), torch.cat(tops)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("adapter", help="a PPO policy adapter directory (e.g. a ppo-smol checkpoint)")
    ap.add_argument("--rollouts", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--top-k", type=int, default=64, help="π's tokens per position for the top-k analytic reading")
    a = ap.parse_args()
    from peft import PeftModel

    from alignkit.data.cards import load_card, load_split
    from alignkit.models import load_tokenizer
    from alignkit.recipe import load_recipe
    from alignkit.train import load_model, recipe_model_path

    recipe = load_recipe("ppo-smol", ["output_dir=/tmp/alignkit-kl-reading-noise"])
    targs = recipe.training_args
    base = recipe_model_path(recipe)
    tok = load_tokenizer(base)
    policy = PeftModel.from_pretrained(load_model(recipe, base, tok), a.adapter).eval()
    # The recipe's training rows, as PPO draws them; rollout r takes rows 64r .. 64r+63.
    card = load_card(recipe.args.dataset)
    rows = load_split(card, "train", max_samples=recipe.args.max_train_samples, seed=targs.seed)
    if len(rows) < ROWS * a.rollouts:
        ap.error(f"--rollouts {a.rollouts} needs {ROWS * a.rollouts} prompts; the train split has {len(rows)}")
    tok.padding_side = "left"
    torch.manual_seed(a.seed)
    readings = {"k1": [], "k3": [], "analytic": [], f"top{a.top_k}": []}
    for r in range(a.rollouts):
        start = time.time()
        batch = rows[r * ROWS : (r + 1) * ROWS]
        texts = [tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in batch["prompt"]]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            out = policy.generate(
                **enc, max_new_tokens=targs.max_completion_length, do_sample=True, temperature=targs.temperature,
                top_k=0, top_p=1.0, pad_token_id=tok.pad_token_id,
            )  # fmt: skip
            n_prompt = enc["input_ids"].size(1)
            completion = out[:, n_prompt:]
            is_eos = completion == tok.eos_token_id
            width = completion.size(1)
            first = torch.where(is_eos.any(1), is_eos.float().argmax(1), torch.full((len(completion),), width))
            mask = torch.arange(width)[None] <= first[:, None]  # up to and including EOS, as PPO's completion mask
            attn = torch.cat([enc["attention_mask"], mask.long()], 1)
            sums = sequence_kls(policy, out, attn, n_prompt, mask, targs.temperature, top_k=a.top_k)
        for name, s in zip(readings, sums, strict=True):
            readings[name].append((s.mean().item(), (s.std() / len(s) ** 0.5).item()))
        cells = "  ".join(f"{k} {v[-1][0]:.3f} ± {v[-1][1]:.3f}" for k, v in readings.items())
        print(f"rollout {r}: {cells}  ({time.time() - start:.0f} s)", flush=True)
    for name, values in readings.items():
        means, ses = [m for m, _ in values], [s for _, s in values]
        spread = statistics.stdev(means) if len(means) > 1 else float("nan")
        print(
            f"{name}: mean {statistics.fmean(means):.3f}, sd across rollouts {spread:.3f}, "
            f"mean SE {statistics.fmean(ses):.3f}"
        )


if __name__ == "__main__":
    main()
