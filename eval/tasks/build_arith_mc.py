"""Build ``alignkit_arith_mc.jsonl``: a deterministic arithmetic multiple-choice set for the lm-eval task.

Run from anywhere (the output lands next to this script)::

    python eval/tasks/build_arith_mc.py            # rewrites eval/tasks/alignkit_arith_mc/alignkit_arith_mc.jsonl
    python eval/tasks/build_arith_mc.py --check    # exits 1 if the committed file differs from a fresh build

Each row is ``{"id", "question", "choices", "label"}``: two-operand ``+``, ``-`` or ``*`` on small integers, four
numeric choices, one correct. Distractors are the near misses a weak model confuses with the answer (off by one,
off by ten, the wrong operation), so chance is 25% and a model that can actually add scores well above it.
The same seed always yields byte-identical output: the committed JSONL is reproducible and ``--check`` proves it.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "alignkit_arith_mc" / "alignkit_arith_mc.jsonl"
N_ROWS = 300
SEED = 1234
N_CHOICES = 4

_OPS = {
    "+": (lambda a, b: a + b, "plus"),
    "-": (lambda a, b: a - b, "minus"),
    "*": (lambda a, b: a * b, "times"),
}


def _distractors(a: int, b: int, op: str, answer: int, rng: random.Random) -> list[int]:
    """Three distinct wrong answers drawn from plausible mistakes, topped up with random near misses."""
    fn = {k: v[0] for k, v in _OPS.items()}
    pool = [answer + 1, answer - 1, answer + 10, answer - 10, answer + 2, answer - 2]
    pool += [fn[o](a, b) for o in _OPS if o != op]  # the wrong operation
    candidates = list(dict.fromkeys(x for x in pool if x != answer))  # dedupe, keep order for determinism
    rng.shuffle(candidates)
    picked = candidates[: N_CHOICES - 1]
    step = 3
    while len(picked) < N_CHOICES - 1:  # only when the pool collapsed (e.g. a*b == a+b)
        x = answer + step
        if x not in picked and x != answer:
            picked.append(x)
        step += 1
    return picked


def build_rows(n: int = N_ROWS, seed: int = SEED) -> list[dict]:
    """Generate ``n`` rows deterministically from ``seed`` (one private ``random.Random``, no global state)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        op = "+-*"[i % 3]  # balanced operations
        if op == "*":
            a, b = rng.randint(2, 12), rng.randint(2, 12)
        else:
            a, b = rng.randint(10, 99), rng.randint(1, 99)
        answer = _OPS[op][0](a, b)
        options = _distractors(a, b, op, answer, rng) + [answer]
        rng.shuffle(options)
        rows.append(
            {
                "id": i,
                "question": f"What is {a} {op} {b}?",
                "choices": [str(x) for x in options],
                "label": options.index(answer),
            }
        )
    return rows


def render(rows: list[dict]) -> str:
    return "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="verify the committed file instead of writing it")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    text = render(build_rows())
    if args.check:
        same = args.out.exists() and args.out.read_text(encoding="utf-8") == text
        print(f"{args.out}: {'up to date' if same else 'STALE, rerun build_arith_mc.py'}")
        return 0 if same else 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".jsonl.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(args.out)  # atomic: a reader never sees half a file
    print(f"wrote {N_ROWS} rows to {args.out} ({len(text.encode())} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
