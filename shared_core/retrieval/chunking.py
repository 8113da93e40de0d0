"""Split documents into token-bounded chunks of whole sentences.

Each chunk is an exact slice of its document (``chunk.text == doc.text[chunk.start:chunk.end]``),
every non-whitespace character lies in at least one chunk, and the work is linear in the text
length: sentences are found with one regex pass and counted once each (in batches when a
Hugging Face tokenizer is used), never by re-tokenizing a growing string.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from shared_core.errors import InputError
from shared_core.types import Chunk, Document

CountFn = Callable[[str], int]
BatchCountFn = Callable[[list[str]], list[int]]

#: Sentence ends: Latin terminal punctuation (a boundary only when followed by whitespace or the
#: end of the text, checked in Python so the regex never backtracks), CJK full stops, newlines.
_LATIN_END = re.compile(r"[.!?…]+[\"'”’)\]]*|[。！？]+[」』”’）)]*|\n")
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\U00020000-\U0002fa1f"
_APPROX_PIECE = re.compile(f"([{_CJK}])|[^\\s{_CJK}]+")
#: A run of non-space characters counts as one word per started ``_WORD_CHARS`` characters, so a
#: long line without spaces (URLs, base64, minified code) still gets a realistic count.
_WORD_CHARS = 8
#: No text is taken to hold more characters per token than this, whatever the counter says
#: (WordPiece maps a whole over-long word to a single ``[UNK]``).
_MAX_CHARS_PER_TOKEN = 12
#: Counting batch size when a tokenizer accepts lists.
_COUNT_BATCH = 512


def approx_token_count(text: str) -> int:
    """Cheap token estimate: ``ceil(1.3 * words)`` plus one token per CJK character."""
    words = 0
    cjk = 0
    for match in _APPROX_PIECE.finditer(text):
        if match.lastindex:
            cjk += 1
        else:
            words += -(-(match.end() - match.start()) // _WORD_CHARS)
    return cjk + math.ceil(words * 1.3)


@dataclass(frozen=True)
class _Unit:
    """A packing unit: a trimmed sentence (or a piece of a too-long one) and its token count."""

    start: int
    end: int
    tokens: int


class TokenChunker:
    """Pack whole sentences into chunks of at most ``chunk_tokens`` tokens.

    ``count_tokens`` counts the tokens of a string (default: :func:`approx_token_count`).
    ``overlap_tokens`` worth of trailing sentences of a chunk are repeated at the start of the
    next one. A sentence longer than a chunk is split at whitespace, else between characters.
    """

    def __init__(
        self,
        count_tokens: CountFn | None = None,
        chunk_tokens: int = 512,
        overlap_tokens: int = 32,
    ) -> None:
        if isinstance(chunk_tokens, bool) or not isinstance(chunk_tokens, int) or chunk_tokens < 1:
            raise InputError(f"chunk_tokens must be a positive int, got {chunk_tokens!r}")
        if (
            isinstance(overlap_tokens, bool)
            or not isinstance(overlap_tokens, int)
            or not 0 <= overlap_tokens < chunk_tokens
        ):
            raise InputError(
                f"overlap_tokens must be an int in [0, chunk_tokens={chunk_tokens}), "
                f"got {overlap_tokens!r}"
            )
        if count_tokens is not None and not callable(count_tokens):
            raise InputError("count_tokens must be a callable taking a str and returning an int")
        self.count_tokens: CountFn = count_tokens or approx_token_count
        self.chunk_tokens = chunk_tokens
        self.overlap_tokens = overlap_tokens
        self._count_batch: BatchCountFn | None = None

    @classmethod
    def from_tokenizer(
        cls, hf_tokenizer: Any, chunk_tokens: int = 512, overlap_tokens: int = 32
    ) -> TokenChunker:
        """Count tokens with a Hugging Face tokenizer (no special tokens), in batches."""

        def count(text: str) -> int:
            return len(hf_tokenizer(text, add_special_tokens=False, verbose=False).input_ids)

        def count_batch(texts: list[str]) -> list[int]:
            ids = hf_tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
            return [len(one) for one in ids]

        chunker = cls(count, chunk_tokens=chunk_tokens, overlap_tokens=overlap_tokens)
        chunker._count_batch = count_batch
        return chunker

    # ------------------------------------------------------------------ public

    def split(self, documents: Sequence[Document]) -> list[Chunk]:
        """Chunk every document, in order; chunk ids are ``f"{doc_id}#{i}"``."""
        chunks: list[Chunk] = []
        for doc in documents:
            if not doc.doc_id:
                raise InputError("every document needs a doc_id before chunking")
            for i, (start, end) in enumerate(self.spans(doc.text)):
                chunks.append(
                    Chunk(
                        chunk_id=f"{doc.doc_id}#{i}",
                        doc_id=doc.doc_id,
                        text=doc.text[start:end],
                        start=start,
                        end=end,
                        metadata=dict(doc.metadata),
                    )
                )
        return chunks

    def spans(self, text: str) -> list[tuple[int, int]]:
        """The ``(start, end)`` offsets of the chunks of one text."""
        units = self._units(text)
        return [(units[a].start, units[b - 1].end) for a, b in self._pack(units)]

    # ------------------------------------------------------------------ units

    def _count_many(self, texts: list[str]) -> list[int]:
        if self._count_batch is None:
            counts = [self.count_tokens(t) for t in texts]
        else:
            counts = []
            for i in range(0, len(texts), _COUNT_BATCH):
                counts.extend(self._count_batch(texts[i : i + _COUNT_BATCH]))
        return [_floor_count(t, c) for t, c in zip(texts, counts, strict=True)]

    def _units(self, text: str) -> list[_Unit]:
        sentences = list(_sentence_spans(text))
        counts = self._count_many([text[s:e] for s, e in sentences])
        units: list[_Unit] = []
        for (start, end), tokens in zip(sentences, counts, strict=True):
            if tokens <= self.chunk_tokens:
                units.append(_Unit(start, end, tokens))
            else:
                units.extend(self._hard_split(text, start, end, tokens))
        return units

    def _hard_split(self, text: str, start: int, end: int, tokens: int) -> list[_Unit]:
        """Cut one over-long sentence into pieces of at most ``chunk_tokens`` tokens."""
        limit = self.chunk_tokens
        chars_per_token = (end - start) / tokens
        units: list[_Unit] = []
        pos = start
        while pos < end:
            target = max(1, int(limit * chars_per_token * 0.9))
            while True:
                cut = _cut_point(text, pos, end, target)
                piece = text[pos:cut]
                count = _floor_count(piece, self.count_tokens(piece))
                if count <= limit or cut - pos <= 1:
                    break
                target = max(1, min(cut - pos - 1, int((cut - pos) * limit / count * 0.9)))
            units.append(_Unit(pos, cut, count))
            pos = _skip_space(text, cut, end)
        return units

    # ------------------------------------------------------------------ packing

    def _pack(self, units: list[_Unit]) -> list[tuple[int, int]]:
        """Greedy packing of unit indexes into ``[first, last)`` ranges, with overlap."""
        ranges: list[tuple[int, int]] = []
        if not units:
            return ranges
        first = 0  # first unit of the current chunk (may be an overlap unit)
        fresh = 0  # first unit of the current chunk that no earlier chunk holds
        total = 0
        idx = 0
        while idx < len(units):
            tokens = units[idx].tokens
            if idx > fresh and total + tokens > self.chunk_tokens:
                ranges.append((first, idx))
                first = self._overlap_start(units, first, idx, tokens)
                fresh = idx
                total = sum(u.tokens for u in units[first:idx])
                continue
            total += tokens
            idx += 1
        ranges.append((first, len(units)))
        return ranges

    def _overlap_start(self, units: list[_Unit], prev_first: int, idx: int, incoming: int) -> int:
        """Index of the first trailing unit of the closed chunk ``[prev_first, idx)`` to repeat."""
        start = idx
        carried = 0
        while start - 1 > prev_first:
            tokens = units[start - 1].tokens
            if carried + tokens > self.overlap_tokens:
                break
            if carried + tokens + incoming > self.chunk_tokens:
                break
            carried += tokens
            start -= 1
        return start


def _floor_count(text: str, count: int) -> int:
    """At least one token (keeps packing moving) and at most ``_MAX_CHARS_PER_TOKEN`` chars each."""
    return max(1, int(count), -(-len(text) // _MAX_CHARS_PER_TOKEN))


def _sentence_spans(text: str) -> Iterator[tuple[int, int]]:
    """Yield trimmed, non-empty sentence spans in order."""
    pos = 0
    size = len(text)
    for match in _LATIN_END.finditer(text):
        end = match.end()
        first = match.group()[0]
        if first in ".!?…" and end < size and not text[end].isspace():
            continue
        span = _trim(text, pos, end)
        if span is not None:
            yield span
        pos = end
    span = _trim(text, pos, size)
    if span is not None:
        yield span


def _trim(text: str, start: int, end: int) -> tuple[int, int] | None:
    segment = text[start:end]
    stripped = segment.strip()
    if not stripped:
        return None
    lead = len(segment) - len(segment.lstrip())
    return start + lead, start + lead + len(stripped)


def _cut_point(text: str, pos: int, end: int, target: int) -> int:
    """End of the piece starting at ``pos``: prefer the last whitespace in its second half."""
    if pos + target >= end:
        return end
    limit = pos + target
    low = pos + max(1, target // 2)
    for w in range(limit, low - 1, -1):
        if text[w].isspace():
            back = w
            while back > pos and text[back - 1].isspace():
                back -= 1
            if back > pos:
                return back
            break
    return limit


def _skip_space(text: str, pos: int, end: int) -> int:
    while pos < end and text[pos].isspace():
        pos += 1
    return pos
