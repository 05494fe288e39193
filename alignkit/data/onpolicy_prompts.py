"""Prompts for on-policy pairs: where they come from, which ones a build takes, and what identifies them.

A prompt reference is one of:

- ``role:NAME`` -- the ShareGPT prompts of one role (``policy``, ``proxy`` or ``judge``, see
  :mod:`alignkit.data.splits`); held-out prompts are the ``test`` role; the reference answer (column ``answer``) is
  the ShareGPT reply, for graders such as ``edit_distance``;
- ``card:NAME`` -- a dataset card's ``train`` split (held-out: its ``test`` split), e.g. ``card:arith-smol``, whose
  ``answer`` column a ``math_answer`` grader reads;
- a ``.jsonl``/``.json`` file of rows with ``prompt`` (a string or chat messages) or ``messages``; no held-out split.

Rows become ``{id, prompt: messages, reference}``; a row without an ``id`` gets a hash of its prompt. Which rows a
build takes is a pure function of their ids: ordered by a seeded hash, then ``[offset, offset + n)``, so adding
rows to a source never reshuffles the chosen prompts and round k of an iterative run can take fresh ones.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignkit.chat_format import Messages, as_messages
from alignkit.data.splits import unit_interval
from alignkit.errors import AlignkitError

ROLE_PREFIX, CARD_PREFIX = "role:", "card:"
TRAIN_ROLES = ("policy", "proxy", "judge")


@dataclass
class PromptPool:
    """The candidate prompts of one split and what identifies them (for the cache key)."""

    ref: str
    rows: list[dict[str, Any]]  # {id, prompt, reference}
    identity: dict[str, Any]
    has_reference: bool
    columns: list[str]
    is_file: bool = False  # a prompt file: no held-out split


def _hash_id(prompt: Messages) -> str:
    return "p-" + hashlib.sha256(json.dumps(prompt, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


def _rows_to_prompts(ref: str, rows: list[dict[str, Any]], reference_column: str) -> list[dict[str, Any]]:
    out = []
    for i, row in enumerate(rows):
        if "prompt" in row:
            prompt = as_messages(row["prompt"])
        elif "messages" in row:
            turns = as_messages(row["messages"])
            prompt = turns[:-1] if turns and turns[-1].get("role") == "assistant" else turns
        else:
            raise AlignkitError(f"prompts '{ref}': row {i} has neither 'prompt' nor 'messages' (has {sorted(row)})")
        if not prompt or not any(str(m.get("content") or "").strip() for m in prompt):
            raise AlignkitError(f"prompts '{ref}': row {i} has an empty prompt")
        out.append(
            {"id": str(row.get("id") or _hash_id(prompt)), "prompt": prompt, "reference": row.get(reference_column)}
        )
    return out


def load_pool(
    ref: str,
    split: str,
    reference_column: str = "answer",
    source: str | os.PathLike | None = None,
    cache_root: str | os.PathLike | None = None,
) -> PromptPool:
    """The candidate prompts of ``split`` (``train`` or ``test``) of a prompt reference (module docstring)."""
    if ref.startswith(ROLE_PREFIX):
        from alignkit.data.sharegpt import build_sft, rows_of_role

        role = ref[len(ROLE_PREFIX) :]
        if role not in TRAIN_ROLES:
            raise AlignkitError(f"prompts '{ref}': role must be one of {', '.join(TRAIN_ROLES)} (test is held out)")
        sft = build_sft(source, cache_root=cache_root)
        rows = [
            {"id": r["id"], "prompt": r["messages"][:1], "answer": r["messages"][1]["content"]}
            for r in rows_of_role(sft, role if split == "train" else "test")
        ]
        identity = {"sft": sft.manifest["key"], "role": role, "split": split}
        columns = ["id", "prompt", "answer"]
    elif ref.startswith(CARD_PREFIX) or Path(ref).suffix not in (".jsonl", ".json"):
        from alignkit.data.cards import load_card, load_split

        name = ref.removeprefix(CARD_PREFIX)
        card = load_card(name)
        rows = [dict(r) for r in load_split(card, split)]
        columns = sorted(rows[0]) if rows else sorted(card.columns.values())
        identity = {"card": card.name, "split": split, "rows_sha256": _rows_hash(rows)}
    else:
        path = Path(ref).expanduser()
        if not path.is_file():
            raise AlignkitError(f"prompts '{ref}': file {path} does not exist")
        if split != "train":
            rows = []
        else:
            text = path.read_text(encoding="utf-8")
            try:
                rows = (
                    json.loads(text)
                    if path.suffix == ".json"
                    else [json.loads(x) for x in text.splitlines() if x.strip()]
                )
            except json.JSONDecodeError as exc:
                raise AlignkitError(f"prompts '{ref}': invalid JSON ({exc.msg}, line {exc.lineno})") from None
        columns = sorted(rows[0]) if rows else []
        identity = {"file": str(path), "rows_sha256": _rows_hash(rows)}
    has_reference = bool(rows) and all(reference_column in r for r in rows)
    prompts = _rows_to_prompts(ref, rows, reference_column)
    return PromptPool(ref, prompts, identity, has_reference, columns, is_file="file" in identity)


def _rows_hash(rows: list[dict[str, Any]]) -> str:
    return hashlib.sha256(json.dumps(rows, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()


def pick(rows: list[dict[str, Any]], n: int, seed: int, offset: int = 0) -> list[dict[str, Any]]:
    """Rows ``[offset, offset + n)`` in the order of a seeded hash of their ids (module docstring)."""
    ordered = sorted(rows, key=lambda r: (unit_interval(r["id"], salt=f"onpolicy-{seed}"), r["id"]))
    return ordered[offset : offset + n]
