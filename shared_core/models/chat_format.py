"""Token layout of a memory in the model's own chat format.

A memory is ``prefix + text + suffix``: the prefix opens a user turn that says a text follows,
the suffix closes it with a short assistant acknowledgement. Each later prompt is rendered as
the continuation of that conversation (history turns, then the prompt as a user turn, then the
assistant header), so small instruction-tuned models see the layout they were trained on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from shared_core.types import ChatTurn

_MARK = "\u2063MEMORAG_TEXT\u2063"


def frame_texts(intro: str | None, ack: str | None) -> tuple[str, str]:
    """The memory frame's words: the given ones, else the English prompt set's."""
    if intro is None or ack is None:
        from shared_core.prompts import get_prompts

        prompts = get_prompts("en")
        intro = prompts.memory_intro if intro is None else intro
        ack = prompts.memory_ack if ack is None else ack
    return intro, ack


class ChatFormat:
    """Renders memory frames and prompt turns to token ids for one tokenizer."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.has_template = bool(getattr(tokenizer, "chat_template", None))

    # -- rendering --------------------------------------------------------------------------
    def _render(self, turns: Sequence[ChatTurn], *, generation_prompt: bool) -> str:
        messages = [{"role": t.role, "content": t.content} for t in turns]
        if self.has_template:
            try:
                return str(
                    self.tokenizer.apply_chat_template(
                        messages, tokenize=False, add_generation_prompt=generation_prompt
                    )
                )
            except Exception:  # templates that refuse e.g. a mid-dialogue system turn
                messages = [
                    {
                        "role": "user" if m["role"] == "system" else m["role"],
                        "content": m["content"],
                    }
                    for m in messages
                ]
                return str(
                    self.tokenizer.apply_chat_template(
                        messages, tokenize=False, add_generation_prompt=generation_prompt
                    )
                )
        text = "".join(f"{m['role'].capitalize()}: {m['content']}\n" for m in messages)
        return text + ("Assistant:" if generation_prompt else "")

    def encode(self, text: str) -> list[int]:
        """Token ids of a rendered string, special tokens written literally in it included."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def frame(self, intro: str, ack: str) -> tuple[list[int], list[int]]:
        """``(prefix_ids, suffix_ids)`` that surround the memorized text."""
        base = self._base(intro, ack)
        rendered = self._render(base, generation_prompt=False)
        before, _, after = rendered.partition(_MARK)
        prefix = before
        if not self.has_template and self.tokenizer.bos_token:
            prefix = self.tokenizer.bos_token + prefix
        return self.encode(prefix), self.encode(after)

    def continuation(
        self, intro: str, ack: str, history: Sequence[ChatTurn], prompt: str
    ) -> list[int]:
        """Token ids that follow the memory frame: history turns, the prompt, the reply header."""
        return self.after_frame(intro, ack, [*history, ChatTurn("user", prompt)], True)

    def after_frame(
        self, intro: str, ack: str, turns: Sequence[ChatTurn], generation_prompt: bool
    ) -> list[int]:
        """Token ids of ``turns`` rendered as the continuation of the memory frame."""
        base = self._base(intro, ack)
        full = self._render([*base, *turns], generation_prompt=generation_prompt)
        head = self._render(base, generation_prompt=False)
        if full.startswith(head):
            tail = full[len(head) :]
        else:  # a template that re-renders earlier turns differently: render the new turns alone
            tail = self._render(turns, generation_prompt=generation_prompt)
            bos = self.tokenizer.bos_token
            if bos and tail.startswith(bos):
                tail = tail[len(bos) :]
        return self.encode(tail)

    def plain(self, history: Sequence[ChatTurn], prompt: str) -> list[int]:
        """A whole conversation with no memory (the generator path)."""
        text = self._render([*history, ChatTurn("user", prompt)], generation_prompt=True)
        if not self.has_template and self.tokenizer.bos_token:
            text = self.tokenizer.bos_token + text
        return self.encode(text)

    @staticmethod
    def _base(intro: str, ack: str) -> list[ChatTurn]:
        return [ChatTurn("user", f"{intro}{_MARK}"), ChatTurn("assistant", ack)]
