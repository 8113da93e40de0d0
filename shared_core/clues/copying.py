"""Copy-from-text decoding: evidence clues that are verbatim spans of the memorized text.

A small memory asked to recall evidence paraphrases or invents it, so its "evidence" rarely
appears in the corpus. ``CopySource`` holds the corpus as the memory model's token ids; its
``constraint()`` is a decoding constraint that lets the model choose *which* span to copy
(the first token of each line may be any word start of the text, every later token must
continue an occurrence of the line so far) but not invent words. Each line is one span; a
span ends with a newline once it is ``min_tokens`` long, at ``max_tokens``, or where the text
ends. Spans already copied are not offered again.

The memory's likelihoods still pick the span, so the choice is informed by what it read;
the constraint only guarantees the clue is real text, which is what dense retrieval needs.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from shared_core.errors import InputError

__all__ = ["CopySource", "CopySourceCache", "SpanCopier"]

_SEP = -1  # between texts and in place of tokens that contain a line break


def _piece_flags(tokenizer: Any, ids: np.ndarray) -> dict[str, np.ndarray]:
    """Per position: the token has a letter/digit, starts with space, ends with space."""
    flags = {"alnum": set(), "lead": set(), "trail": set(), "newline": set()}
    for tid in np.unique(ids[ids >= 0]).tolist():
        piece = tokenizer.decode([int(tid)])
        if any(ch.isalnum() for ch in piece):
            flags["alnum"].add(tid)
        if piece[:1].isspace():
            flags["lead"].add(tid)
        if piece[-1:].isspace():
            flags["trail"].add(tid)
        if "\n" in piece:
            flags["newline"].add(tid)
    return {name: np.isin(ids, sorted(group)) for name, group in flags.items()}


@dataclass(frozen=True)
class CopySource:
    """A corpus as one token-id array (texts joined by separators) for ``SpanCopier``."""

    ids: np.ndarray  # int64, separators -1, one trailing separator
    starts: np.ndarray  # bool: a span may begin here
    newline_id: int

    @classmethod
    def from_texts(cls, texts: Sequence[str], tokenizer: Any) -> CopySource:
        """Tokenize ``texts`` with the memory model's tokenizer."""
        newline = tokenizer.encode("\n", add_special_tokens=False)
        if len(newline) != 1:
            raise InputError("copying spans needs a tokenizer with a single-token line break")
        parts: list[int] = []
        first: list[int] = []
        for text in texts:
            if not text or not text.strip():
                continue
            first.append(len(parts))
            parts.extend(tokenizer.encode(text, add_special_tokens=False))
            parts.append(_SEP)
        if not parts:
            raise InputError("there is no text to copy spans from")
        ids = np.asarray(parts, dtype=np.int64)
        flags = _piece_flags(tokenizer, ids)
        # Line breaks end spans: tokens holding one become separators (after the flags, so
        # the word after a break still counts as a word start).
        after_break = np.zeros(len(ids), dtype=bool)
        after_break[first] = True
        after_break[1:] |= (ids[:-1] == _SEP) | flags["newline"][:-1] | flags["trail"][:-1]
        ids[flags["newline"]] = _SEP
        starts = flags["alnum"] & (flags["lead"] | after_break) & (ids >= 0)
        return cls(ids=ids, starts=starts, newline_id=int(newline[0]))

    def __len__(self) -> int:
        return int((self.ids >= 0).sum())

    def constraint(
        self,
        end_ids: Sequence[int],
        *,
        max_spans: int = 3,
        min_tokens: int = 8,
        max_tokens: int = 40,
    ) -> SpanCopier:
        """A fresh constraint for one decoding run."""
        return SpanCopier(
            self, end_ids, max_spans=max_spans, min_tokens=min_tokens, max_tokens=max_tokens
        )


class SpanCopier:
    """The decoding constraint of one run: lines that are spans of a ``CopySource``."""

    def __init__(
        self,
        source: CopySource,
        end_ids: Sequence[int],
        *,
        max_spans: int,
        min_tokens: int,
        max_tokens: int,
    ) -> None:
        if not end_ids:
            raise InputError("copying spans needs at least one end-of-reply token id")
        if not 1 <= min_tokens <= max_tokens:
            raise InputError(f"need 1 <= min_tokens <= max_tokens, got {min_tokens}, {max_tokens}")
        self.source = source
        self.end_ids = sorted({int(t) for t in end_ids})
        self.max_spans = max_spans
        self.min_tokens = min_tokens
        self.max_tokens = max_tokens
        self.used = np.zeros(len(source.ids), dtype=bool)
        self.spans = 0
        self.length = 0  # tokens in the current line
        self.cand: np.ndarray | None = None  # next positions of the line's occurrences

    def allowed(self) -> list[int]:
        if self.spans >= self.max_spans:
            return self.end_ids
        ids = self.source.ids
        if self.cand is None:
            free = ids[self.source.starts & ~self.used]
            return np.unique(free).tolist() if len(free) else self.end_ids
        nxt = ids[self.cand]
        options = np.unique(nxt[nxt >= 0]).tolist() if self.length < self.max_tokens else []
        if self.length >= self.min_tokens or not options:
            options.append(self.source.newline_id)
        return options

    def advance(self, token: int) -> None:
        ids = self.source.ids
        if self.cand is not None and token == self.source.newline_id:
            first = int(self.cand[0])
            self.used[first - self.length : first] = True
            self.spans += 1
            self.cand, self.length = None, 0
            return
        if self.cand is None:
            where = np.flatnonzero((ids == token) & self.source.starts & ~self.used)
        else:
            where = self.cand[ids[self.cand] == token]
        if len(where) == 0:  # the decoder broke the constraint (e.g. an end token)
            return
        self.cand = where + 1
        self.length += 1


class CopySourceCache:
    """One ``CopySource`` for the corpus an index holds, rebuilt when the index, its size or
    the tokenizer changes. The entry holds the index and tokenizer it was built from (compared
    by identity), so a later object at the same address can never match it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entry: tuple[object, int, object, CopySource] | None = None

    def get(self, index: Any, tokenizer: Any) -> CopySource:
        """The copy source of ``index.chunks`` in ``tokenizer``'s ids (indexes only grow, so
        the same index at the same size holds the same chunks)."""
        with self._lock:
            entry, size = self._entry, len(index)
            if (
                entry is None
                or entry[0] is not index
                or entry[1] != size
                or entry[2] is not tokenizer
            ):
                texts = [chunk.text for chunk in index.chunks]
                entry = (index, size, tokenizer, CopySource.from_texts(texts, tokenizer))
                self._entry = entry
            return entry[3]
