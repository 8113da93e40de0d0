"""Search keys: the query, the caller's extra queries and the memory's clues, once each
(``types.KeyKind`` names what each key is)."""

from __future__ import annotations

from collections.abc import Sequence

from shared_core.clues.anchoring import anchor_clues
from shared_core.clues.writers import NoClues
from shared_core.types import Clue, KeyKind


def retrieval_keys(
    query: str,
    clues: Sequence[Clue],
    extra: Sequence[str] = (),
    *,
    query_weight: float,
    anchor: bool,
) -> list[Clue]:
    """The query first (``query_weight``), then ``extra``, then ``clues``; with ``anchor`` each
    memory clue is searched as the query (or the standalone follow-up) plus its new words."""
    if anchor:
        base = next((c.text for c in clues if c.kind == KeyKind.HISTORY), query)
        clues = anchor_clues(clues, base)
    keys = [Clue(text=query, kind=KeyKind.QUERY, weight=query_weight)]
    keys += [Clue(text=e, kind=KeyKind.CUSTOM) for e in extra if isinstance(e, str) and e.strip()]
    keys += clues
    seen: set[str] = set()
    unique = []
    for key in keys:
        norm = " ".join(key.text.lower().split())
        if norm not in seen:
            seen.add(norm)
            unique.append(key)
    return unique


#: Said (a warning and ``RetrievalResult.notes``) when the clue writer wrote no clue.
NO_CLUES_NOTE = "the memory wrote no clues for this query: only the query itself was searched"


def clue_notes(clues: Sequence[Clue], writer: object) -> tuple[str, ...]:
    """``(NO_CLUES_NOTE,)`` when ``writer`` (not the "none" strategy) wrote nothing."""
    written = [c for c in clues if c.kind != KeyKind.HISTORY]  # a follow-up's rewrite is not a clue
    return (NO_CLUES_NOTE,) if not written and not isinstance(writer, NoClues) else ()
