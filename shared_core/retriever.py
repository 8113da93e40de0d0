"""One query's retrieval: route -> clues -> keys -> searches (+ the memory's heads) -> fusion.

``Retriever`` holds no state of its own beyond the route: the pipeline hands it the parts, its
index and the search back-end for each call, so sync and async calls share every step.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from shared_core.clues import CopySource, resolve_followup
from shared_core.clues.keys import NO_CLUES_NOTE, clue_notes, retrieval_keys
from shared_core.clues.writers import CopyingClueWriter
from shared_core.config import MemoRAGConfig
from shared_core.heads.route import AttentionRoute, RoutePlan, query_similarity
from shared_core.inputs import check_k
from shared_core.parts import Parts
from shared_core.retrieval.fusion import fuse
from shared_core.retrieval.search import asearch_all, corpus_size, search_all
from shared_core.types import ChatTurn, Clue, Hit, KeyKind, RetrievalResult

Lists = list[list[Hit]]


class Retriever:
    """The retrieval steps of one pipeline, configured once."""

    def __init__(self, config: MemoRAGConfig) -> None:
        self.config = config
        self.route = AttentionRoute(
            config.retrieval,
            config.head_set,
            config.heads_weight,
            config.fusion,
            config.heads_weighting,
        )

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
            warnings.warn(NO_CLUES_NOTE, stacklevel=3)
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
        own_index: bool,
        copy_source: Callable[[], CopySource | None],
    ) -> tuple[RoutePlan, list[Clue]]:
        """The route for this query and its clues (on the heads route only the follow-up's
        standalone rewrite)."""
        plan = self.route.plan(parts.memory, own_index)
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

    def depth(self, k: int, search_k: int | None, plan: RoutePlan | None, size: int) -> int:
        """Each search's depth: ``search_k``, else the config's, else ``max(k, ret_hit)``;
        deeper under z-score fusion (its mean and spread need enough hits)."""
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
        depth = self.depth(k, call.get("search_k"), plan, len(index))
        lists = search_all(backend, [c.text for c in keys], depth)
        timings["search"] = time.perf_counter() - started
        self._add_heads(parts, index, query, keys, lists, depth, timings, plan)
        return self.fuse(index, query, k, keys, lists, timings, backend, plan, clues, parts)

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
        depth = self.depth(k, call.get("search_k"), plan, len(index))
        lists = await asearch_all(backend, [c.text for c in keys], depth)
        timings["search"] = time.perf_counter() - started
        await asyncio.to_thread(
            self._add_heads, parts, index, query, keys, lists, depth, timings, plan
        )
        return self.fuse(index, query, k, keys, lists, timings, backend, plan, clues, parts)

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
        plan, clues = self.plan(parts, query, history, backend is index, copy_source)
        return plan, clues, self.keys(query, clues, extra_queries)

    def _add_heads(
        self,
        parts: Parts,
        index: Any,
        query: str,
        keys: list[Clue],
        lists: Lists,
        depth: int,
        timings: dict[str, float],
        plan: RoutePlan,
    ) -> None:
        """Append the memory's attention ranking as one more scored list."""
        if not plan.heads:
            return
        started = time.perf_counter()
        heads_query = next((c.text for c in keys if c.kind == KeyKind.HISTORY), query)
        alone = not any(c.weight > 0 for c in keys)
        hits, weight = self.route.attention_hits(parts.memory, index, heads_query, depth, alone)
        lists.append(hits)
        keys.append(Clue(text=heads_query, kind=KeyKind.ATTENTION, weight=weight))
        timings["heads"] = time.perf_counter() - started

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
        return self.fuse(index, query, k, keys, lists, timings, index, None, None, None)

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
    ) -> RetrievalResult:
        """Fuse the lists into exactly ``k`` passages whose scores mean relevance."""
        started = time.perf_counter()
        cfg = self.config
        pairs = list(zip(keys, lists, strict=True))
        method = plan.fusion if plan is not None else cfg.fusion.replace("auto", "interleave")
        size = cfg.ret_hit if method == "union" else k
        similarity = None
        if plan is not None and plan.heads:  # the relevance of passages only the heads found
            found = {h.passage.id for c, hs in pairs if c.kind == KeyKind.ATTENTION for h in hs}
            found -= {h.passage.id for c, hs in pairs if c.kind != KeyKind.ATTENTION for h in hs}
            similarity = query_similarity(index, query, found)
        fused = fuse(pairs, size, method=method, rrf_k=cfg.rrf_k, similarity=similarity)
        timings["fusion"] = time.perf_counter() - started
        held = corpus_size(backend)
        if held is not None and k > held:
            warnings.warn(
                f"k={k} is more than the {held} passages in the corpus; returning all", stacklevel=4
            )
        notes = clue_notes(clues, parts.clue_writer) if clues is not None and plan.clues else ()
        return RetrievalResult(
            query=query,
            clues=tuple(keys),
            passages=tuple(fused),
            timings=dict(timings),
            route=plan.name if plan is not None else "custom",
            notes=(plan.notes if plan is not None else ()) + notes,
        )
