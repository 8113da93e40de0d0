"""Where a candidate passage lies in the memory: the span of memorized text the heads score.

A candidate is any passage a search returned: a chunk of the engine's own index, a LangChain
``Document``, a LlamaIndex node, a Qdrant point. The heads can score it when its text is text
the memory read. ``MemoryText.locate`` finds that span, in this order:

1. by the document id and character offsets it carries (``metadata["doc_id"]``, ``"start"``,
   ``"end"``; the engine's own chunks always carry them, adapters fill them from the
   framework's fields), checked against the memorized text;
2. by its text inside the document it names (``metadata["doc_id"]`` or its own id);
3. by its text anywhere in the memorized documents.

Text is compared with runs of whitespace collapsed (framework splitters trim and re-join
whitespace). The memorized text is rebuilt from the engine's index chunks, which cover every
non-whitespace character of every document (``retrieval/chunking.py``); a document with no
chunk is located by offsets only. A candidate found nowhere is not in the memory (``None``).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from shared_core.types import Chunk, Passage

_SPACES = re.compile(r"\s+")
#: Located spans remembered per ``MemoryText`` (by passage id and text).
_SPAN_CACHE = 65_536


@dataclass(frozen=True)
class Span:
    """A stretch of memorized text: the document's index in the memory and its char offsets."""

    doc: int
    start: int
    end: int

    def key(self) -> tuple[int, int, int]:
        return (self.doc, self.start, self.end)


def _squeeze(text: str) -> tuple[str, list[int]]:
    """``text`` with whitespace runs as one space, and each kept char's original offset."""
    out: list[str] = []
    where: list[int] = []
    last = 0
    for match in _SPACES.finditer(text):
        out.append(text[last : match.start()])
        where.extend(range(last, match.start()))
        out.append(" ")
        where.append(match.start())
        last = match.end()
    out.append(text[last:])
    where.extend(range(last, len(text)))
    return "".join(out), where


def _norm(text: str) -> str:
    return _SPACES.sub(" ", text).strip()


class MemoryText:
    """The memorized documents' text (rebuilt from index chunks) and a locator over it."""

    def __init__(self, documents: Sequence[Mapping[str, Any]], chunks: Sequence[Chunk]) -> None:
        self.order = {str(d["doc_id"]): i for i, d in enumerate(documents)}
        self.chars = [int(d.get("chars", 0)) for d in documents]
        for chunk in chunks:  # a record without its length: the chunks' extent
            i = self.order.get(chunk.doc_id)
            if i is not None:
                self.chars[i] = max(self.chars[i], chunk.end)
        buffers = [[" "] * n for n in self.chars]
        self.has_text = [False] * len(documents)
        for chunk in chunks:
            i = self.order.get(chunk.doc_id)
            if i is None or chunk.end > self.chars[i] or chunk.start < 0:
                continue
            buffers[i][chunk.start : chunk.end] = chunk.text
            self.has_text[i] = True
        self.texts = ["".join(b) for b in buffers]
        self._joined: tuple[str, list[int], list[int]] | None = None  # squeezed corpus
        self._squeezed: dict[int, tuple[str, list[int]]] = {}
        self._cache: dict[tuple[str, str], Span | None] = {}
        self._lock = threading.Lock()

    def locate(self, passage: Passage) -> Span | None:
        """The span of memorized text ``passage`` is, or ``None`` (not in the memory)."""
        key = (passage.id, passage.text)
        with self._lock:
            if key in self._cache:
                return self._cache[key]
        span = self._locate(passage)
        with self._lock:
            if len(self._cache) >= _SPAN_CACHE:
                self._cache.clear()
            self._cache[key] = span
        return span

    def _locate(self, passage: Passage) -> Span | None:
        meta = passage.metadata
        named = [v for v in (meta.get("doc_id"), passage.id) if isinstance(v, str) and v]
        wanted = _norm(passage.text)
        start, end = meta.get("start"), meta.get("end")
        for doc_id in named:
            i = self.order.get(doc_id)
            if i is None:
                continue
            fits = _is_int(start) and _is_int(end) and 0 <= start < end <= self.chars[i]
            if fits and (not self.has_text[i] or _norm(self.texts[i][start:end]) == wanted):
                return Span(i, start, end)
            found = self._find_in(i, wanted) if wanted and self.has_text[i] else None
            if found is not None:
                return found
        return self._find_anywhere(wanted) if wanted else None

    def _find_in(self, doc: int, wanted: str) -> Span | None:
        with self._lock:
            if doc not in self._squeezed:
                self._squeezed[doc] = _squeeze(self.texts[doc])
            text, where = self._squeezed[doc]
        at = text.find(wanted)
        if at < 0:
            return None
        return Span(doc, where[at], where[at + len(wanted) - 1] + 1)

    def _find_anywhere(self, wanted: str) -> Span | None:
        with self._lock:
            if self._joined is None:
                self._joined = self._join()
            text, doc_of, where = self._joined
        at = text.find(wanted)
        while at >= 0:
            last = at + len(wanted) - 1
            if doc_of[at] == doc_of[last] >= 0:
                return Span(doc_of[at], where[at], where[last] + 1)
            at = text.find(wanted, at + 1)
        return None

    def _join(self) -> tuple[str, list[int], list[int]]:
        """Every document's squeezed text, separated by a NUL char that belongs to none."""
        parts: list[str] = []
        doc_of: list[int] = []
        where: list[int] = []
        for i, text in enumerate(self.texts):
            if not self.has_text[i]:
                continue
            squeezed, offsets = _squeeze(text)
            parts.append(squeezed + "\x00")
            doc_of.extend([i] * len(squeezed) + [-1])
            where.extend([*offsets, -1])
        return "".join(parts), doc_of, where


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class MemoryTextCache:
    """One ``MemoryText`` per (memory documents, index chunks) state, rebuilt when they grow.

    Holds the index object itself (not its ``id``), so a new index is never mistaken for an old
    one that was freed.
    """

    def __init__(self) -> None:
        self._held: tuple[Any, int, int, MemoryText] | None = None
        self._lock = threading.Lock()

    def get(self, index: Any, documents: Sequence[Mapping[str, Any]]) -> MemoryText:
        """The memorized text of ``documents``, rebuilt from ``index.chunks`` when either grew
        or the index is another one."""
        size = len(index)
        with self._lock:
            held = self._held
            if held is not None and held[0] is index and held[1:3] == (len(documents), size):
                return held[3]
        text = MemoryText(documents, index.chunks)
        with self._lock:
            self._held = (index, len(documents), size, text)
        return text


__all__ = ["MemoryText", "MemoryTextCache", "Span"]
