"""The text of a completion, standard or conversational (pure Python): what graders and penalties score."""

from __future__ import annotations

from typing import Any

__all__ = ["completion_text"]


def completion_text(completion: Any) -> str:
    """Text of one completion, standard (``str``) or conversational (list of ``{"role", "content"}`` messages).

    Conversational completions: the contents of all assistant messages (messages without a role count too) joined by
    newlines; tool/user turns are skipped. Multimodal content lists contribute their ``text`` parts.
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        completion = [completion]
    parts = []
    for message in completion:
        if message.get("role", "assistant") != "assistant":
            continue
        content = message.get("content") or ""
        if not isinstance(content, str):
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        parts.append(content)
    return "\n".join(parts)
