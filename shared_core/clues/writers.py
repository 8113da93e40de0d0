"""Clue writers: the memory turns a query into retrieval keys.

A ``ClueWriter`` asks a generator (normally the memory, which has read the whole text) one
prompt and parses the answer into ``Clue``s. Three strategies follow MemoRAG: ``SpanClues``
(evidence recalled from the text; with ``copy_from_text`` decoded under ``copying.SpanCopier``,
so its spans are verbatim text), ``SurrogateClues`` (sharper search questions) and
``DraftAnswerClues`` (a draft answer, HyDE-like). ``CompositeClueWriter`` runs several and
deduplicates; ``make_clue_writer`` builds one from a name such as ``"copy+surrogate"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from shared_core.clues.copying import CopySource
from shared_core.clues.parsing import (
    NEAR_DUPLICATE,
    jaccard,
    parse_clue_lines,
    truncate,
    word_count,
    word_tokens,
)
from shared_core.errors import InputError
from shared_core.models.decoding import CopyingGenerator
from shared_core.prompts import PromptSet, get_prompts
from shared_core.types import ChatTurn, Clue, ClueKind, Generation, KeyKind, TextGenerator


@runtime_checkable
class ClueWriter(Protocol):
    """Writes retrieval clues for a query by prompting a memory."""

    def write(
        self, query: str, memory: TextGenerator, *, history: Sequence[ChatTurn] = ()
    ) -> list[Clue]: ...


@runtime_checkable
class CopyingClueWriter(Protocol):
    """A clue writer that can copy spans from the corpus: it takes ``source`` when
    ``uses_source`` says so."""

    @property
    def uses_source(self) -> bool: ...

    def write(
        self,
        query: str,
        memory: TextGenerator,
        *,
        history: Sequence[ChatTurn] = (),
        source: CopySource | None = None,
    ) -> list[Clue]: ...


#: Cut a small model off when it starts a new section or signs off instead of listing clues
#: (decoding is the slow part, so stopping early also saves time).
_LIST_STOPS: tuple[str, ...] = (
    "\n\n\n",
    "\n\nQuestion:",
    "\n\nAnswer:",
    "\nNote:",
    "\nI hope",
    "\n\n问题：",
    "\n\n答案：",
)
_ANSWER_STOPS: tuple[str, ...] = ("\n\n", "\nQuestion:", "\n问题：")


def _drop_cut_line(generation: Generation) -> str:
    """The output without its last line when decoding hit the token limit mid-line."""
    text = generation.text
    if generation.finish_reason != "length" or text.endswith("\n") or "\n" not in text.strip():
        return text
    return text.rstrip().rsplit("\n", 1)[0]


@dataclass
class _PromptedClues:
    """Shared machinery: one prompt to the memory, parsed into clues of one kind."""

    prompts: PromptSet = field(default_factory=get_prompts)
    max_new_tokens: int = 64
    weight: float = 1.0
    max_clues: int = 4
    min_words: int = 3
    max_chars: int = 300
    stop: tuple[str, ...] = _LIST_STOPS

    kind: ClueKind = field(default=KeyKind.CUSTOM, init=False)

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise InputError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not self.weight > 0:
            raise InputError(f"clue weight must be > 0, got {self.weight}")
        if self.max_clues < 0:
            raise InputError(f"max_clues must be >= 0, got {self.max_clues}")

    def _template(self) -> str:
        raise NotImplementedError

    def _prompt(self, query: str) -> str:
        return self._template().format(question=query)

    def _lines(self, output: str, query: str, prompt: str) -> list[str]:
        return parse_clue_lines(
            output,
            max_clues=self.max_clues,
            min_words=self.min_words,
            max_chars=self.max_chars,
            echo_of=(query, prompt, self.prompts.memory_ack),
        )

    def write(
        self, query: str, memory: TextGenerator, *, history: Sequence[ChatTurn] = ()
    ) -> list[Clue]:
        """Prompt ``memory`` greedily and parse its output into clues."""
        if self.max_clues == 0:
            return []
        prompt = self._prompt(query)
        generation = memory.generate(
            prompt,
            history=tuple(history),
            max_new_tokens=self.max_new_tokens,
            stop=self.stop,
            temperature=0.0,
        )
        lines = self._lines(_drop_cut_line(generation), query, prompt)
        return [Clue(text=line, kind=self.kind, weight=self.weight) for line in lines]


def can_copy(generator: object) -> bool:
    """Whether ``generator`` decodes under a constraint (a wrapper may say no with
    ``supports_copying = False``)."""
    return isinstance(generator, CopyingGenerator) and generator.supports_copying


@dataclass
class SpanClues(_PromptedClues):
    """Evidence the memory recalls from the text (``prompts.span``), one clue per line.

    With ``copy_from_text`` and a ``source`` (the corpus as a ``CopySource``), each line is
    decoded under a ``SpanCopier``: the memory picks the spans, but they are verbatim text
    (``copy_spans`` of ``copy_min_tokens``..``copy_max_tokens`` tokens). Memories without
    ``generate_constrained`` fall back to free writing.
    """

    copy_from_text: bool = False
    copy_spans: int = 2
    copy_min_tokens: int = 8
    copy_max_tokens: int = 32
    kind: ClueKind = field(default=KeyKind.SPAN, init=False)

    @property
    def uses_source(self) -> bool:
        return self.copy_from_text

    def _template(self) -> str:
        return self.prompts.span

    def write(
        self,
        query: str,
        memory: TextGenerator,
        *,
        history: Sequence[ChatTurn] = (),
        source: CopySource | None = None,
    ) -> list[Clue]:
        """Free clues, or copied spans when ``copy_from_text`` and the memory can copy."""
        if not (self.copy_from_text and source is not None and can_copy(memory)):
            return super().write(query, memory, history=history)
        if self.max_clues == 0:
            return []
        spans = min(self.copy_spans, self.max_clues)
        assert isinstance(memory, CopyingGenerator)
        constraint = source.constraint(
            memory.end_ids,
            max_spans=spans,
            min_tokens=self.copy_min_tokens,
            max_tokens=self.copy_max_tokens,
        )
        generation = memory.generate_constrained(
            self._prompt(query),
            constraint,
            history=tuple(history),
            max_new_tokens=spans * (self.copy_max_tokens + 1),
        )
        lines = [" ".join(line.split()) for line in generation.text.split("\n")]
        lines = [truncate(line, self.max_chars) for line in lines if line]
        return [
            Clue(text=line, kind=self.kind, weight=self.weight)
            for line in lines
            if word_count(line) >= self.min_words
        ]


@dataclass
class SurrogateClues(_PromptedClues):
    """Sharper, self-contained search questions (``prompts.surrogate``), one per line."""

    max_clues: int = 3
    kind: ClueKind = field(default=KeyKind.SURROGATE, init=False)

    def _template(self) -> str:
        return self.prompts.surrogate


@dataclass
class DraftAnswerClues(_PromptedClues):
    """A draft answer from memory (``prompts.draft_answer``), used HyDE-style as one key.

    A draft shorter than ``min_words`` (e.g. a bare name) is kept as ``"{query} {draft}"`` when
    ``pair_short_with_query``, so the key stays on-topic; otherwise it is dropped.
    """

    max_new_tokens: int = 32
    weight: float = 0.5
    max_clues: int = 1
    stop: tuple[str, ...] = _ANSWER_STOPS
    pair_short_with_query: bool = True
    kind: ClueKind = field(default=KeyKind.ANSWER, init=False)

    def _template(self) -> str:
        return self.prompts.draft_answer

    def _lines(self, output: str, query: str, prompt: str) -> list[str]:
        lines = parse_clue_lines(
            output,
            max_clues=self.max_clues,
            min_words=1,
            max_chars=self.max_chars,
            echo_of=(query, prompt, self.prompts.memory_ack),
        )
        result: list[str] = []
        for line in lines:
            if word_count(line) >= self.min_words:
                result.append(line)
            elif self.pair_short_with_query:
                result.append(truncate(f"{query.strip()} {line}", self.max_chars))
        return result


@dataclass
class NoClues:
    """Writes no clues: retrieval runs on the query alone (the ``"none"`` strategy)."""

    def write(
        self, query: str, memory: TextGenerator, *, history: Sequence[ChatTurn] = ()
    ) -> list[Clue]:
        """Return no clues, without calling the memory."""
        return []


@dataclass
class CompositeClueWriter:
    """Runs several writers in order; drops clues that repeat the query or an earlier clue."""

    writers: Sequence[ClueWriter]
    max_clues: int | None = None

    @property
    def uses_source(self) -> bool:
        return any(_copies(w) for w in self.writers)

    def write(
        self,
        query: str,
        memory: TextGenerator,
        *,
        history: Sequence[ChatTurn] = (),
        source: CopySource | None = None,
    ) -> list[Clue]:
        """Collect every writer's clues, deduplicated (token Jaccard >= 0.8) and capped."""
        seen: list[frozenset[str]] = []
        query_tokens = frozenset(word_tokens(query))
        if query_tokens:
            seen.append(query_tokens)
        clues: list[Clue] = []
        for writer in self.writers:
            if _copies(writer):
                found = writer.write(query, memory, history=history, source=source)
            else:
                found = writer.write(query, memory, history=history)
            for clue in found:
                tokens = frozenset(word_tokens(clue.text))
                if not tokens or any(jaccard(tokens, other) >= NEAR_DUPLICATE for other in seen):
                    continue
                seen.append(tokens)
                clues.append(clue)
                if self.max_clues is not None and len(clues) >= self.max_clues:
                    return clues
        return clues


def _copies(writer: ClueWriter) -> bool:
    return isinstance(writer, CopyingClueWriter) and writer.uses_source


#: The five documented strategy names; "copy" is ``SpanClues(copy_from_text=True)``.
CLUE_STRATEGIES = ("copy", "span", "surrogate", "answer", "none")


def _strategy(name: str, prompts: PromptSet) -> ClueWriter:
    if name == "copy":
        return SpanClues(prompts=prompts, copy_from_text=True)
    if name == "span":
        return SpanClues(prompts=prompts)
    if name == "surrogate":
        return SurrogateClues(prompts=prompts)
    return DraftAnswerClues(prompts=prompts)


def make_clue_writer(spec: str | ClueWriter, prompts: PromptSet | None = None) -> ClueWriter:
    """Build a clue writer from a name ("span", "copy", "surrogate", "answer", "none") or a
    "+"-joined combination ("copy+surrogate"); a ``ClueWriter`` instance is returned unchanged.

    "copy" is the span writer in copy-from-text mode (its spans are verbatim corpus text)."""
    if not isinstance(spec, str):
        if isinstance(spec, ClueWriter):
            return spec
        raise InputError(
            f"clue writer must be a name or an object with a write() method, got {spec!r}"
        )
    prompts = prompts if prompts is not None else get_prompts()
    names = [part.strip().lower() for part in spec.split("+") if part.strip()]
    unknown = [name for name in names if name not in CLUE_STRATEGIES]
    if unknown:
        raise InputError(
            f"unknown clue strategy {unknown[0]!r} in {spec!r}; use one of "
            f"{list(CLUE_STRATEGIES)} or a '+'-joined combination such as 'copy+surrogate'"
        )
    writers = [_strategy(name, prompts) for name in dict.fromkeys(names) if name != "none"]
    if not writers:
        return NoClues()
    return writers[0] if len(writers) == 1 else CompositeClueWriter(writers)
