"""Short answers copied from the evidence, each with the passage it came from.

A 135M generator asked to answer freely restates the question or buries the right words in a
sentence; asked to *choose*, it does much better. ``SpanScoring`` (the default) lists
candidate phrases of the retrieved passages (runs of up to ``max_words`` words inside one
clause, none of them only the question's own words) and lets the model score each as its whole
reply, ``log p(phrase, then end | passages, question)``; the best phrase is the answer.
``SpanDecoding`` decodes greedily under a constraint that admits only verbatim runs of the
passages' tokens (``clues.copying.CopySource``). Yes/no questions ("Is ...", "Did ...") are
answered by comparing the model's scores of "Yes" and "No"; "..., A or B?" questions choose
between the options where the passages contain them.

Every answer is ``passage.text[start:end]`` of a passage it cites (``Citation``).
"""

from __future__ import annotations

import bisect
import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from shared_core.clues.copying import CopySource
from shared_core.errors import InputError
from shared_core.models.decoding import CopyingGenerator
from shared_core.models.generation import LocalGenerator, format_passages
from shared_core.models.span_scoring import PromptScorer
from shared_core.prompts import PromptSet
from shared_core.types import Citation, Passage, ScoredPassage

__all__ = [
    "MemoryCopying",
    "ShortAnswer",
    "ShortAnswerer",
    "SpanDecoding",
    "SpanScoring",
    "is_yes_no",
    "wants_long_answer",
]

_AUX = (
    "is|are|was|were|am|do|does|did|can|could|has|have|had|will|would|should|shall|may|might|must"
)
_YES_NO = re.compile(rf"^\s*(?:{_AUX})\b", re.IGNORECASE)
_CHOICE = re.compile(
    r"[,:]\s*(?:the\s+)?(?P<a>[^,?:]+?)\s+or\s+(?:the\s+)?(?P<b>[^,?:]+?)\s*(?:[,?]|$)"
)
_LONG = re.compile(
    r"^\s*(?:please\s+|can you\s+|could you\s+)?(?:summari[sz]e|describe|explain|discuss|"
    r"tell me|list|outline|compare|why\b|how would|what would happen|"
    r"how (?:did|does|do) .+ (?:respond|answer|approach|introduce|design|ensure))|"
    r"\b(?:summary|discuss\w*|describ\w*|explain\w*|opinions?|think|thought|feel|problems|"
    r"issues|reasons?|conclu\w*|decid\w*|decisions?|agreed?|status|general discussion|overall|"
    r"main points|(?:meeting|presentation)\b.*\babout|say|said|talk\w*|debate\w*|"
    r"comment\w*|elaborat\w*|recommend\w*|propos\w*|suggest\w*|mention\w*|"
    r"contribut\w*|advantages|lessons|solutions?|plan|polic(?:y|ies)|"
    r"impact|controversy|strategy|findings?)\b",
    re.IGNORECASE,
)
_WORD = re.compile(r"[^\W_]+(?:[’'.,&\-][^\W_]+)*")  # "_" is markup, not a letter
#: Clause breaks a phrase may not cross.
#: A full stop that ends a sentence: not after an initial ("O. Egeberg") or a title ("Mrs.").
_STOP_DOT = (
    r"(?<!\b[A-Z])(?<!\bMr)(?<!\bMrs)(?<!\bMs)(?<!\bDr)(?<!\bSt)(?<!\bJr)(?<!\bMt)"
    r"\.(?:\s|$)"
)
_BREAK = re.compile(rf"[;:!?()\[\]{{}}\"“”\n]|{_STOP_DOT}")
_STOP = frozenset(
    "a an the of in on at to for from by with and or but as is are was were be been being "
    "that which who whom whose this these those it its his her their our your my he she they "
    "we you i also not no than then there here into over under about after before during "
    "while when where what how why".split()
)


def is_yes_no(question: str) -> bool:
    """A question that starts with an auxiliary verb ("Is ...", "Did ...") and offers no
    choice ("..., A or B?")."""
    return bool(_YES_NO.match(question)) and _CHOICE.search(question) is None


def wants_long_answer(question: str) -> bool:
    """A request for a summary, an explanation or an account of a discussion ("Summarize ...",
    "Why ...", "What did X think about ...", "What was decided on ..."): answered in free
    text, never as a copied phrase."""
    return bool(_LONG.search(question))


@dataclass(frozen=True)
class ShortAnswer:
    """The chosen answer and where it came from."""

    text: str
    citations: tuple[Citation, ...]
    kind: str  # "span", "choice" or "yes_no"


class ShortAnswerer(Protocol):
    """Chooses a short answer to ``question`` from ``passages``."""

    def answer(
        self,
        generator: LocalGenerator,
        prompts: PromptSet,
        question: str,
        passages: Sequence[ScoredPassage],
    ) -> ShortAnswer: ...


@dataclass(frozen=True)
class _Span:
    text: str
    index: int  # which passage
    start: int
    end: int
    prior: float = 0.0  # how well the phrase fits the question before the model is asked


def _cite(passage: Passage, start: int, end: int) -> Citation:
    doc_id = str(passage.metadata.get("doc_id", passage.id))
    return Citation(passage.id, doc_id, start, end, passage.text[start:end])


def _words(text: str) -> set[str]:
    return {w.lower() for w in _WORD.findall(text)}


_NUMERIC = re.compile(
    r"\b(?:how (?:many|much|old|long|tall|far|large|big|high)|what year|which year|when|"
    r"what date|population)\b",
    re.IGNORECASE,
)
_HEAD = re.compile(r"\b(?:what|which)\s+(\w+)", re.IGNORECASE)
_SENTENCE = re.compile(rf"[!?](?:\s|$)|\n|{_STOP_DOT}")


def _stem(word: str) -> str:
    return word.lower()[:5]


def _content(text: str) -> set[str]:
    return {_stem(w) for w in _WORD.findall(text) if w.lower() not in _STOP}


class _Fit:
    """How well a phrase fits a question, before the model is asked: the question's words
    around it (its sentence) and the kind of answer asked for (a number, a name, the noun
    after "which"/"what")."""

    def __init__(self, question: str) -> None:
        self.asked = _content(question)
        self.numeric = bool(_NUMERIC.search(question))
        head = _HEAD.search(question)
        self.head = _stem(head.group(1)) if head and head.group(1).lower() not in _STOP else ""

    def __call__(self, phrase: str, sentence: str) -> float:
        own = _content(phrase)
        near = len((_content(sentence) - own) & self.asked) / max(1, len(self.asked))
        words = [w for w in _WORD.findall(phrase) if w.lower() not in _STOP]
        if self.numeric:
            kind = 1.0 if any(ch.isdigit() for ch in phrase) else 0.0
        else:
            kind = 1.0 if words and all(w[:1].isupper() or w[:1].isdigit() for w in words) else 0.0
        if self.head and words and _stem(words[-1]) == self.head:
            kind += 1.0
        return 2.0 * near + kind


def candidate_spans(
    passages: Sequence[Passage], question: str, *, max_words: int = 6
) -> list[_Span]:
    """Phrases of the passages that could answer ``question``: runs of 1..``max_words``
    words inside one clause, not starting or ending with a function word ("the" may start
    one), with a word the question does not contain; first occurrence kept, each with its
    ``_Fit`` to the question."""
    asked = _words(question)
    fit = _Fit(question)
    seen: set[str] = set()
    spans: list[_Span] = []
    for index, passage in enumerate(passages):
        text = passage.text
        ends = [0, *(m.end() for m in _SENTENCE.finditer(text)), len(text)]
        cuts = [0, *(m.end() for m in _BREAK.finditer(text)), len(text)]
        for lo, hi in itertools.pairwise(cuts):
            words = list(_WORD.finditer(text, lo, hi))
            at = bisect.bisect_right(ends, lo) - 1
            sentence = text[ends[at] : ends[min(at + 1, len(ends) - 1)]]
            for i, first in enumerate(words):
                if first.group().lower() in _STOP and first.group().lower() != "the":
                    continue
                for last in words[i : i + max_words]:
                    if last.group().lower() in _STOP:
                        continue
                    phrase = text[first.start() : last.end()]
                    key = " ".join(phrase.lower().split())
                    if key in seen or _words(phrase) <= asked:
                        continue
                    seen.add(key)
                    prior = fit(phrase, sentence)
                    spans.append(_Span(phrase, index, first.start(), last.end(), prior))
    return spans


def _choices(passages: Sequence[Passage], question: str) -> list[_Span]:
    """The options of "..., A or B?" as they occur in the passages (case-insensitive)."""
    match = _CHOICE.search(question)
    if match is None:
        return []
    found = []
    for option in (match.group("a"), match.group("b")):
        pattern = re.compile(re.escape(option.strip()), re.IGNORECASE)
        for index, passage in enumerate(passages):
            hit = pattern.search(passage.text)
            if hit:
                found.append(_Span(hit.group(), index, hit.start(), hit.end()))
                break
    return found if len(found) == 2 else []


def _end_ids(generator: LocalGenerator, scorer: PromptScorer) -> set[int]:
    """Tokens that end a short reply: the model's end tokens, a full stop, a line break."""
    ends = set(generator.end_ids)
    for text in (".", "\n"):
        ids = scorer.encode(text)
        if len(ids) == 1:
            ends.add(ids[0])
    return ends


def _variants(scorer: PromptScorer, *words: str) -> list[int]:
    ids = {tuple(scorer.encode(w)) for w in words}
    return sorted({t[0] for t in ids if t})


def _yes_no(
    generator: LocalGenerator,
    prompts: PromptSet,
    question: str,
    passages: Sequence[ScoredPassage],
) -> ShortAnswer:
    prompt = prompts.yes_no.format(context=format_passages(passages), question=question)
    scorer = PromptScorer(generator, prompt)
    yes, no = scorer.compare(
        [_variants(scorer, "Yes", "yes", "YES", "是"), _variants(scorer, "No", "no", "NO", "否")]
    )
    # a comparison rests on the passages of both things compared: cite the top two whole
    cited = tuple(_cite(p.passage, 0, len(p.passage.text)) for p in passages[:2])
    return ShortAnswer("yes" if yes >= no else "no", cited, "yes_no")


def _checked(passages: Sequence[ScoredPassage]) -> None:
    if not passages or not any(p.passage.text.strip() for p in passages):
        raise InputError("a short answer needs at least one retrieved passage with text")


@dataclass(frozen=True)
class SpanScoring:
    """The model scores candidate phrases as whole replies; the best one wins.

    The ``shortlist`` phrases that fit the question best (``_Fit``: its words around them,
    the kind of answer asked for) are scored by the model; a phrase's score is its mean
    log-probability per token (the end of the reply counted as one) plus its fit
    (``length_norm=False``: the summed log-probability instead, which favours one-token
    replies such as a year).
    """

    max_words: int = 6
    shortlist: int = 32
    length_norm: bool = True

    def answer(
        self,
        generator: LocalGenerator,
        prompts: PromptSet,
        question: str,
        passages: Sequence[ScoredPassage],
    ) -> ShortAnswer:
        _checked(passages)
        if is_yes_no(question):
            return _yes_no(generator, prompts, question, passages)
        plain = [p.passage for p in passages]
        choices = _choices(plain, question)
        spans = choices or candidate_spans(plain, question, max_words=self.max_words)
        if not spans:  # every word of the passages is in the question
            first = plain[0]
            spans = [_Span(first.text.strip(), 0, 0, len(first.text))]
        prompt = prompts.short_answer.format(context=format_passages(passages), question=question)
        scorer = PromptScorer(generator, prompt)
        ends = _end_ids(generator, scorer)
        tokens = [scorer.encode(s.text) or [0] for s in spans]
        shortlist = sorted(range(len(spans)), key=lambda i: -spans[i].prior)[: self.shortlist]
        scores = scorer.score([tokens[i] for i in shortlist], ends)
        if self.length_norm:
            scores = [v / (len(tokens[i]) + 1) for v, i in zip(scores, shortlist, strict=True)]
        totals = [v + spans[i].prior for v, i in zip(scores, shortlist, strict=True)]
        best = shortlist[max(range(len(shortlist)), key=totals.__getitem__)]
        span = spans[best]
        kind = "choice" if choices else "span"
        return ShortAnswer(span.text, (_cite(plain[span.index], span.start, span.end),), kind)


class _PhraseCopier:
    """A decoding constraint: one verbatim run of the passages' tokens, then an end token."""

    def __init__(self, source: CopySource, end_ids: Sequence[int], max_tokens: int) -> None:
        self.source, self.end_ids, self.max_tokens = source, sorted(set(end_ids)), max_tokens
        self.cand: np.ndarray | None = None
        self.length = 0
        self.done = False

    def allowed(self) -> list[int]:
        ids = self.source.ids
        if self.done:
            return self.end_ids
        if self.cand is None:
            return sorted(set(ids[self.source.starts].tolist()))
        nxt = ids[self.cand]
        options = set(nxt[nxt >= 0].tolist()) if self.length < self.max_tokens else set()
        return sorted(options | set(self.end_ids))

    def advance(self, token: int) -> None:
        ids = self.source.ids
        if self.cand is None:
            where = np.flatnonzero((ids == token) & self.source.starts)
        else:
            where = self.cand[ids[self.cand] == token]
        if len(where) == 0:
            self.done = True
            return
        self.cand, self.length = where + 1, self.length + 1


@dataclass(frozen=True)
class SpanDecoding:
    """Greedy decoding that may only copy one run of the passages' tokens (``max_tokens``)."""

    max_tokens: int = 12

    def answer(
        self,
        generator: LocalGenerator,
        prompts: PromptSet,
        question: str,
        passages: Sequence[ScoredPassage],
    ) -> ShortAnswer:
        _checked(passages)
        if is_yes_no(question):
            return _yes_no(generator, prompts, question, passages)
        plain = [p.passage for p in passages]
        source = CopySource.from_texts([p.text for p in plain], generator.tokenizer)
        prompt = prompts.short_answer.format(context=format_passages(passages), question=question)
        constraint = _PhraseCopier(source, sorted(generator.end_ids), self.max_tokens)
        reply = generator.generate_constrained(
            prompt, constraint, max_new_tokens=self.max_tokens + 1
        ).text
        span = _locate(reply, plain)
        return ShortAnswer(span.text, (_cite(plain[span.index], span.start, span.end),), "span")


class _OneOf:
    """A decoding constraint: one of a few given first tokens, then an end token."""

    def __init__(self, first: Sequence[int], end_ids: Sequence[int]) -> None:
        self.first, self.end_ids, self.started = sorted(set(first)), sorted(set(end_ids)), False

    def allowed(self) -> list[int]:
        return self.end_ids if self.started else self.first

    def advance(self, token: int) -> None:
        self.started = True


@dataclass(frozen=True)
class MemoryCopying:
    """``qa`` (the memory alone, no retrieval): the memory copies one run of the text it read
    (the corpus as a ``CopySource``), or answers a yes/no question with yes or no."""

    max_tokens: int = 12

    def answer(
        self,
        memory: CopyingGenerator,
        prompts: PromptSet,
        question: str,
        source: CopySource,
        passages: Sequence[Passage],
    ) -> ShortAnswer:
        prompt = prompts.draft_answer.format(question=question)
        ends = sorted(memory.end_ids)
        if is_yes_no(question):
            encode = memory.tokenizer.encode  # type: ignore[attr-defined]
            yes = {encode(w, add_special_tokens=False)[0] for w in ("Yes", "yes", "是")}
            no = {encode(w, add_special_tokens=False)[0] for w in ("No", "no", "否")}
            reply = memory.generate_constrained(prompt, _OneOf([*yes, *no], ends), max_new_tokens=2)
            picked = encode(reply.text, add_special_tokens=False)[:1]
            return ShortAnswer("yes" if picked and picked[0] in yes else "no", (), "yes_no")
        constraint = _PhraseCopier(source, ends, self.max_tokens)
        reply = memory.generate_constrained(prompt, constraint, max_new_tokens=self.max_tokens + 1)
        span = _locate(reply.text, passages)
        return ShortAnswer(span.text, (_cite(passages[span.index], span.start, span.end),), "span")


def _locate(reply: str, passages: Sequence[Passage]) -> _Span:
    """Where the copied ``reply`` occurs in the passages (whitespace may differ)."""
    words = reply.split()
    if words:
        pattern = re.compile(r"\s+".join(re.escape(w) for w in words))
        for index, passage in enumerate(passages):
            hit = pattern.search(passage.text)
            if hit:
                return _Span(hit.group(), index, hit.start(), hit.end())
    first = passages[0].text
    word = _WORD.search(first)
    lo, hi = (word.start(), word.end()) if word else (0, len(first))
    return _Span(first[lo:hi], 0, lo, hi)
