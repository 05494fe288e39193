"""Prompt sets: rows from a registered source, turned into chat prompts (+ reference answers and completions).

A suite's prompt set names a ``source`` in :data:`alignkit.eval.registries.PROMPT_SOURCES` (default: ``file`` for a
``.json``/``.jsonl`` path, else ``card``) and a ``card`` (the source's reference: a dataset card name or a file path).
The held-out texts of perplexity and the pairs of preference load through the same sources.

Rows are TRL-format: ``prompt`` (+ ``completion`` or ``chosen``) or ``messages`` (the final assistant turn is the
answer).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignkit.chat_format import Messages, as_messages
from alignkit.errors import AlignkitError
from alignkit.eval.registries import PROMPT_SOURCES


@dataclass
class PromptData:
    """A loaded prompt set: chat prompts, optional reference answers (graded sets) and reference completions."""

    spec: Any  # alignkit.eval.suite.PromptSet
    prompts: list[Messages]
    references: list[Any] | None = None
    completions: list[str] | None = None  # the dataset's own answers (held-out texts)


def default_source(ref: str) -> str:
    """``file`` for a ``.json``/``.jsonl`` path, else ``card``."""
    return "file" if Path(ref).suffix in (".jsonl", ".json") else "card"


@PROMPT_SOURCES.register("file")
def file_rows(ref: str, split: str, n: int) -> list[dict[str, Any]]:
    """The first ``n`` rows of a local JSON list or JSONL file (``split`` is ignored: one file, one split)."""
    path = Path(ref)
    if not path.is_file():
        raise AlignkitError(f"prompt file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    rows = json.loads(text) if path.suffix == ".json" else [json.loads(x) for x in text.splitlines() if x.strip()]
    return rows[:n]


@PROMPT_SOURCES.register("card")
def card_rows(ref: str, split: str, n: int) -> list[dict[str, Any]]:
    """The first ``n`` rows of a dataset card's split (:mod:`alignkit.data.cards`)."""
    try:
        from alignkit.data.cards import load_card, load_split
    except ImportError as exc:
        raise AlignkitError(f"dataset cards are unavailable ({exc}); cannot load card '{ref}'") from exc
    return list(load_split(load_card(ref), split, n))


def load_rows(ref: str, split: str, n: int, source: str | None = None) -> list[dict[str, Any]]:
    """Rows from the source named ``source`` (default: :func:`default_source` of ``ref``)."""
    return PROMPT_SOURCES.get(source or default_source(ref))(ref, split, n)


def _split_conversation(messages: Messages) -> tuple[Messages, str | None]:
    """A conversation ending in an assistant turn -> (prompt messages, final answer); otherwise (messages, None)."""
    if messages and messages[-1].get("role") == "assistant":
        return [dict(m) for m in messages[:-1]], messages[-1].get("content") or ""
    return [dict(m) for m in messages], None


def rows_to_prompts(rows: list[dict[str, Any]], ps: Any) -> PromptData:
    """TRL-format rows -> prompts. ``prompt`` (+ ``completion``/``chosen``) or ``messages`` (final turn = answer)."""
    if not rows:
        raise AlignkitError(
            f"prompt set '{ps.name}': card '{ps.card}' split '{ps.split}' has no rows; add prompts to it or drop "
            "the prompt set from the suite"
        )
    cols = set(rows[0])
    prompts: list[Messages] = []
    completions: list[str | None] = []
    for i, row in enumerate(rows):
        if "prompt" in row:
            prompts.append(as_messages(row["prompt"]))
            answer = row.get("completion", row.get("chosen"))
            completions.append(None if answer is None else _split_conversation(as_messages(answer))[1] or "")
        elif "messages" in row:
            prompt, answer = _split_conversation(row["messages"])
            if not prompt:
                raise AlignkitError(f"prompt set '{ps.name}': row {i} has no prompt turn before its answer")
            prompts.append(prompt)
            completions.append(answer)
        else:
            raise AlignkitError(
                f"prompt set '{ps.name}': rows need 'prompt' or 'messages', got columns {sorted(cols)}"
            )
    references = None
    if ps.grader:
        if ps.reference_column not in cols:
            raise AlignkitError(
                f"prompt set '{ps.name}': grader needs column '{ps.reference_column}'; has {sorted(cols)}"
            )
        references = [row[ps.reference_column] for row in rows]
    held = [c for c in completions if c is not None]
    return PromptData(ps, prompts, references, held if len(held) == len(prompts) else None)


def load_prompt_set(ps: Any) -> PromptData:
    """A suite's :class:`~alignkit.eval.suite.PromptSet` loaded through its source."""
    return rows_to_prompts(load_rows(ps.card, ps.split, ps.max_prompts, ps.source), ps)
