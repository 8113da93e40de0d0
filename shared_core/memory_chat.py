"""How the engine's ``chat`` answers a prompt it is handed (a framework's own prompt included).

A memory is a conversation whose only assistant turn so far is the frame's acknowledgement
("I have read the text."). A prompt that brings its own material and instructions (a
framework's condense-question, query-generation or relevance prompt) reads to a small model
like one more text to take in, and it repeats the only reply it has seen. So:

- a reply that is the acknowledgement is never returned: the prompt is answered again by the
  engine's plain generator (same model, no memory) and that reply is returned instead (while
  streaming, text that could still be the acknowledgement is held back until it is not);
- a prompt that asks for one of two words (``YES`` / ``NO``, as a relevance filter does) is
  answered by choosing one of them by constrained decoding on the memory, spelled as the
  prompt spells them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence

from shared_core.memory.base import Memory
from shared_core.models.decoding import CopyingGenerator, GeneratorBase, RunRequest
from shared_core.models.json_grammar import choice_constraint
from shared_core.types import ChatTurn, Generation, GenerationOptions, GenerationRun, TextGenerator

#: How far from the end of a prompt its yes/no instruction is looked for.
_TAIL_CHARS = 400
_YES_NO = (
    re.compile(r"\b(YES)\b.{0,40}?\b(NO)\b", re.S),
    re.compile(r"\b(yes)\b\s*(?:/|or|,)\s*\b(no)\b", re.S | re.I),
)


def closed_choices(prompt: str) -> tuple[str, str] | None:
    """The two words a prompt asks its reply to be (``("YES", "NO")`` as it spells them), when
    its closing instruction names both; else ``None``."""
    tail = prompt[-_TAIL_CHARS:]
    for pattern in _YES_NO:
        found = list(pattern.finditer(tail))
        if found:
            yes, no = found[-1].group(1), found[-1].group(2)
            return yes, no
    return None


def _norm(text: str) -> str:
    return " ".join(text.lower().split()).rstrip(".!。 ")


class _Finished:
    """A ``GenerationRun`` over a reply already decoded."""

    def __init__(self, generation: Generation) -> None:
        self._generation = generation

    def __iter__(self) -> Iterator[str]:
        if self._generation.text:
            yield self._generation.text

    @property
    def generation(self) -> Generation:
        return self._generation


class _Plain:
    """A ``GenerationRun`` over a ``TextGenerator`` that only has ``generate``/``stream``."""

    def __init__(self, speaker: TextGenerator, request: RunRequest) -> None:
        self.speaker, self.request = speaker, request
        self._generation: Generation | None = None

    def __iter__(self) -> Iterator[str]:
        gen = self.speaker.generate(
            self.request.prompt, history=self.request.history, **self.request.options.as_kwargs()
        )
        self._generation = gen
        if gen.text:
            yield gen.text

    @property
    def generation(self) -> Generation:
        assert self._generation is not None, "iterate the run first"
        return self._generation


def open_run(speaker: TextGenerator, request: RunRequest) -> GenerationRun:
    """A ``GenerationRun`` for ``request`` on any ``TextGenerator``."""
    if isinstance(speaker, GeneratorBase):
        return speaker.start(request.prompt, history=request.history, options=request.options)
    return _Plain(speaker, request)


class EchoGuard:
    """A ``GenerationRun`` that never yields the memory frame's acknowledgement.

    Text that may still turn out to be ``ack`` is held back; if the whole reply is ``ack``,
    ``fallback()`` opens the run whose reply is returned instead; a reply that starts with
    ``ack`` and goes on loses that opening.
    """

    def __init__(
        self, first: GenerationRun, ack: str, fallback: Callable[[], GenerationRun]
    ) -> None:
        self._run = first
        self._ack = _norm(ack)
        self._fallback = fallback
        self._cut = 0

    def __iter__(self) -> Iterator[str]:
        held, released = "", not self._ack
        for piece in self._run:
            if released:
                yield piece
                continue
            held += piece
            if self._ack.startswith(_norm(held)) or _norm(held) == self._ack:
                continue
            released = True
            yield self._drop_ack(held)
        if released:
            return
        if held.strip() and _norm(held) == self._ack:
            self._run = self._fallback()
            yield from self._run
        elif held:
            yield held

    def _drop_ack(self, text: str) -> str:
        head = text.lstrip()
        ack_words = self._ack.split()
        words = head.split()
        if len(words) > len(ack_words) and _norm(" ".join(words[: len(ack_words)])) == self._ack:
            rest = head.split(None, len(ack_words))[-1]
            self._cut = len(text) - len(rest)
            return rest
        return text

    @property
    def generation(self) -> Generation:
        gen = self._run.generation
        if self._cut:
            return Generation(
                text=gen.text[self._cut :],
                prompt_tokens=gen.prompt_tokens,
                completion_tokens=gen.completion_tokens,
                finish_reason=gen.finish_reason,
            )
        return gen


def can_constrain(memory: Memory) -> bool:
    """Whether ``memory`` decodes under a token constraint and has a tokenizer to build one."""
    return (
        isinstance(memory, CopyingGenerator)
        and memory.supports_copying
        and memory.tokenizer is not None
    )


def start_memory_chat(
    memory: Memory,
    generator: Callable[[], TextGenerator | None],
    ack: str,
    messages: Sequence[ChatTurn],
    options: GenerationOptions,
) -> GenerationRun:
    """A run answering ``messages[-1]`` against ``memory`` (earlier turns: the history).

    ``generator()`` gives the engine's plain generator (``None`` when it has none) for a reply
    that was only the acknowledgement.
    """
    *history, last = messages
    request = RunRequest(last.content, tuple(history), options)
    choices = closed_choices(last.content)
    if choices is not None and can_constrain(memory):
        assert isinstance(memory, CopyingGenerator)
        constraint = choice_constraint(choices, memory.tokenizer, memory.end_ids)
        gen = memory.generate_constrained(
            last.content, constraint, history=tuple(history), max_new_tokens=8
        )
        return _Finished(
            Generation(
                text=constraint.text,
                prompt_tokens=gen.prompt_tokens,
                completion_tokens=gen.completion_tokens,
                finish_reason="stop",
            )
        )
    first = memory.start(last.content, history=history, options=options)

    def fallback() -> GenerationRun:
        plain = generator()
        if plain is None:
            return _Finished(Generation(text="", prompt_tokens=0, completion_tokens=0))
        return open_run(plain, request)

    return EchoGuard(first, ack, fallback)


__all__ = ["EchoGuard", "can_constrain", "closed_choices", "open_run", "start_memory_chat"]
