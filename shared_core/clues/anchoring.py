"""Anchoring: each memory clue is searched as the query plus the clue's new words."""

from __future__ import annotations

import re
from collections.abc import Sequence

from shared_core.clues.parsing import (
    CJK,
    CJK_CHAR,
    STOPWORDS,
    word_tokens,
)
from shared_core.types import Clue

#: Clue kinds the memory writes (anchoring leaves the query, history and custom keys alone).
ANCHORED_KINDS: frozenset[str] = frozenset({"span", "surrogate", "answer"})
_NOVEL = re.compile(f"[{CJK_CHAR}]|[^\\W_][\\w'’-]*")


def novel_words(clue: str, query: str) -> list[str]:
    """The clue's content words that ``query`` lacks, in order, once each."""
    seen = set(word_tokens(query)) | STOPWORDS
    out: list[str] = []
    for word in _NOVEL.findall(clue):
        # "Frankenstein's" is the query's "Frankenstein": compare the word's own tokens.
        parts = [t for t in word_tokens(word) if CJK.match(t) or len(t) > 1]
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
