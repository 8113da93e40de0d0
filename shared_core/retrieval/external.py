"""A framework retriever as the engine's search back-end, and the provenance of fused results.

Both adapters plug their framework's retriever into the engine the same way: they wrap it as a
``RankedSource`` (``fetch(query, depth)`` -> the retriever's ranked passages, translated) and
hand ``ExternalSearch(source)`` to ``retrieve(search=...)``. Everything else lives here, once:

- depth: the engine asks each search for ``search_k`` hits (default ``max(k, ret_hit)``, one
  setting for the own index and for framework retrievers) and the source is asked for exactly
  that many (a source that cannot pass a depth on returns what it has: the list is cut here);
- de-duplication: a passage id seen earlier in the same list is dropped, and ranks are counted
  after dropping;
- scores: the framework's score when it gives one, else NaN: the engine then scores the hit by
  its relevance to the search's text (``retrieval/relevance.py``), never by its rank;
- location: :func:`located` puts the framework's document id and character offsets where the
  heads look for them (``heads/candidates.py``), so a store's passage is found in the memory;
- metadata: :func:`passage_metadata` is what a returned passage carries. It is the same for a
  passage whatever the query (framework fusion and de-duplication compare metadata: LangChain
  ``Document`` equality, LlamaIndex ``node.hash``); per-query provenance (which clues found it)
  is added only when asked (``per_query=True``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from shared_core.inputs import check_k
from shared_core.types import Hit, Passage, ScoredPassage

#: Keys :func:`provenance_metadata` adds to a passage's own metadata.
PROVENANCE_KEYS: tuple[str, ...] = ("memorag_clues", "memorag_clue_kinds", "source_id")
#: Per-query keys (added with ``per_query=True`` only).
PER_QUERY_KEYS: tuple[str, ...] = ("memorag_clues", "memorag_clue_kinds")
#: Set to ``False`` on a passage the memory never read (``heads/route.py``).
IN_MEMORY_KEY = "memorag_in_memory"


@dataclass(frozen=True)
class Ranked:
    """One item of a framework retriever's ranked answer: the passage and its score, if any."""

    passage: Passage
    score: float | None = None


class RankedSource(Protocol):
    """A framework retriever seen by the engine: ranked passages for one query."""

    def fetch(self, query: str, depth: int) -> Sequence[Ranked]:
        """Up to ``depth`` passages for ``query``, best first (more are cut, repeats dropped)."""
        ...


@runtime_checkable
class AsyncRankedSource(RankedSource, Protocol):
    """A ``RankedSource`` with a native coroutine ``afetch``."""

    async def afetch(self, query: str, depth: int) -> Sequence[Ranked]:
        """``fetch`` as a coroutine."""
        ...


def to_hits(items: Sequence[Ranked], depth: int) -> list[Hit]:
    """Ranked items -> at most ``depth`` hits, deduplicated by passage id, ranks from 0."""
    hits: list[Hit] = []
    seen: set[str] = set()
    for item in items:
        pid = item.passage.id
        if pid in seen:
            continue
        seen.add(pid)
        rank = len(hits)
        score = item.score
        if score is None or not math.isfinite(score):
            score = math.nan  # the engine scores it by relevance

        hits.append(Hit(passage=item.passage, score=float(score), rank=rank))
        if len(hits) >= depth:
            break
    return hits


class ExternalSearch:
    """A ``SearchBackend`` (and ``AsyncSearchBackend``) over a ``RankedSource``.

    ``asearch`` awaits the source's ``afetch`` when it has one, else runs ``fetch`` in a thread.
    """

    def __init__(self, source: RankedSource) -> None:
        self.source = source

    def search(self, query: str, k: int) -> list[Hit]:
        """The source's first ``k`` distinct passages for ``query``."""
        depth = check_k(k, name="search depth")
        return to_hits(self.source.fetch(query, depth), depth)

    async def asearch(self, query: str, k: int) -> list[Hit]:
        """``search`` without blocking the event loop."""
        import asyncio

        depth = check_k(k, name="search depth")
        if isinstance(self.source, AsyncRankedSource):
            items = await self.source.afetch(query, depth)
        else:
            items = await asyncio.to_thread(self.source.fetch, query, depth)
        return to_hits(items, depth)


def located(
    metadata: Mapping[str, Any],
    doc_id: str | None = None,
    start: int | None = None,
    end: int | None = None,
) -> dict[str, Any]:
    """A framework passage's metadata with its document id and character offsets (when the
    framework gives them) under the keys the heads locate passages by (``doc_id``, ``start``,
    ``end``). The engine's copy only: returned passages keep the framework's own metadata."""
    out = dict(metadata)
    if doc_id:
        out["doc_id"] = str(doc_id)
    if isinstance(start, int) and not isinstance(start, bool):
        out["start"] = start
        if isinstance(end, int) and not isinstance(end, bool):
            out["end"] = end
    return out


def passage_metadata(
    scored: ScoredPassage, base: Mapping[str, Any], *, own: bool, per_query: bool = False
) -> dict[str, Any]:
    """What a returned passage carries: ``base`` (its own metadata: the framework object's, or
    for an engine chunk its document's metadata with ``doc_id``/``start``/``end``/``chunk_id``),
    ``source_id`` for an engine chunk (``own``), ``memorag_in_memory=False`` when the memory
    never read it, and with ``per_query`` the clues that found it."""
    out = {"source_id": scored.passage.id, **base} if own else dict(base)
    if scored.passage.metadata.get(IN_MEMORY_KEY) is False:
        out[IN_MEMORY_KEY] = False
    if per_query:
        out["memorag_clues"] = [clue.text for clue in scored.found_by]
        out["memorag_clue_kinds"] = [clue.kind for clue in scored.found_by]
    return out


def provenance_metadata(scored: ScoredPassage, base: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` (a passage's own metadata) plus where the fused passage came from.

    ``memorag_clues`` / ``memorag_clue_kinds``: the clues whose searches found it, in fusion
    order; ``source_id``: the passage id, unless ``base`` already has one.
    """
    return {
        "source_id": scored.passage.id,
        **base,
        "memorag_clues": [clue.text for clue in scored.found_by],
        "memorag_clue_kinds": [clue.kind for clue in scored.found_by],
    }


__all__ = [
    "IN_MEMORY_KEY",
    "PER_QUERY_KEYS",
    "PROVENANCE_KEYS",
    "AsyncRankedSource",
    "ExternalSearch",
    "Ranked",
    "RankedSource",
    "located",
    "passage_metadata",
    "provenance_metadata",
    "to_hits",
]
