"""Do reward models trained alike agree? Within-prompt agreement on the policy's own sampled replies.

An analysis of finished runs, not a timed bench (no result JSON): it scores the sampled replies of an on-policy pair
build (the ``.samples-*`` directory its card keeps in the dataset cache: per prompt the policy's samples and greedy
reply) with each given reward model, and prints

* each model's held-out pair accuracy on the test pairs of the given cards (chosen vs rejected, strict ``>``);
* for every two models, the within-prompt correlation of their scores (:func:`within_prompt_corr`): what the pair
  builder uses is the ranking inside one prompt, so a prompt's mean score does not count;
* for every two models, how often the first one's pair (best complete reply vs worst reply, the card's
  ``chosen_complete`` rule) is ordered the same way by the second (:func:`pair_agreement`).

How session 11 used it (2026-12-04, Intel Xeon with AMX, in the workdir of a cold ``make``, whose cache holds the
cards and the samples)::

    export ALIGNKIT_CACHE=$PWD/cache
    for s in 1 2; do for lr in 2.0e-4 1.0e-3; do
      alignkit train rm-smol seed=$s learning_rate=$lr output_dir=runs/rm-lr$lr-s$s --no-eval --overwrite
    done; done
    python bench/rm_agreement.py runs/rm-lr*-s* --samples cache/datasets/onpolicy-pairs/.samples-*
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def within_prompt_corr(a: np.ndarray, b: np.ndarray, groups: np.ndarray) -> float:
    """Pearson correlation of two score vectors after subtracting each prompt's mean from both:
    ``corr(a_ij - mean_j a_ij, b_ij - mean_j b_ij)`` over replies ``j`` of prompts ``i`` (``groups`` names the
    prompt of each reply). NaN when either side is constant within every prompt."""
    a, b, groups = np.asarray(a, float), np.asarray(b, float), np.asarray(groups)
    da, db = a.copy(), b.copy()
    for g in np.unique(groups):
        m = groups == g
        da[m] -= a[m].mean()
        db[m] -= b[m].mean()
    if da.std() == 0 or db.std() == 0:
        return float("nan")
    return float(np.corrcoef(da, db)[0, 1])


def pick_pair(scores: np.ndarray, complete: np.ndarray) -> tuple[int, int] | None:
    """The pair builder's choice with ``chosen_complete``: (best-scoring complete reply, worst-scoring reply), or
    None when no reply is complete or both are the same reply."""
    idx = np.flatnonzero(complete)
    if idx.size == 0:
        return None
    chosen, rejected = int(idx[np.argmax(scores[idx])]), int(np.argmin(scores))
    return None if chosen == rejected else (chosen, rejected)


def pair_agreement(picker: list[np.ndarray], judge: list[np.ndarray], complete: list[np.ndarray]) -> float:
    """Share of the prompts where ``judge`` scores ``picker``'s chosen reply above its rejected one (per prompt
    arrays of scores and of complete flags)."""
    hits = []
    for p, j, c in zip(picker, judge, complete, strict=True):
        pair = pick_pair(p, c)
        if pair is not None:
            hits.append(j[pair[0]] > j[pair[1]])
    return float(np.mean(hits)) if hits else float("nan")


def load_samples(samples_dir: str) -> list[dict]:
    """The records of an on-policy build's samples directory: ``{id, responses, truncated}`` per prompt."""
    rows = []
    for path in sorted(Path(samples_dir).glob("train-*.json")):
        for rec in json.loads(path.read_text(encoding="utf-8"))["records"]:  # alignkit.data.onpolicy_samples
            rows.append({k: rec[k] for k in ("id", "responses", "truncated")})
    if not rows:
        raise SystemExit(f"rm_agreement: no train-*.json records in {samples_dir}")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="finished reward-model run directories")
    parser.add_argument("--samples", required=True, help="an on-policy build's .samples-* directory")
    parser.add_argument("--prompts", default="role:policy", help="the build's prompt reference (its `prompts` arg)")
    parser.add_argument("--cards", default="sharegpt-pairs-smol,sharegpt-judge-pairs-smol", help="test pairs")
    parser.add_argument("--precision", default="fast", help="the scorers' precision (the smol suite's)")
    a = parser.parse_args(argv)

    from alignkit.data.onpolicy_prompts import load_pool
    from alignkit.eval.judge_info import heldout_pair_accuracy
    from alignkit.eval.rm_score import load_reward_scorer, resolve_reward_model

    samples = load_samples(glob.glob(a.samples)[0] if "*" in a.samples else a.samples)
    prompts = {r["id"]: r["prompt"] for r in load_pool(a.prompts, "train", "answer").rows}
    flat_prompts = [prompts[r["id"]] for r in samples for _ in r["responses"]]
    flat_replies = [text for r in samples for text in r["responses"]]
    groups = np.array([i for i, r in enumerate(samples) for _ in r["responses"]])
    complete = [~np.array(r["truncated"], dtype=bool) for r in samples]
    names, scores, accuracy = [], [], []
    for run in a.runs:
        resolved = resolve_reward_model(f"run:{Path(run).name}", Path(run).parent)
        if resolved is None:
            raise SystemExit(f"rm_agreement: {run} is not a finished reward-model run")
        base, adapter = resolved
        scorer = load_reward_scorer(base, adapter, precision=a.precision)
        s = np.asarray(scorer(flat_prompts, flat_replies), dtype=float)
        accs = [heldout_pair_accuracy(scorer, card, "test", 64) for card in a.cards.split(",")]
        n = sum(x["n"] for x in accs)
        names.append(Path(run).name)
        scores.append(s)
        accuracy.append((sum(x["value"] * x["n"] for x in accs) / n, n))
    per_prompt = [[s[groups == i] for i in range(len(samples))] for s in scores]
    print(f"{len(samples)} prompts, {len(flat_replies)} replies; held-out pairs: {a.cards}\n")
    print("| model | held-out pair accuracy | " + " | ".join(f"r with {n}" for n in names) + " |")
    print("|---|---|" + "---|" * len(names))
    for i, n in enumerate(names):
        cells = [f"{within_prompt_corr(scores[i], scores[j], groups):.2f}" for j in range(len(names))]
        print(f"| {n} | {accuracy[i][0]:.3f} (n={accuracy[i][1]}) | " + " | ".join(cells) + " |")
    print("\nPair agreement (row picks best complete vs worst, column orders them the same way):\n")
    print("| picker | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for i, n in enumerate(names):
        cells = [f"{pair_agreement(per_prompt[i], per_prompt[j], complete):.2f}" for j in range(len(names))]
        print(f"| {n} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
