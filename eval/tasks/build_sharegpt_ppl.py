"""Build ``alignkit_sharegpt_ppl.jsonl``: held-out ShareGPT assistant answers for the rolling-perplexity task.

Run from anywhere (the output lands next to this script)::

    python eval/tasks/build_sharegpt_ppl.py            # rewrites eval/tasks/alignkit_sharegpt_ppl/*.jsonl
    python eval/tasks/build_sharegpt_ppl.py --check    # exits 1 if the committed file differs from a fresh build

Rows are ``{"id", "prompt", "text"}``: ``text`` is the assistant answer that the task scores with lm-eval's
``loglikelihood_rolling`` (perplexity of the answer on its own, without the prompt as context, as wikitext is
scored); ``prompt`` is kept only so a reader can see what was asked. They come from the **test** split of the
``sharegpt-sft-smol`` dataset card (:mod:`alignkit.data.cards`; split by conversation id, so no held-out answer was
trained on), ordered by id and cut at ``N_ROWS`` (ids are random strings, so this is an unbiased sample).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "alignkit_sharegpt_ppl" / "alignkit_sharegpt_ppl.jsonl"
N_ROWS = 200
CARD = "sharegpt-sft-smol"


def held_out_rows(split: str = "test") -> list[dict[str, Any]]:
    """The card's raw ``{id, messages}`` rows of ``split``, built with the card's own builder arguments.

    ``build(card).rows`` rather than ``load_split``: the latter keeps only TRL's columns and drops the ``id`` we
    order by (and that a test uses to prove every row is held out)."""
    try:
        from alignkit.data.cards import build, load_card
    except ImportError:  # a tree without dataset cards: the builder with its defaults gives the same split
        from alignkit.data.sharegpt import build_sft

        return build_sft().rows(split)
    card = load_card(CARD)
    return build(card).rows(card.splits[split])


def build_rows(rows: list[dict[str, Any]], n: int = N_ROWS) -> list[dict[str, str]]:
    """Pick ``n`` rows by id order and flatten each to ``{id, prompt, text}``."""
    out = []
    for row in sorted(rows, key=lambda r: r["id"]):
        by_role = {m["role"]: m["content"] for m in row["messages"]}
        if by_role.get("assistant", "").strip():
            out.append({"id": row["id"], "prompt": by_role.get("user", ""), "text": by_role["assistant"]})
        if len(out) == n:
            break
    return out


def render(rows: list[dict[str, str]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="verify the committed file instead of writing it")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    text = render(build_rows(held_out_rows()))
    if args.check:
        same = args.out.exists() and args.out.read_text(encoding="utf-8") == text
        print(f"{args.out}: {'up to date' if same else 'STALE, rerun build_sharegpt_ppl.py'}")
        return 0 if same else 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".jsonl.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(args.out)  # atomic: a reader never sees half a file
    print(f"wrote {text.count(chr(10))} rows to {args.out} ({len(text.encode())} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
