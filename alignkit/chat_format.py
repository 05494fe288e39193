"""Chat rows as text and token ids: one rendering for generation, scoring and grading.

Prompts and completions arrive in TRL's two dataset formats: standard (a string) or conversational (a list of
``{"role", "content"}`` messages). Everything that renders or reads them goes through this module, so "the
completion's text" and "the completion's tokens" mean the same thing in training data, rewards and evaluation.

:func:`encode_pair` tokenizes the prompt with the generation prompt appended and the completion separately, then
concatenates the ids, as TRL's DPO/SFT collators do, so the prompt/completion boundary never shifts by a merged token.
"""

from __future__ import annotations

from typing import Any

from alignkit.errors import AlignkitError

Messages = list[dict[str, Any]]
Prompt = str | Messages


def as_messages(prompt: Prompt) -> Messages:
    """A prompt as chat messages: a plain string becomes one user turn."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return [dict(m) for m in prompt]


def completion_text(completion: Any) -> str:
    """Text of one completion, standard (``str``) or conversational (one message or a list of messages).

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


def prompt_text(tokenizer: Any, prompt: Prompt) -> str:
    """The prompt rendered for generation: chat template + generation prompt, or the raw text without a template."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(as_messages(prompt), add_generation_prompt=True, tokenize=False)
    return prompt if isinstance(prompt, str) else "\n".join(m["content"] for m in prompt) + "\n"


def encode_pair(tokenizer: Any, prompt: Prompt, completion: str | Messages) -> tuple[list[int], list[int]]:
    """Token ids ``(prompt_ids, completion_ids)``; their concatenation is the full chat-formatted exchange.

    The completion ids are the template's text after the generation prompt (content plus the end-of-turn marker,
    so the model is also scored on stopping). Without a chat template they are the raw text plus EOS.
    """
    head = prompt_text(tokenizer, prompt)
    content = completion_text(completion)
    if getattr(tokenizer, "chat_template", None):
        full = tokenizer.apply_chat_template(
            as_messages(prompt) + [{"role": "assistant", "content": content}], tokenize=False
        )
        if not full.startswith(head):
            raise AlignkitError("tokenizer: chat template output does not start with the generation prompt")
        tail = full[len(head) :]
    else:
        tail = content + (tokenizer.eos_token or "")
    # The template already holds BOS/role markers, so no special tokens are added a second time.
    return (
        tokenizer.encode(head, add_special_tokens=False),
        tokenizer.encode(tail, add_special_tokens=False),
    )


def transcript(messages: Messages) -> str:
    """A prompt as one readable text: the user turn alone, or ``Role: content`` lines for multi-turn prompts
    (system turns left out). What an LLM judge is shown as the request."""
    turns = [m for m in messages if m.get("role") != "system"]
    if len(turns) == 1:
        return turns[0]["content"]
    return "\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in turns)
