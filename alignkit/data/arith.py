"""Seeded synthetic arithmetic: verifiable prompt-only problems with an ``answer`` column, for GRPO/PPO.

Each problem is ``a <op> b`` with small non-negative operands. The split is a hash of the expression itself, so a
problem can never appear in both train and test, whatever the seed or sizes. Difficulty widens the operand range:

====  ===========  ==============  ===========================
level  + and -      x               subtraction
====  ===========  ==============  ===========================
1     0..20        (none)          never negative
2     0..99        0..12 x 0..12   never negative
3     0..999       0..99 x 0..99   may be negative
====  ===========  ==============  ===========================
"""

from __future__ import annotations

import operator
import os
import random
import re
from typing import Any

from alignkit.data.splits import split_of
from alignkit.data.store import BuildResult, cached_build
from alignkit.errors import AlignkitError

NAME = "arith-smol"
BUILDER_VERSION = 1
PROMPT = "What is {expression}? Answer with just the number."
OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul}
LEVELS: dict[int, dict[str, Any]] = {
    1: {"add_max": 20, "mul_max": 0, "ops": "+-", "negative": False},
    2: {"add_max": 99, "mul_max": 12, "ops": "+-*", "negative": False},
    3: {"add_max": 999, "mul_max": 99, "ops": "+-*", "negative": True},
}
_NUMBER = re.compile(r"-?\d[\d,]*")


def _problem(rng: random.Random, level: dict[str, Any]) -> tuple[int, str, int]:
    op = rng.choice(level["ops"])
    top = level["mul_max"] if op == "*" else level["add_max"]
    a, b = rng.randint(0, top), rng.randint(0, top)
    if op == "-" and not level["negative"] and a < b:
        a, b = b, a
    return a, op, b


def make_problems(
    n_train: int, n_test: int, difficulty: int = 2, seed: int = 0, test_fraction: float = 0.2
) -> dict[str, list[dict[str, Any]]]:
    """Draw unique problems until both splits are full; rows ``{id, prompt, answer, expression, difficulty}``.

    ``prompt`` is conversational (one user turn); ``answer`` is the integer as a string, what a math grader
    compares against."""
    if difficulty not in LEVELS:
        raise AlignkitError(f"arith difficulty must be one of {sorted(LEVELS)}, got {difficulty}")
    level = LEVELS[difficulty]
    space = 2 * (level["add_max"] + 1) ** 2 + ("*" in level["ops"]) * (level["mul_max"] + 1) ** 2
    if n_train + n_test > space // 2:  # past half the space, rejection sampling crawls and splits skew
        raise AlignkitError(
            f"arith difficulty {difficulty} has only ~{space} distinct problems; ask for at most {space // 2} "
            f"(got n_train={n_train} + n_test={n_test}) or raise the difficulty"
        )
    rng = random.Random(f"arith-{seed}-{difficulty}")
    want = {"train": n_train, "test": n_test}
    splits: dict[str, list[dict[str, Any]]] = {"train": [], "test": []}
    seen: set[str] = set()
    while any(len(splits[s]) < want[s] for s in want):
        a, op, b = _problem(rng, level)
        expression = f"{a} {op} {b}"
        if expression in seen:
            continue
        seen.add(expression)
        split = split_of(expression, test_fraction)
        if len(splits[split]) >= want[split]:
            continue
        splits[split].append(
            {
                "id": f"arith-{a}{op}{b}",
                "prompt": [{"role": "user", "content": PROMPT.format(expression=expression)}],
                "answer": str(OPS[op](a, b)),
                "expression": expression,
                "difficulty": difficulty,
            }
        )
    return splits


def build_arith(
    n_train: int = 2000,
    n_test: int = 200,
    *,
    difficulty: int = 2,
    seed: int = 0,
    cache_root: str | os.PathLike | None = None,
    force: bool = False,
) -> BuildResult:
    """Build (or reuse) the arithmetic set; instant, cached only so every card builds the same way."""
    params = dict(n_train=n_train, n_test=n_test, difficulty=difficulty, seed=seed)
    fingerprint = {"builder": "alignkit.data.arith:build_arith", "version": BUILDER_VERSION, **params}

    def produce() -> tuple[dict[str, list[dict[str, Any]]], dict[str, Any]]:
        splits = make_problems(n_train, n_test, difficulty, seed)
        report = [f"generated {n_train} train + {n_test} test problems at difficulty {difficulty} (seed {seed})"]
        return splits, {"builder": fingerprint["builder"], "params": params, "report": report}

    return cached_build(NAME, fingerprint, produce, cache_root=cache_root, force=force)


def reply_number(text: str) -> str | None:
    """The number a reply answers with: the first integer after its first ``=`` if any (small models echo the
    expression: ``"12 * 8 = 104"``), else its first integer; commas removed (``"It is 1,204."`` -> ``"1204"``)."""
    _, equals, after = text.partition("=")
    match = _NUMBER.search(after if equals else text)
    return match.group(0).replace(",", "") if match else None


def base_accuracy(
    model_path: str | os.PathLike | None = None,
    n: int = 96,
    difficulty: int = 2,
    batch_size: int = 64,
    max_new_tokens: int = 16,
) -> dict[str, Any]:
    """Greedy accuracy of a model on ``n`` held-out problems, overall and per operator.

    Lenient scoring (:func:`reply_number`), so it measures arithmetic rather than format-following: the point
    is to check that an RL run has signal (some right, some wrong)."""
    from alignkit.data.generate import generate_replies
    from alignkit.models import materialize_embedded

    path = model_path or materialize_embedded()
    rows = make_problems(0, n, difficulty)["test"]
    replies, stats = generate_replies(
        path, [r["prompt"] for r in rows], batch_size=batch_size, max_new_tokens=max_new_tokens, desc="arith"
    )
    right = [reply_number(reply) == row["answer"] for row, reply in zip(rows, replies, strict=True)]
    by_op: dict[str, list[bool]] = {}
    for row, ok in zip(rows, right, strict=True):
        by_op.setdefault(row["expression"].split()[1], []).append(ok)
    return {
        "model": str(path),
        "n": n,
        "difficulty": difficulty,
        "accuracy": round(sum(right) / len(right), 3),
        "by_op": {op: f"{sum(v)}/{len(v)}" for op, v in sorted(by_op.items())},
        "examples": [f"{r['expression']} -> {reply!r}" for r, reply in list(zip(rows, replies, strict=True))[:6]],
        "generation": stats.as_dict(),
    }
