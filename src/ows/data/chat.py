"""Locating the assistant turns of a conversation rendered with a tokenizer's chat template."""

from __future__ import annotations

from typing import Any


def render(tokenizer: Any, messages: list[dict], generation: bool) -> str:
    """The chat template applied to ``messages`` as text."""
    if not messages and not generation:
        return ""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)


def chat_segments(tokenizer: Any, messages: list[dict]) -> list[tuple[str, bool]]:
    """The rendered conversation as (text, is_assistant_output) pieces, found by rendering prefixes.

    An assistant piece is its content and end-of-turn token (template text after it such as a newline
    is not); the role header comes from rendering the preceding messages with a generation prompt.
    """
    full = render(tokenizer, messages, False)
    segments, pos = [], 0
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        upto = render(tokenizer, messages[: i + 1], False)
        try:
            head = render(tokenizer, messages[:i], True)
        except Exception:  # some templates refuse an empty conversation
            head = ""
        if not upto.startswith(head) or len(head) < pos:
            head = render(tokenizer, messages[:i], False)
        if not full.startswith(upto) or not upto.startswith(head) or len(head) < pos:
            raise ValueError("the tokenizer's chat template does not render conversations incrementally, so the "
                             "assistant turns cannot be located: set completion_only_loss false or use "
                             "dataset_format prompt_completion")
        body = upto[len(head):].rstrip()
        segments += [(full[pos:len(head)], False), (body, True)]
        pos = len(head) + len(body)
    return segments + [(full[pos:], False)]
