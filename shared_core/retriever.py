"""One query's retrieval: route -> clues -> keys -> searches (+ the memory's heads) -> fusion.

``Retriever`` holds no state of its own beyond the route and two caches (the memorized text
the heads locate candidates in, passage vectors for relevance scores): the pipeline hands it
the parts, its index and the search back-end for each call, so sync and async calls share
every step. On the heads route the back-end's hits are the candidates: the own index or any
``search=`` back-end alike (``heads/candidates.py``). Every returned score is the passage's
relevance to the query (``retrieval/relevance.py``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from shared_core.clues import CopySource, resolve_followup
from shared_core.clues.keys import NO_CLUES_NOTE, clue_notes, retrieval_keys
from shared_core.clues.writers import CopyingClueWriter
from shared_core.config import MemoRAGConfig
from shared_core.heads.candidates import MemoryTextCache
from shared_core.heads.route import AttentionRoute, RoutePlan
from shared_core.inputs import check_k
from shared_core.memory.attention_memory import AttentionMemory
from shared_core.notices import Notices
from shared_core.parts import Parts
from shared_core.retrieval.external import IN_MEMORY_KEY
from shared_core.retrieval.fusion import fuse, relevance_scores
from shared_core.retrieval.hybrid import HybridIndex
from shared_core.retrieval.relevance import Relevance
from shared_core.retrieval.search import asearch_all, corpus_size, search_all
from shared_core.types import ChatTurn, Clue, Hit, KeyKind, Passage, RetrievalResult, ScoredPassage

Lists = list[list[Hit]]


class Retriever:
    """The retrieval steps of one pipeline, configured once."""

    def __init__(self, config: MemoRAGConfig) -> None:
        self.config = config
        self.notices = Notices()  # warnings once per cause for this pipeline
        self.route = AttentionRoute(
            config.retrieval,
            config.head_set,
            config.heads_weight,
            config.fusion,
            config.heads_weighting,
            config.candidate_k,
        )
        self.memory_text = MemoryTextCache()
        self.relevance = Relevance()

    # -- clues ------------------------------------------------------------------------------
    def clues(
        self,
        parts: Parts,
        query: str,
        history: Sequence[ChatTurn],
        copy_source: Callable[[], CopySource | None],
    ) -> list[Clue]:
        """The memory's clues for ``query`` (a follow-up first made standalone)."""
        standalone = self._standalone(parts, query, history)
        writer = parts.clue_writer
        if isinstance(writer, CopyingClueWriter) and writer.uses_source:
            clues = writer.write(standalone, parts.memory, source=copy_source())
        else:
            clues = writer.write(standalone, parts.memory)
        clues = list(clues)[: self.config.max_clues]
        if clue_notes(clues, writer):
            self.notices.warn("no clues", NO_CLUES_NOTE, stacklevel=3)
        if standalone != query:
            clues.insert(
                0, Clue(text=standalone, kind=KeyKind.HISTORY, weight=self.config.query_weight)
            )
        return clues

    def _standalone(self, parts: Parts, query: str, history: Sequence[ChatTurn]) -> str:
        return resolve_followup(query, history, parts.memory, parts.prompts) if history else query

    def plan(
        self,
        parts: Parts,
        query: str,
        history: Sequence[ChatTurn],
        copy_source: Callable[[], CopySource | None],
    ) -> tuple[RoutePlan, list[Clue]]:
        """The route for this query and its clues (on the heads route only the follow-up's
        standalone rewrite)."""
        plan = self.route.plan(parts.memory)
        if plan.clues:
            return plan, self.clues(parts, query, history, copy_source)
        standalone = self._standalone(parts, query, history)
        if standalone == query:
            return plan, []
        return plan, [Clue(text=standalone, kind=KeyKind.HISTORY, weight=self.config.query_weight)]

    def keys(self, query: str, clues: Sequence[Clue], extra: Sequence[str] = ()) -> list[Clue]:
        return retrieval_keys(
            query,
            clues,
            extra,
            query_weight=self.config.query_weight,
            anchor=self.config.anchor_clues,
        )

    def depth(self, k: int, search_k: int | None, plan: RoutePlan | None, size: int | None) -> int:
        """Each search's depth: ``search_k``, else the config's, else ``max(k, ret_hit)``;
        on the heads route at least ``candidate_k`` (the candidates the heads re-rank)."""
        given = check_k(search_k, name="search_k") if search_k is not None else None
        depth = given or self.config.search_k or max(k, self.config.ret_hit)
        return self.route.depth(plan, depth, size) if plan is not None and plan.heads else depth

    # -- one query, end to end ---------------------------------------------------------------
    def run(
        self, parts: Parts, index: Any, query: str, k: int, backend: Any, **call: Any
    ) -> RetrievalResult:
        started = time.perf_counter()
        plan, clues, keys = self._prepare(parts, index, query, backend, **call)
        timings = {"clues": time.perf_counter() - started}
        started = time.perf_counter()
        depth = self.depth(k, call.get("search_k"), plan, corpus_size(backend))
        lists = search_all(backend, [c.text for c in keys], depth)
        timings["search"] = time.perf_counter() - started
        missing = self._add_heads(parts, index, query, keys, lists, timings, plan)
        return self.fuse(
            index, query, k, keys, lists, timings, backend, plan, clues, parts, missing
        )

    async def arun(
        self, parts: Parts, index: Any, query: str, k: int, backend: Any, **call: Any
    ) -> RetrievalResult:
        import asyncio

        started = time.perf_counter()
        plan, clues, keys = await asyncio.to_thread(
            self._prepare, parts, index, query, backend, **call
        )
        timings = {"clues": time.perf_counter() - started}
        started = time.perf_counter()
        depth = self.depth(k, call.get("search_k"), plan, corpus_size(backend))
        lists = await asearch_all(backend, [c.text for c in keys], depth)
        timings["search"] = time.perf_counter() - started
        missing = await asyncio.to_thread(
            self._add_heads, parts, index, query, keys, lists, timings, plan
        )
        return await asyncio.to_thread(
            self.fuse, index, query, k, keys, lists, timings, backend, plan, clues, parts, missing
        )

    def _prepare(
        self,
        parts: Parts,
        index: Any,
        query: str,
        backend: Any,
        *,
        history: Sequence[ChatTurn] = (),
        extra_queries: Sequence[str] = (),
        copy_source: Callable[[], CopySource | None],
        search_k: int | None = None,
    ) -> tuple[RoutePlan, list[Clue], list[Clue]]:
        plan, clues = self.plan(parts, query, history, copy_source)
        return plan, clues, self.keys(query, clues, extra_queries)

    def _add_heads(
        self,
        parts: Parts,
        index: Any,
        query: str,
        keys: list[Clue],
        lists: Lists,
        timings: dict[str, float],
        plan: RoutePlan,
    ) -> set[str]:
        """Append the heads' ranking of the candidates (every passage the searches returned)
        as one more scored list; returns the ids of the candidates not in the memory."""
        if not plan.heads:
            return set()
        started = time.perf_counter()
        heads_query = _relevance_query(query, keys)
        alone = not any(c.weight > 0 for c in keys)
        first: dict[str, Passage] = {}
        for hits in lists:
            for hit in hits:
                first.setdefault(hit.passage.id, hit.passage)
        candidates = list(first.values())
        memory = parts.memory
        text = self.memory_text.get(index, memory.documents)
        hits, weight, missing = self.route.attention_hits(
            memory, text, heads_query, candidates, alone
        )
        lists.append(hits)
        keys.append(Clue(text=heads_query, kind=KeyKind.ATTENTION, weight=weight))
        timings["heads"] = time.perf_counter() - started
        return set(missing)

    def with_clues(
        self,
        index: Any,
        query: str,
        k: int,
        clues: Sequence[Clue],
        query_weight: float | None,
    ) -> RetrievalResult:
        """Caller-written ``clues`` searched as given (never anchored), beside the query."""
        weight = self.config.query_weight if query_weight is None else query_weight
        keys = retrieval_keys(query, clues, query_weight=weight, anchor=False)
        keys = [replace(c, weight=weight) if c.kind == KeyKind.QUERY else c for c in keys]
        keys = [c for c in keys if c.weight > 0] or keys
        started = time.perf_counter()
        lists = search_all(index, [c.text for c in keys], self.depth(k, None, None, len(index)))
        timings = {"search": time.perf_counter() - started}
        return self.fuse(index, query, k, keys, lists, timings, index, None, None, None, set())

    # -- fusion -----------------------------------------------------------------------------
    def fuse(
        self,
        index: Any,
        query: str,
        k: int,
        keys: Sequence[Clue],
        lists: Sequence[Sequence[Hit]],
        timings: dict[str, float],
        backend: object,
        plan: RoutePlan | None,
        clues: Sequence[Clue] | None,
        parts: Parts | None,
        missing: set[str],
    ) -> RetrievalResult:
        """Fuse the lists into exactly ``k`` passages scored by relevance to the query."""
        started = time.perf_counter()
        cfg = self.config
        method = plan.fusion if plan is not None else cfg.fusion.replace("auto", "interleave")
        if method == "zscore":  # a back-end that gives no scores: the relevance of its hits
            pairs = zip(keys, lists, strict=True)
            lists = [self._scored(index, key.text, hits, parts) for key, hits in pairs]
        pairs = list(zip(keys, lists, strict=True))
        size = cfg.ret_hit if method == "union" else k
        fused = fuse(pairs, size, method=method, rrf_k=cfg.rrf_k, scores="fusion")
        rel_query = _relevance_query(query, keys)
        known = self._known_cosines(index, backend, rel_query, pairs, fused, parts)
        fused = self._relevant(index, rel_query, fused, method != "union", known)
        if missing:
            fused = [_marked(p) if p.passage.id in missing else p for p in fused]
        timings["fusion"] = time.perf_counter() - started
        held = corpus_size(backend)
        if held is not None and k > held:
            self.notices.warn(
                ("k over corpus", held),
                f"k={k} is more than the {held} passages in the corpus; returning all "
                "(said once per corpus size)",
                stacklevel=4,
            )
        notes = clue_notes(clues, parts.clue_writer) if clues is not None and plan.clues else ()
        if missing:
            candidates = len({h.passage.id for hits in lists for h in hits})
            note = _missing_note(len(missing), candidates)
            self.notices.warn("candidates not in memory", note, stacklevel=4)
            notes = (*notes, note)
        return RetrievalResult(
            query=query,
            clues=tuple(keys),
            passages=tuple(fused),
            timings=dict(timings),
            route=plan.name if plan is not None else "custom",
            notes=(plan.notes if plan is not None else ()) + tuple(notes),
        )

    def _scored(self, index: Any, text: str, hits: Sequence[Hit], parts: Parts | None) -> list[Hit]:
        """``hits`` with a missing (non-finite) score replaced by the passage's relevance to
        ``text``."""
        lacking = [h.passage for h in hits if not math.isfinite(h.score)]
        if not lacking:
            return list(hits)
        sims = self._own_cosines(index, text, lacking, parts)
        need = [p for p in lacking if p.id not in sims]
        sims.update(self.relevance.scores(index.embedder, text, need))
        return [h if math.isfinite(h.score) else replace(h, score=sims[h.passage.id]) for h in hits]

    def _relevant(
        self,
        index: Any,
        query: str,
        fused: Sequence[ScoredPassage],
        monotone: bool,
        known: dict[str, float],
    ) -> list[ScoredPassage]:
        """The fused passages, scored by their cosine similarity to ``query`` (``known``:
        similarities already computed; the rest are embedded)."""
        need = [p.passage for p in fused if p.passage.id not in known]
        sims = {**known, **self.relevance.scores(index.embedder, query, need)}
        return relevance_scores(fused, (), sims, monotone=monotone)

    def _known_cosines(
        self,
        index: Any,
        backend: object,
        query: str,
        pairs: Sequence[tuple[Clue, Sequence[Hit]]],
        fused: Sequence[ScoredPassage],
        parts: Parts | None,
    ) -> dict[str, float]:
        """Query-passage cosines the own dense index already gives, without embedding a
        passage: the query's own hits when it was the back-end, else one search of it for a
        store's passages that are the index's chunks (located in the memory)."""
        dense = index.inner if isinstance(index, HybridIndex) else index
        if backend is dense:
            return {
                h.passage.id: h.score
                for clue, hits in pairs
                if clue.text == query and clue.kind in (KeyKind.QUERY, KeyKind.HISTORY)
                for h in hits
                if math.isfinite(h.score)
            }
        return self._own_cosines(index, query, [p.passage for p in fused], parts)

    def _own_cosines(
        self, index: Any, query: str, passages: Sequence[Passage], parts: Parts | None
    ) -> dict[str, float]:
        """Cosines of ``passages`` that are chunks of the own dense index (located in the
        memory), from one search of it."""
        dense = index.inner if isinstance(index, HybridIndex) else index
        if parts is None or not isinstance(parts.memory, AttentionMemory):
            return {}  # only a memory that records its documents locates a store's passage
        if not passages or not len(dense):
            return {}
        depth = min(len(dense), max(self.config.candidate_k, len(passages)))
        own = {_span_of(h.passage): h.score for h in dense.search(query, depth)}
        documents = parts.memory.documents
        text = self.memory_text.get(index, documents) if documents else None
        known: dict[str, float] = {}
        for passage in passages:
            span = text.locate(passage) if text is not None else None
            if span is not None:
                key = (str(documents[span.doc]["doc_id"]), span.start, span.end)
                if key in own:
                    known[passage.id] = own[key]
        return known


def _relevance_query(query: str, keys: Sequence[Clue]) -> str:
    """What relevance is measured against: a follow-up's standalone rewrite, else the query."""
    return next((c.text for c in keys if c.kind == KeyKind.HISTORY), query)


def _span_of(passage: Passage) -> tuple[str, Any, Any]:
    meta = passage.metadata
    return (str(meta.get("doc_id")), meta.get("start"), meta.get("end"))


def _marked(scored: ScoredPassage) -> ScoredPassage:
    passage = scored.passage
    metadata = {**passage.metadata, IN_MEMORY_KEY: False}
    return replace(scored, passage=Passage(passage.id, passage.text, metadata, passage.payload))


def _missing_note(missing: int, candidates: int) -> str:
    return (
        f"{missing} of the {candidates} passages the search back-end returned are not in the "
        "memory: the heads could not rank them (they keep the store's score and are marked "
        f"{IN_MEMORY_KEY}=False); memorize the store's documents into the engine to rank them"
    )
