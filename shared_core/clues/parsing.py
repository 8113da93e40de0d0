"""Parsing the memory's clue output: bounded, robust to chatter, echoes, loops and numbering."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from shared_core.errors import InputError

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

CJK_CHAR = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
CJK = re.compile(f"[{CJK_CHAR}]")
_TOKEN = re.compile(f"[{CJK_CHAR}]|[^\\W_]+")
_WORD = re.compile(f"[{CJK_CHAR}]|[^\\s{CJK_CHAR}]+")

STOPWORDS = frozenset(
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
CHATTER = re.compile(
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


def word_tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def _content(tokens: Iterable[str]) -> frozenset[str]:
    """The tokens that carry content: CJK characters and non-stopwords of 2+ characters."""
    return frozenset(t for t in tokens if CJK.match(t) or (len(t) > 1 and t not in STOPWORDS))


def word_count(text: str) -> int:
    """Whitespace words, with every CJK character counted as one word."""
    return len(_WORD.findall(text))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
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


def truncate(text: str, max_chars: int) -> str:
    """Cut ``text`` to at most ``max_chars``, at a word boundary when one is near."""
    if len(text) <= max_chars:
        return text
    cut = text[: max_chars + 1]
    space = cut.rfind(" ")
    cut = cut[:space] if space >= max_chars // 2 else text[:max_chars]
    return cut.rstrip(" ,;:-–—(").strip()


def normalised(text: str) -> str:
    return " ".join(word_tokens(text))


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
                norm = normalised(piece)
                if norm:
                    tokens = frozenset(norm.split())
                    echoes.append(cls(f" {norm} ", tokens, _content(tokens)))
        return echoes

    def matches(self, norm: str, tokens: frozenset[str], content: frozenset[str]) -> bool:
        """True if the line is nearly equal to this echo, or restates it (call it only for a
        line that has no content word outside the echoes)."""
        if jaccard(tokens, self.tokens) >= NEAR_DUPLICATE or f" {norm} " in self.text:
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
        for item in _split_inline_numbering(truncate(raw, _MAX_LINE_CHARS)):
            cleaned = _cut_loop(_clean(item))
            if not cleaned:
                continue
            # A long line is usually several sentences: judge them one by one.
            pieces = _SENTENCE_END.split(cleaned) if len(cleaned) > max_chars else [cleaned]
            for piece in pieces:
                examined += 1
                if examined > MAX_SCAN_LINES:
                    return kept
                clue = truncate(_clean(piece), max_chars)
                if not clue or word_count(clue) < min_words or clue.endswith((":", "：")):
                    continue
                if CHATTER.match(clue):
                    continue
                norm = normalised(clue)
                tokens = frozenset(norm.split())
                content = _content(tokens)
                if not content or (min_words > 1 and len(content) < 2 and not CJK.search(clue)):
                    continue
                if any(jaccard(tokens, echo.tokens) >= NEAR_DUPLICATE for echo in echoes):
                    continue
                if not (content - echo_content) and any(
                    echo.matches(norm, tokens, content) for echo in echoes
                ):
                    continue
                if _UNFINISHED.search(clue) and not (content - echo_content):
                    continue  # a lead-in cut off before any new word: "The facts that matter are"
                if any(jaccard(tokens, other) >= NEAR_DUPLICATE for other in kept_tokens):
                    continue
                kept.append(clue)
                kept_tokens.append(tokens)
                if len(kept) >= max_clues:
                    return kept
    return kept
