"""Merge the hit lists of several clues into one ranked list of passages.

``rrf``: weighted reciprocal rank fusion, exactly ``min(k, distinct passages)`` results.
``interleave``: round-robin over the lists (heaviest first): every list's best hit is taken
before any list's second, so a passage only one clue finds still gets a slot.
``union``: upstream MemoRAG's behaviour, the union of each list's top hits in document order.
``zscore``: score-aware: each list's hit scores become z-scores over that list, a passage a list
does not hold gets the list's lowest z, and the weighted sum ranks (used to fuse the memory's
attention ranking, kind ``attention``, with the query's dense list).

What ``fuse`` returns as ``ScoredPassage.score`` (``scores="relevance"``, the default): the
similarity of the passage under the lists that found it, never rising down the list. For a
passage it is the best ``Hit.score`` it got from a non-``attention`` list (with the engine's
dense index: the cosine similarity between the query or clue and the passage, in [-1, 1]), or,
for a passage only the attention found, its ``similarity`` to the query given by the caller;
each result's score is then capped just below the previous one's, so scores fall strictly in
the returned order and a cut-off (``score >= 0.3``) means the same for every query. (The
pipeline passes ``similarity`` for every passage: the cosine similarity to the query,
``retrieval/relevance.py``.) ``scores="fusion"`` keeps the
method's own numbers (RRF sums, ``1 / (rrf_k + position + 1)``, z sums), comparable only within
one list.
Passages are identified by ``passage.id``; the first ``Passage`` object seen is kept, so a
framework ``payload`` survives fusion untouched.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from shared_core.errors import InputError
from shared_core.inputs import check_k
from shared_core.types import Clue, Hit, KeyKind, Passage, ScoredPassage

Results = Sequence[tuple[Clue, Sequence[Hit]]]
FusionMethod = Literal["rrf", "interleave", "union", "zscore"]
ScoreMode = Literal["relevance", "fusion"]


@dataclass
class _Entry:
    """Running tally for one passage id."""

    passage: Passage
    order: int
    score: float = 0.0
    best_rank: int = 0
    found_by: list[Clue] = field(default_factory=list)
    ranks: list[int] = field(default_factory=list)

    def scored(self) -> ScoredPassage:
        return ScoredPassage(self.passage, self.score, tuple(self.found_by), tuple(self.ranks))


def _tally(results: Results, rrf_k: int, depth: int | None) -> list[_Entry]:
    """One entry per distinct passage id, in order of first appearance.

    A hit's rank is its position in its list; only the first ``depth`` hits of each list count
    (all when ``None``), and a passage repeated inside one list counts once, at its best rank.
    """
    entries: dict[str, _Entry] = {}
    for clue, hits in results:
        if not isinstance(clue, Clue):
            raise InputError(f"fusion takes (Clue, hits) pairs, got {type(clue).__name__}")
        if not math.isfinite(clue.weight):
            raise InputError(f"clue weight must be finite, got {clue.weight!r}")
        seen_here: set[str] = set()
        for rank, hit in enumerate(hits if depth is None else list(hits)[:depth]):
            pid = hit.passage.id
            if pid in seen_here:
                continue
            seen_here.add(pid)
            entry = entries.get(pid)
            if entry is None:
                entry = entries[pid] = _Entry(hit.passage, len(entries), best_rank=rank)
            entry.score += clue.weight / (rrf_k + rank + 1)
            entry.best_rank = min(entry.best_rank, rank)
            entry.found_by.append(clue)
            entry.ranks.append(rank)
    return list(entries.values())


def _check_rrf_k(rrf_k: object) -> int:
    if isinstance(rrf_k, bool) or not isinstance(rrf_k, int) or rrf_k < 0:
        raise InputError(f"rrf_k must be a non-negative int, got {rrf_k!r}")
    return rrf_k


def reciprocal_rank_fusion(results: Results, k: int, *, rrf_k: int = 60) -> list[ScoredPassage]:
    """Weighted RRF: ``score(p) = sum(clue.weight / (rrf_k + rank + 1))`` over the lists.

    Returns ``min(k, distinct passages)`` results, best first; ties go to the better single rank,
    then to the passage seen first.
    """
    k = check_k(k)
    entries = _tally(results, _check_rrf_k(rrf_k), None)
    entries.sort(key=lambda e: (-e.score, e.best_rank, e.order))
    return [e.scored() for e in entries[:k]]


def interleave(results: Results, k: int, *, rrf_k: int = 60) -> list[ScoredPassage]:
    """Round-robin by rank over the lists, heavier clues first within a round.

    Returns ``min(k, distinct passages)`` results. A result's score is ``1 / (rrf_k + n + 1)``
    for its position ``n``, so scores fall in the order given and a caller that re-sorts by
    score (a framework post-processor) keeps it; ``found_by`` lists every clue whose list holds
    the passage.
    """
    k = check_k(k)
    entries = {e.passage.id: e for e in _tally(results, _check_rrf_k(rrf_k), None)}
    order = sorted(range(len(results)), key=lambda i: -results[i][0].weight)
    picked: list[_Entry] = []
    taken: set[str] = set()
    depth = max((len(hits) for _, hits in results), default=0)
    for rank in range(depth):
        for i in order:
            hits = results[i][1]
            if rank < len(hits) and hits[rank].passage.id not in taken:
                taken.add(hits[rank].passage.id)
                picked.append(entries[hits[rank].passage.id])
                if len(picked) == k:
                    return _by_position(picked, rrf_k)
    return _by_position(picked, rrf_k)


def _by_position(picked: Sequence[_Entry], rrf_k: int) -> list[ScoredPassage]:
    return [replace(e.scored(), score=1.0 / (rrf_k + n + 1)) for n, e in enumerate(picked)]


def union_in_document_order(
    results: Results, per_query_k: int, *, rrf_k: int = 60
) -> list[ScoredPassage]:
    """Upstream MemoRAG: the union of each list's top ``per_query_k`` hits, in document order.

    Passages are sorted by their document (in order of first appearance) then by
    ``metadata["start"]``; passages without those keep their order of first appearance. The
    size varies; scores are the RRF scores, for information.
    """
    per_query_k = check_k(per_query_k, name="per_query_k")
    entries = _tally(results, _check_rrf_k(rrf_k), per_query_k)
    doc_order: dict[Any, int] = {}
    for entry in entries:
        doc_order.setdefault(_doc_key(entry), len(doc_order))

    def position(entry: _Entry) -> tuple[int, float, int]:
        start = entry.passage.metadata.get("start")
        numeric = isinstance(start, (int, float)) and not isinstance(start, bool)
        offset = float(start) if numeric and math.isfinite(start) else math.inf
        return doc_order[_doc_key(entry)], offset, entry.order

    entries.sort(key=position)
    return [e.scored() for e in entries]


def _doc_key(entry: _Entry) -> Any:
    """The passage's document id, or its own id when it names none."""
    doc_id = entry.passage.metadata.get("doc_id")
    try:
        hash(doc_id)
    except TypeError:
        doc_id = None
    return ("doc", doc_id) if doc_id is not None else ("passage", entry.passage.id)


def zscore_fusion(results: Results, k: int, *, rrf_k: int = 60) -> list[ScoredPassage]:
    """Weighted sum of per-list z-scores of the hits' scores; ``min(k, distinct)`` results.

    A list's z-scores are taken over its own hits (a one-hit or constant list gives 0); a
    passage missing from a list gets that list's lowest z. Ties go to the better single rank.
    """
    k = check_k(k)
    entries = _tally(results, _check_rrf_k(rrf_k), None)
    totals = {e.passage.id: 0.0 for e in entries}
    for clue, hits in results:
        values: dict[str, float] = {}
        for hit in hits:
            if not math.isfinite(hit.score):
                raise InputError(f"hit scores must be finite for zscore fusion: {hit.score!r}")
            values.setdefault(hit.passage.id, hit.score)
        if not values:
            continue
        mean = sum(values.values()) / len(values)
        var = sum((v - mean) ** 2 for v in values.values()) / len(values)
        std = math.sqrt(var) if var > 0 else 1.0
        z = {pid: (v - mean) / std for pid, v in values.items()}
        floor = min(z.values())
        for pid in totals:
            totals[pid] += clue.weight * z.get(pid, floor)
    for entry in entries:
        entry.score = totals[entry.passage.id]
    entries.sort(key=lambda e: (-e.score, e.best_rank, e.order))
    return [e.scored() for e in entries[:k]]


def relevance_scores(
    fused: Sequence[ScoredPassage],
    results: Results,
    similarity: Mapping[str, float] | None = None,
    *,
    monotone: bool = True,
) -> list[ScoredPassage]:
    """Replace fused scores by relevance (see the module docstring), in the given order."""
    best: dict[str, float] = {}
    for clue, hits in results:
        if clue.kind == KeyKind.ATTENTION:
            continue
        for hit in hits:
            pid = hit.passage.id
            if math.isfinite(hit.score):
                best[pid] = max(best.get(pid, -math.inf), hit.score)
    out: list[ScoredPassage] = []
    cap = math.inf
    for item in fused:
        pid = item.passage.id
        value = best.get(pid)
        if similarity is not None and pid in similarity:
            value = similarity[pid] if value is None else max(value, similarity[pid])
        if value is None:
            value = cap if math.isfinite(cap) else 0.0
        if monotone:
            # never above the passage before it, and just below it rather than level: a
            # framework that re-sorts by score keeps the fused order, and no two tie
            value = min(value, math.nextafter(cap, -math.inf)) if math.isfinite(cap) else value
            cap = value
        out.append(replace(item, score=float(value)))
    return out


def fuse(
    results: Results,
    k: int,
    method: FusionMethod = "rrf",
    *,
    scores: ScoreMode = "relevance",
    similarity: Mapping[str, float] | None = None,
    **kw: Any,
) -> list[ScoredPassage]:
    """Dispatch by name: ``rrf`` / ``interleave`` / ``zscore`` (``k`` results) or ``union``
    (``k`` per list, document order: its relevance scores follow the passages, not the order)."""
    if method == "rrf":
        fused = reciprocal_rank_fusion(results, k, **kw)
    elif method == "interleave":
        fused = interleave(results, k, **kw)
    elif method == "zscore":
        fused = zscore_fusion(results, k, **kw)
    elif method == "union":
        fused = union_in_document_order(results, k, **kw)
    else:
        raise InputError(
            f"unknown fusion method {method!r}: use 'rrf', 'interleave', 'zscore' or 'union'"
        )
    if scores == "fusion":
        return fused
    if scores != "relevance":
        raise InputError(f"scores must be 'relevance' or 'fusion', got {scores!r}")
    return relevance_scores(fused, results, similarity, monotone=method != "union")
