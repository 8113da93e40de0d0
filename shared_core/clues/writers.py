"""Clue writing: the memory turns a query into retrieval keys.

A ``ClueWriter`` asks a ``TextGenerator`` (normally the memory, which has read the whole
text) one prompt and parses the answer into ``Clue``s. Three strategies follow MemoRAG:
``SpanClues`` (evidence recalled from the text), ``SurrogateClues`` (sharper search questions)
and ``DraftAnswerClues`` (a draft answer, HyDE-like). ``CompositeClueWriter`` runs several and
deduplicates; ``make_clue_writer`` builds one from a name such as ``"copy+surrogate"`` ("copy"
is the span writer decoding under ``copying.SpanCopier``: its spans are verbatim text).

Small memories write noisy text (chatter, echoes of the prompt, loops), so every output goes
through ``parse_clue_lines``, which is bounded for any input. ``resolve_followup`` rewrites a
follow-up question as a standalone one, with a deterministic fallback.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from shared_core.clues.copying import CopySource
from shared_core.errors import InputError
from shared_core.prompts import PromptSet, get_prompts
from shared_core.types import ChatTurn, Clue, ClueKind, Generation, TextGenerator

__all__ = [
    "ANCHORED_KINDS",
    "ClueWriter",
    "CompositeClueWriter",
    "DraftAnswerClues",
    "NoClues",
    "SpanClues",
    "SurrogateClues",
    "anchor_clues",
    "make_clue_writer",
    "novel_words",
    "parse_clue_lines",
    "resolve_followup",
]

# --------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------

#: At most this much model output is scanned; the rest is ignored (bounds the work).
MAX_SCAN_CHARS = 16_000
#: At most this many candidate lines are examined.
MAX_SCAN_LINES = 200
#: Longest single line examined (a longer one is cut before cleaning).
_MAX_LINE_CHARS = 2_000
#: Lines of each ``echo_of`` text compared against (besides the whole text).
_MAX_ECHO_LINES = 64
#: Jaccard similarity of normalised token sets at or above which two lines are duplicates.
NEAR_DUPLICATE = 0.8
#: A line whose content words are all in an echo and cover this share of it is an echo.
ECHO_COVERAGE = 0.8
#: A line is cut where a run of this many words starts repeating (a decoding loop).
_LOOP_NGRAM = 5

_CJK_CHAR = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_CJK = re.compile(f"[{_CJK_CHAR}]")
_TOKEN = re.compile(f"[{_CJK_CHAR}]|[^\\W_]+")
_WORD = re.compile(f"[{_CJK_CHAR}]|[^\\s{_CJK_CHAR}]+")

_STOPWORDS = frozenset(
    """a about above after again against all also am an and any are as at be been before being
    below between both but by can could did do does doing done down during each either few for
    from further get give go had has have having he her here hers herself him himself his how i
    if in into is it its itself just know let like me more most my myself no nor not now of off
    on once only or other our ours out over own please same say she should show so some such
    tell than that the their theirs them then there these they this those through to too under
    until up us very want was we were what when where which while who whom whose why will with
    would yes you your yours yourself explain describe hi hello hey thanks ok okay""".split()
)

# Leading list markers: bullets, "1.", "1)", "(1)", "[1]", "1、", "#", ">".
_MARKER = re.compile(
    r"^\s*(?:[-*•·‣▪●○◦–—>#]+\s*|\(?\[?\d{1,3}[.)\]、:：]\s*(?!\d)|\(\d{1,3}\)\s*)+"
)
# Leading labels such as "Clue:", "Question 2:", "Surrogate question 1:", "答案：".
_LABEL = re.compile(
    r"^\s*(?:\*\*)?(?:(?:text\s+)?spans?|clues?|evidence|(?:surrogate\s+|search\s+|clue\s+|"
    r"rewritten\s+|standalone\s+|last\s+|new\s+|sub-?)?(?:questions?|query|queries)|q|a|"
    r"(?:draft\s+|short\s+)?answer|facts?|key\s+points?|points?|sentences?|"
    r"线索|问题|答案|证据|要点|句子)"
    r"\s*\d{0,3}\s*(?:\*\*)?\s*[:：]\s*(?:\*\*)?\s*",
    re.IGNORECASE,
)
# Lead-ins that carry no content but precede content worth keeping.
_LEAD_IN = re.compile(
    r"^\s*(?:(?:according\s+to|based\s+on|from|in)\s+the\s+(?:article|text|passage|document|"
    r"story|context)\s*,\s*|"
    r"(?:the|this)\s+(?:article|text|passage|document|story)\s+(?:also\s+)?(?:says|states|"
    r"mentions|notes|explains|describes|tells\s+us|provides\s+details\s+about)(?:\s+that)?"
    r"\s*[:,]?\s*|"
    r"the\s+answer(?:\s+to\s+(?:the|this|your)\s+question)?\s+is\s*(?::\s*|(?=[\"“«']))|"
    r"the\s+(?:next\s+|new\s+|rewritten\s+|standalone\s+)?question\s+is\s*(?::\s*|(?=[\"“«']))|"
    r"根据(?:文章|文本|原文|段落)[，,]\s*|(?:文章|文本|原文)(?:中)?(?:提到|指出)[：:，,]?\s*)",
    re.IGNORECASE,
)
# Whole lines that are chatter, not content.
_CHATTER = re.compile(
    r"^\s*(?:(?:sure|certainly|of\s+course|okay|ok|absolutely|alright)\s*(?:[,.!:]|$)|"
    r"here\s+(?:are|is)\b|below\s+(?:are|is)\b|"
    r"i\s+(?:have|'ve|had)\s+(?:read|finished)|i\s+read\b|i(?:'m|\s+am)\s+(?:ready|happy|glad|"
    r"sorry)|i\s+(?:can|will|would|could|'ll|'d)\s+(?:help|be|try|provide|answer)|"
    r"i\s+(?:don't|do\s+not|cannot|can't)\s+(?:know|have|see|find)|"
    r"as\s+an\s+ai\b|please\s+(?:provide|ask|let|note)|let\s+me\b|feel\s+free|hope\s+this|"
    r"i\s+hope\b|thanks?\s+(?:you|for)\b|thanks\b|note\s*:|"
    r"(?:the|this)\s+(?:article|text|passage|document|story)\s+(?:ends|begins|starts|is\s+over|"
    r"does\s+not|doesn't|did\s+not|has\s+ended)|(?:end|start)\s+of\s+(?:the\s+)?"
    r"(?:article|text|passage)|"
    r"好的|当然|以下是|下面是|我已(?:经)?(?:阅读|读完|读过)|请(?:提供|提问|告诉)|希望(?:这|对)|"
    r"文(?:章|本)(?:到此|结束))",
    re.IGNORECASE,
)
_EDGE_PUNCT = " \t*_~|"
_DOUBLE_QUOTES = '"“”«»「」『』`'
_QUOTES = _DOUBLE_QUOTES + "'‘’"
#: Trailing characters left when decoding stops mid-phrase.
_DANGLING = " \t,;:([{-–—"
_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s+")


#: A clue that ends on a function word was cut off before saying anything.
_UNFINISHED = re.compile(
    r"\b(?:a|an|the|is|are|was|were|be|of|in|on|at|to|for|from|by|with|and|or|that|as|"
    r"about|include|includes|following)\W*$",
    re.IGNORECASE,
)


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def _content(tokens: Iterable[str]) -> frozenset[str]:
    """The tokens that carry content: CJK characters and non-stopwords of 2+ characters."""
    return frozenset(t for t in tokens if _CJK.match(t) or (len(t) > 1 and t not in _STOPWORDS))


def _word_count(text: str) -> int:
    """Whitespace words, with every CJK character counted as one word."""
    return len(_WORD.findall(text))


def _jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    if not a or not b:
        return 0.0
    return len(a & b) / len(a | b)


def _split_inline_numbering(line: str) -> list[str]:
    """Split "1. foo 2. bar 3. baz" into items; only when the numbers run 1, 2, 3, ..."""
    if not re.match(r"\s*\(?1(?:[.)]\s|、)", line):
        return [line]
    parts: list[str] = []
    start = 0
    number = 2
    while number < 100:
        match = re.search(
            rf"(?:(?<=\s)|(?<=[.?!;,。？！；，]))\(?{number}(?:[.)]\s|、)", line[start + 1 :]
        )
        if match is None:
            break
        cut = start + 1 + match.start()
        parts.append(line[start:cut])
        start = cut
        number += 1
    parts.append(line[start:])
    return parts


def _cut_loop(line: str) -> str:
    """Cut ``line`` where a run of ``_LOOP_NGRAM`` words starts repeating (a decoding loop)."""
    words = list(_WORD.finditer(line))
    seen: set[tuple[str, ...]] = set()
    for i in range(len(words) - _LOOP_NGRAM + 1):
        gram = tuple(m.group().lower() for m in words[i : i + _LOOP_NGRAM])
        if gram in seen:
            return line[: words[i].start()].rstrip()
        seen.add(gram)
    return line


def _strip_quotes(line: str) -> str:
    """Drop quotes wrapping the whole line, or one unpaired quote at either end."""
    if len(line) >= 2 and line[0] in _QUOTES and line[-1] in _QUOTES:
        inner = line[1:-1]
        if not any(ch in _DOUBLE_QUOTES for ch in inner):
            return inner.strip()
    if sum(ch in _DOUBLE_QUOTES for ch in line) % 2:
        if line[:1] in _DOUBLE_QUOTES:
            return line[1:].strip()
        if line[-1:] in _DOUBLE_QUOTES:
            return line[:-1].strip()
    return line


def _clean(line: str) -> str:
    """Strip markers, labels, lead-ins, markdown emphasis and surrounding quotes."""
    for _ in range(8):
        previous = line
        line = _MARKER.sub("", line, count=1)
        line = _LABEL.sub("", line, count=1)
        line = _LEAD_IN.sub("", line, count=1)
        line = _strip_quotes(line.strip(_EDGE_PUNCT).rstrip(_DANGLING))
        if line == previous:
            break
    return " ".join(line.split())


def _truncate(text: str, max_chars: int) -> str:
    """Cut ``text`` to at most ``max_chars``, at a word boundary when one is near."""
    if len(text) <= max_chars:
        return text
    cut = text[: max_chars + 1]
    space = cut.rfind(" ")
    cut = cut[:space] if space >= max_chars // 2 else text[:max_chars]
    return cut.rstrip(" ,;:-–—(").strip()


def _normalised(text: str) -> str:
    return " ".join(_tokens(text))


@dataclass
class _Echo:
    """A text the clues must not merely repeat (a prompt, the question)."""

    text: str
    tokens: frozenset[str]
    content: frozenset[str]

    @classmethod
    def build(cls, texts: Iterable[str]) -> list[_Echo]:
        echoes: list[_Echo] = []
        for text in texts:
            head = text[:MAX_SCAN_CHARS]
            lines = head.splitlines()[:_MAX_ECHO_LINES]
            sentences = [s for line in lines for s in _SENTENCE_END.split(line)][:_MAX_ECHO_LINES]
            for piece in dict.fromkeys([head, *lines, *sentences]):
                norm = _normalised(piece)
                if norm:
                    tokens = frozenset(norm.split())
                    echoes.append(cls(f" {norm} ", tokens, _content(tokens)))
        return echoes

    def matches(self, norm: str, tokens: frozenset[str], content: frozenset[str]) -> bool:
        """True if the line is nearly equal to this echo, or restates it (call it only for a
        line that has no content word outside the echoes)."""
        if _jaccard(tokens, self.tokens) >= NEAR_DUPLICATE or f" {norm} " in self.text:
            return True
        return bool(self.content) and len(content & self.content) >= ECHO_COVERAGE * len(
            self.content
        )


def parse_clue_lines(
    text: str,
    *,
    max_clues: int = 8,
    min_words: int = 3,
    max_chars: int = 300,
    echo_of: Sequence[str] = (),
) -> list[str]:
    """Turn a model's free-form output into at most ``max_clues`` clean, distinct clue lines.

    Splits on newlines (and "1. a 2. b" numbering), strips bullets, numbering, labels, lead-ins
    ("According to the text,") and quotes, cuts decoding loops, and drops: lines shorter than
    ``min_words`` (a CJK character counts as a word), lines without a content word, chatter,
    echoes of ``echo_of`` (inside it, near-equal to it, or restating it with no new content
    word) and near-duplicates (token Jaccard >= 0.8). Each line is cut to ``max_chars`` at a
    word boundary. Only the first ``MAX_SCAN_CHARS`` are read, so any input is cheap.
    """
    if max_chars < 1:
        raise InputError(f"max_chars must be >= 1, got {max_chars}")
    if max_clues <= 0 or not text:
        return []
    echoes = _Echo.build(echo_of)
    echo_content = frozenset().union(*(echo.content for echo in echoes))
    kept: list[str] = []
    kept_tokens: list[frozenset[str]] = []
    examined = 0
    for raw in text[:MAX_SCAN_CHARS].splitlines():
        for item in _split_inline_numbering(_truncate(raw, _MAX_LINE_CHARS)):
            cleaned = _cut_loop(_clean(item))
            if not cleaned:
                continue
            # A long line is usually several sentences: judge them one by one.
            pieces = _SENTENCE_END.split(cleaned) if len(cleaned) > max_chars else [cleaned]
            for piece in pieces:
                examined += 1
                if examined > MAX_SCAN_LINES:
                    return kept
                clue = _truncate(_clean(piece), max_chars)
                if not clue or _word_count(clue) < min_words or clue.endswith((":", "：")):
                    continue
                if _CHATTER.match(clue):
                    continue
                norm = _normalised(clue)
                tokens = frozenset(norm.split())
                content = _content(tokens)
                if not content or (min_words > 1 and len(content) < 2 and not _CJK.search(clue)):
                    continue
                if any(_jaccard(tokens, echo.tokens) >= NEAR_DUPLICATE for echo in echoes):
                    continue
                if not (content - echo_content) and any(
                    echo.matches(norm, tokens, content) for echo in echoes
                ):
                    continue
                if _UNFINISHED.search(clue) and not (content - echo_content):
                    continue  # a lead-in cut off before any new word: "The facts that matter are"
                if any(_jaccard(tokens, other) >= NEAR_DUPLICATE for other in kept_tokens):
                    continue
                kept.append(clue)
                kept_tokens.append(tokens)
                if len(kept) >= max_clues:
                    return kept
    return kept


# --------------------------------------------------------------------------------------------
# Clue writers
# --------------------------------------------------------------------------------------------


@runtime_checkable
class ClueWriter(Protocol):
    """Writes retrieval clues for a query by prompting a memory."""

    def write(
        self, query: str, memory: TextGenerator, *, history: Sequence[ChatTurn] = ()
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

    kind: ClueKind = field(default="custom", init=False)

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
    """Whether ``generator`` decodes under a constraint (``generate_constrained`` + ``end_ids``);
    a wrapper may say no with ``supports_copying = False``."""
    return callable(getattr(generator, "generate_constrained", None)) and bool(
        getattr(generator, "supports_copying", True)
    )


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
    kind: ClueKind = field(default="span", init=False)

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
        constraint = source.constraint(
            memory.end_ids,  # type: ignore[attr-defined]
            max_spans=spans,
            min_tokens=self.copy_min_tokens,
            max_tokens=self.copy_max_tokens,
        )
        generation = memory.generate_constrained(  # type: ignore[attr-defined]
            self._prompt(query),
            constraint,
            history=tuple(history),
            max_new_tokens=spans * (self.copy_max_tokens + 1),
        )
        lines = [" ".join(line.split()) for line in generation.text.split("\n")]
        lines = [_truncate(line, self.max_chars) for line in lines if line]
        return [
            Clue(text=line, kind=self.kind, weight=self.weight)
            for line in lines
            if _word_count(line) >= self.min_words
        ]


@dataclass
class SurrogateClues(_PromptedClues):
    """Sharper, self-contained search questions (``prompts.surrogate``), one per line."""

    max_clues: int = 3
    kind: ClueKind = field(default="surrogate", init=False)

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
    kind: ClueKind = field(default="answer", init=False)

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
            if _word_count(line) >= self.min_words:
                result.append(line)
            elif self.pair_short_with_query:
                result.append(_truncate(f"{query.strip()} {line}", self.max_chars))
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
        return any(getattr(w, "uses_source", False) for w in self.writers)

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
        query_tokens = frozenset(_tokens(query))
        if query_tokens:
            seen.append(query_tokens)
        clues: list[Clue] = []
        for writer in self.writers:
            extra = {"source": source} if getattr(writer, "uses_source", False) else {}
            for clue in writer.write(query, memory, history=history, **extra):
                tokens = frozenset(_tokens(clue.text))
                if not tokens or any(_jaccard(tokens, other) >= NEAR_DUPLICATE for other in seen):
                    continue
                seen.append(tokens)
                clues.append(clue)
                if self.max_clues is not None and len(clues) >= self.max_clues:
                    return clues
        return clues


_WRITER_NAMES: dict[str, type[_PromptedClues]] = {
    "span": SpanClues,
    "spans": SpanClues,
    "recall": SpanClues,
    "surrogate": SurrogateClues,
    "surrogates": SurrogateClues,
    "sur": SurrogateClues,
    "rewrite": SurrogateClues,
    "answer": DraftAnswerClues,
    "draft": DraftAnswerClues,
    "draft_answer": DraftAnswerClues,
}
_NONE_NAMES = frozenset({"none", "off", "query"})
#: Names of the copy-from-text span writer (``SpanClues(copy_from_text=True)``).
_COPY_NAMES = frozenset({"copy", "copied", "span_copy", "copy_span"})


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
    names = [part.strip().lower() for part in re.split(r"[+,]", spec)]
    names = [name for name in names if name and name not in _NONE_NAMES]
    if not names:
        return NoClues()
    writers: list[ClueWriter] = []
    chosen: set[object] = set()
    for name in names:
        if name in _COPY_NAMES:
            if "copy" not in chosen:
                chosen.add("copy")
                writers.append(SpanClues(prompts=prompts, copy_from_text=True))
            continue
        cls = _WRITER_NAMES.get(name)
        if cls is None:
            valid = sorted({"span", "copy", "surrogate", "answer", "none"})
            raise InputError(
                f"unknown clue writer {name!r} in {spec!r}; use one of {valid} "
                "or a '+'-joined combination such as 'copy+surrogate'"
            )
        if cls not in chosen:
            chosen.add(cls)
            writers.append(cls(prompts=prompts))
    return writers[0] if len(writers) == 1 else CompositeClueWriter(writers)


# --------------------------------------------------------------------------------------------
# Anchoring: clues as query expansions
# --------------------------------------------------------------------------------------------

#: Clue kinds the memory writes (anchoring leaves the query, history and custom keys alone).
ANCHORED_KINDS: frozenset[str] = frozenset({"span", "surrogate", "answer"})
_NOVEL = re.compile(f"[{_CJK_CHAR}]|[^\\W_][\\w'’-]*")


def novel_words(clue: str, query: str) -> list[str]:
    """The clue's content words that ``query`` lacks, in order, once each."""
    seen = set(_tokens(query)) | _STOPWORDS
    out: list[str] = []
    for word in _NOVEL.findall(clue):
        # "Frankenstein's" is the query's "Frankenstein": compare the word's own tokens.
        parts = [t for t in _tokens(word) if _CJK.match(t) or len(t) > 1]
        if not parts or all(t in seen for t in parts):
            continue
        seen.update(parts)
        out.append(word)
    return out


def anchor_clues(clues: Sequence[Clue], query: str, *, min_new: int = 2) -> list[Clue]:
    """Memory-written clues become ``query + the clue's new words``; others pass unchanged.

    A small memory's clue searched on its own can pull retrieval off the question (a copied
    span from the wrong passage, an invented detail). Anchored, a clue can only add terms (a
    bridge entity it recalled) to a search that stays on the question. A clue adding fewer
    than ``min_new`` words is dropped.
    """
    out: list[Clue] = []
    for clue in clues:
        if clue.kind not in ANCHORED_KINDS:
            out.append(clue)
            continue
        extra = novel_words(clue.text, query)
        if len(extra) >= min_new:
            text = f"{query.strip()} {' '.join(extra)}"
            out.append(Clue(text=text, kind=clue.kind, weight=clue.weight))
    return out


# --------------------------------------------------------------------------------------------
# Follow-up questions
# --------------------------------------------------------------------------------------------

#: Dialogue shown to the rewriter: the last few turns, each cut to a few hundred chars.
_HISTORY_TURNS = 6
_HISTORY_TURN_CHARS = 400
_FALLBACK_WORDS = 8

_DEICTIC = frozenset(
    "he she it they him her them his hers its their theirs this that these those there".split()
)
_ZH_DEICTIC = ("他", "她", "它", "这", "那", "其")


def _content_words(text: str) -> list[str]:
    """Words of ``text`` that carry content (not stopwords), in order, case kept."""
    words: list[str] = []
    for match in re.finditer(f"[{_CJK_CHAR}]+|[^\\W_][\\w'-]*", text[:MAX_SCAN_CHARS]):
        word = match.group().strip("'-")
        if _CJK.match(word) or (len(word) > 1 and word.lower() not in _STOPWORDS):
            words.append(word)
    return words


def _has_deictic(text: str) -> bool:
    return bool(_DEICTIC.intersection(_tokens(text))) or any(ch in text for ch in _ZH_DEICTIC)


def _render_history(history: Sequence[ChatTurn], prompts: PromptSet) -> str:
    lines = []
    for turn in list(history)[-_HISTORY_TURNS:]:
        if turn.role == "system" or not turn.content.strip():
            continue
        label = prompts.user_label if turn.role == "user" else prompts.assistant_label
        lines.append(f"{label}: {_truncate(' '.join(turn.content.split()), _HISTORY_TURN_CHARS)}")
    return "\n".join(lines)


def _looks_standalone(question: str) -> bool:
    """No pronoun to resolve and enough content words to stand on its own."""
    return not _has_deictic(question) and len(_content_words(question)) >= 2


def _fallback_rewrite(question: str, history: Sequence[ChatTurn]) -> str:
    """The question plus the content words of the latest user turn that it lacks."""
    turns = [t for t in history if t.role == "user" and t.content.strip()]
    turns = turns or [t for t in history if t.role != "system" and t.content.strip()]
    if not turns:
        return question
    present = {w.lower() for w in _content_words(question)}
    extra: list[str] = []
    for word in _content_words(turns[-1].content):
        if word.lower() not in present:
            present.add(word.lower())
            extra.append(word)
        if len(extra) >= _FALLBACK_WORDS:
            break
    return f"{question.strip()} {' '.join(extra)}".strip() if extra else question


def _usable_rewrite(candidate: str, question: str) -> bool:
    """Whether a model rewrite can replace ``question`` for retrieval."""
    if not candidate or _CHATTER.match(candidate):
        return False
    if len(candidate) > max(3 * len(question), len(question) + 200):
        return False
    norm = _normalised(candidate)
    if not norm:
        return False
    if norm == _normalised(question):
        # Unchanged: fine for a question that was standalone already, not for "did he eat?".
        return not _has_deictic(question)
    # It must still be the same question: keep most of its content words ...
    wanted = {w.lower() for w in _content_words(question)}
    have = {w.lower() for w in _content_words(candidate)}
    if wanted and len(wanted & have) * 2 < len(wanted):
        return False
    # ... and a pronoun must have been resolved: some name from the dialogue must come in.
    if _has_deictic(question):
        return bool(have - wanted)
    return True


def resolve_followup(
    question: str,
    history: Sequence[ChatTurn],
    generator: TextGenerator,
    prompts: PromptSet | None = None,
    *,
    max_new_tokens: int = 48,
) -> str:
    """Rewrite a follow-up ``question`` as a standalone question for retrieval.

    ``history`` holds the earlier turns (a last user turn equal to ``question`` is ignored).
    Without history the question is returned unchanged. The generator's rewrite is used when it
    looks usable (non-empty, not an echo of the prompt, not far longer than the question, still
    about the question); otherwise the question gets the content words of the latest user turn
    appended, so "did he eat?" after "Tell me about Victor" still carries "Victor" (a question
    with no pronoun and two or more content words is kept as it is).
    """
    prompts = prompts if prompts is not None else get_prompts()
    history = list(history)
    last = history[-1] if history else None
    if (
        last is not None
        and last.role == "user"
        and _normalised(last.content) == _normalised(question)
    ):
        history.pop()  # the caller passed the question itself as the last turn
    rendered = _render_history(history, prompts)
    if not rendered or not question.strip():
        return question
    prompt = prompts.resolve_followup.format(history=rendered, question=question.strip())
    stop = (f"\n{prompts.user_label}:", f"\n{prompts.assistant_label}:", "\n\n")
    generation = generator.generate(
        prompt, max_new_tokens=max_new_tokens, stop=stop, temperature=0.0
    )
    instructions = prompts.resolve_followup.format(history="", question="")
    lines = parse_clue_lines(
        generation.text, max_clues=1, min_words=1, max_chars=1000, echo_of=(instructions,)
    )
    candidate = lines[0] if lines else ""
    if _usable_rewrite(candidate, question):
        return candidate
    return question if _looks_standalone(question) else _fallback_rewrite(question, history)
