"""Shared settings of the PPO peer comparison: one model, prompt set, reward, batch and number of updates.

Imported by both runners; it must work under TRL 1.16 (alignkit's venv) and TRL 1.12 (bench/.venv-trl112), so it
imports neither TRL nor alignkit's trainers.
"""

from __future__ import annotations

import json
import random
import re
import resource
import time
from pathlib import Path

SETTINGS = {
    "per_device_train_batch_size": 8,  # micro-batch = minibatch (no accumulation)
    "rollout": 16,  # sequences per rollout: 2 minibatches
    "num_ppo_epochs": 2,
    "response_length": 16,
    "temperature": 0.7,
    "learning_rate": 1e-4,
    "kl_coef": 0.1,  # fixed: TRL 1.12 has no adaptive controller
    "cliprange": 0.2,
    "cliprange_value": 0.2,
    "vf_coef": 0.1,
    "gamma": 1.0,
    "lam": 0.95,
    "lora_r": 16,
    "lora_alpha": 32,
    "seed": 0,
}
S_SEED = SETTINGS["seed"]
OUT = Path(__file__).parent / "out"
SEEDS = (0, 1, 2)  # the headline arm's seeds: reward curves are compared over these (issue 13)
_QUESTION = re.compile(r"What is (-?\d+) ([+*-]) (-?\d+)\?")


def prompts(n: int, seed: int = 0) -> list[str]:
    """Seeded arithmetic questions (the same strings for both trainers)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        op = rng.choice("+-*")
        a, b = (rng.randint(2, 30), rng.randint(2, 30)) if op != "*" else (rng.randint(2, 12), rng.randint(2, 9))
        out.append(f"What is {a} {op} {b}? Reply with just the number.")
    return out


def answer_of(question_text: str) -> str | None:
    """The reference answer, recomputed from the question text (so a tokens-only reward model can grade too)."""
    m = _QUESTION.search(question_text)
    if m is None:
        return None
    a, op, b = int(m.group(1)), m.group(2), int(m.group(3))
    return str({"+": a + b, "-": a - b, "*": a * b}[op])


def seeded(name: str, seed: int) -> str:
    """A runner's out/ JSON name for a seed: seed 0 (SETTINGS's) keeps the plain name, others get ``-seed<N>``."""
    return name if seed == S_SEED else f"{name}-seed{seed}"


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def completion_curves(lengths: list[int], ended: list[bool], rollout: int) -> dict[str, list[float]]:
    """Per rollout of ``rollout`` completions (in sampling order): the mean number of tokens before EOS
    (``length_curve``) and the share of completions that ended with EOS rather than at the length limit
    (``eos_rate_curve``). Both sides count alike: the EOS token itself is not counted."""
    n = len(lengths) // rollout
    cut = [slice(i * rollout, (i + 1) * rollout) for i in range(n)]
    return {
        "length_curve": [sum(lengths[c]) / rollout for c in cut],
        "eos_rate_curve": [sum(ended[c]) / rollout for c in cut],
    }


def memory_floor_mib(model, optimizer) -> dict[str, float]:
    """What a training process holds whatever its activations, in MiB, counted from the tensors after training:

    - ``parameters``: every parameter of ``model`` once (policy, critic, and the reference where it is the policy's
      base with adapters off), at its dtype;
    - ``gradients``: one gradient per trainable parameter, at its dtype (set to None between steps, but all alive
      at once at the end of every backward);
    - ``optimizer_state``: the optimizer's state tensors (AdamW: two moments per trainable parameter).

    Plus the RSS after imports (the probe's first mark), this is the floor under the peak RSS: the rest is
    activations, temporaries and the allocator's retention.
    """
    import torch

    params = {id(p): p for p in model.parameters()}.values()
    nbytes = lambda t: t.numel() * t.element_size()  # noqa: E731
    state = [t for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t)]
    return {
        "parameters": sum(map(nbytes, params)) / 2**20,
        "gradients": sum(nbytes(p) for p in params if p.requires_grad) / 2**20,
        "optimizer_state": sum(map(nbytes, state)) / 2**20,
    }


class Clock:
    """Wall time per PPO update (rollout + its epochs/minibatches), from the trainer's step-end callbacks."""

    def __init__(self) -> None:
        self.marks: list[float] = []

    def mark(self) -> None:
        self.marks.append(time.perf_counter())


def write(name: str, payload: dict) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.json"
    path.write_text(json.dumps(payload, indent=1))
    return path
