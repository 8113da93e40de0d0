"""Which route a query takes (the memory's retrieval heads, clue writing, or both), and the
attention list the heads route adds beside the query's dense list.

``retrieval="auto"`` uses the heads when the memory's model has a head set (shipped for the
embedded SmolLM2, or given), else warns once per model and writes clues; ``"heads"`` requires
a head set; ``"clues"`` is the clue path; ``"heads+clues"`` runs both. Any ``AttentionMemory``
(compressed or full KV, the beacon memory) can take the heads route; other memories (gist)
take the clue path. No head set ships for the beacon checkpoints (``docs/heads.md``).

The heads score **candidates**: the union of the passages the query's searches returned, from
the engine's own index or any search back-end (a framework retriever, a vector store). Each is
located in the memorized text (``heads/candidates.py``); the heads score the located ones over
their spans, z-normalised over them; a candidate the memory never read is left out of the
heads' list (it keeps its store score and is marked ``memorag_in_memory=False``). Each search
is ``candidate_k`` deep on this route (``MemoRAGConfig.candidate_k``), so the pass costs the
same however large the corpus grows.

The attention list's fusion weight: ``heads_weight`` times how much the selected heads agree
on the query (``heads_weighting="agreement"``, the mean correlation of their per-chunk
scores, floored at 0), or ``heads_weight`` itself (``"fixed"``). With no other weighted list
(``query_weight=0`` on the heads route) the heads' list is the ranking, at ``heads_weight``.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shared_core.config import HEADS_WEIGHTINGS, ROUTES, MemoRAGConfig
from shared_core.errors import InputError
from shared_core.head_sets import HeadSet, find_head_set
from shared_core.heads.candidates import MemoryText
from shared_core.heads.ranker import AttentionList, AttentionRanker
from shared_core.memory.attention_memory import AttentionMemory
from shared_core.notices import Notices
from shared_core.retrieval.vector_index import VectorIndex
from shared_core.types import Hit, Passage


@dataclass(frozen=True)
class RoutePlan:
    """What one query runs: heads and/or clues, the fusion method, and why."""

    name: str
    heads: bool
    clues: bool
    fusion: str
    notes: tuple[str, ...] = ()


class AttentionRoute:
    """Resolves the route for a memory and runs its heads (one ranker per memory)."""

    def __init__(
        self,
        retrieval: str = MemoRAGConfig.retrieval,
        head_set: HeadSet | str | Path | None = None,
        weight: float = MemoRAGConfig.heads_weight,
        fusion: str = MemoRAGConfig.fusion,
        weighting: str = MemoRAGConfig.heads_weighting,
        candidate_k: int = MemoRAGConfig.candidate_k,
    ) -> None:
        if retrieval not in ROUTES:
            raise InputError(f"retrieval must be one of {ROUTES}, got {retrieval!r}")
        if isinstance(head_set, (str, Path)):
            head_set = HeadSet.load(head_set)
        if head_set is not None and not isinstance(head_set, HeadSet):
            raise InputError("head_set must be a HeadSet, a path to its JSON file, or None")
        if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not weight >= 0:
            raise InputError(f"heads_weight must be a number >= 0, got {weight!r}")
        if weighting not in HEADS_WEIGHTINGS:
            raise InputError(
                f"heads_weighting must be one of {HEADS_WEIGHTINGS}, got {weighting!r}"
            )
        self.retrieval = retrieval
        self.head_set = head_set
        self.weight = float(weight)
        self.weighting = weighting
        self.fusion = fusion
        self.candidate_k = candidate_k
        # (the memory it was built for, held so no later object can take its place; ranker;
        # why there is none)
        self._ranker: tuple[Any, AttentionRanker | None, str] | None = None
        self._lock = threading.Lock()
        self.notices = Notices()  # "no heads: clue path" once per cause for this pipeline

    def _ranker_for(self, memory: Any) -> tuple[AttentionRanker | None, str]:
        with self._lock:
            if self._ranker is None or self._ranker[0] is not memory:
                self._ranker = (memory, *self._build(memory))
            return self._ranker[1], self._ranker[2]

    def _build(self, memory: Any) -> tuple[AttentionRanker | None, str]:
        if not isinstance(memory, AttentionMemory):
            return None, f"a {type(memory).__name__} memory has no retrieval heads"
        head_set = self.head_set or find_head_set(memory.fingerprint())
        if head_set is None:
            return None, (
                f"no retrieval head set for {memory.name}: calibrate one with `memorag "
                "calibrate-heads DATA_DIR --model ...` and pass head_set="
            )
        return AttentionRanker(memory, head_set), ""

    def adopt_saved(self, where: Path, pipeline: Mapping[str, Any], memory: Any) -> None:
        """Use a save's head set (unless one was given); refuse one for another model."""
        data = pipeline.get("head_set")
        if data is None:
            return
        saved = HeadSet.from_json(data, where=f"{where}: pipeline.head_set")
        if isinstance(memory, AttentionMemory):
            saved.check_model(memory.name, memory.fingerprint())
        with self._lock:
            if self.head_set is None:
                self.head_set, self._ranker = saved, None

    def active_head_set(self, memory: Any) -> HeadSet | None:
        ranker, _ = self._ranker_for(memory)
        return ranker.head_set if ranker is not None else None

    def plan(self, memory: Any) -> RoutePlan:
        """The route for the next query, whatever the search back-end (warns once per model
        when heads are missing)."""
        clue_fusion = "interleave" if self.fusion == "auto" else self.fusion
        heads_fusion = "zscore" if self.fusion == "auto" else self.fusion
        if self.retrieval == "clues":
            return RoutePlan("clues", False, True, clue_fusion)
        ranker, why = self._ranker_for(memory)
        if ranker is None:
            if self.retrieval in ("heads", "heads+clues"):
                raise InputError(f"retrieval={self.retrieval!r} needs retrieval heads: {why}")
            self.notices.warn(why, f"{why}; using the clue path", stacklevel=4)
            return RoutePlan("clues", False, True, clue_fusion, (why + "; used the clue path",))
        both = self.retrieval == "heads+clues"
        return RoutePlan("heads+clues" if both else "heads", True, both, heads_fusion)

    def depth(self, plan: RoutePlan, depth: int, index_size: int | None) -> int:
        """Each search's depth: at least ``candidate_k`` under z-score fusion (its mean and
        spread need enough hits), at most what the back-end holds when it says."""
        if plan.fusion != "zscore":
            return depth
        deep = max(depth, self.candidate_k)
        return min(deep, index_size) if index_size else deep

    def attention_hits(
        self,
        memory: Any,
        text: MemoryText,
        query: str,
        candidates: Sequence[Passage],
        alone: bool = False,
    ) -> tuple[list[Hit], float, list[str]]:
        """The heads' hits over ``candidates``, best first, the weight their list gets in
        fusion (``alone``: no other list has weight, so the heads' list is the ranking), and
        the ids of the candidates not in the memory."""
        ranker, why = self._ranker_for(memory)
        if ranker is None:
            raise InputError(why)
        located, missing = [], []
        for passage in candidates:
            span = text.locate(passage)
            if span is None:
                missing.append(passage.id)
            else:
                located.append((passage, span.key()))
        if not located:
            return [], 0.0, missing
        scored = ranker.span_scores(query, [key for _, key in located])
        found = AttentionList([], scored.agreement)
        order = sorted(range(len(located)), key=lambda i: -float(scored.scores[i]))
        hits = [
            Hit(passage=located[i][0], score=float(scored.scores[i]), rank=n)
            for n, i in enumerate(order)
        ]
        return hits, self.list_weight(found, alone), missing

    def list_weight(self, found: AttentionList, alone: bool = False) -> float:
        """``heads_weight``, scaled by the heads' agreement (floored at 0) unless fixed or
        alone."""
        if self.weighting == "fixed" or alone:
            return self.weight
        return self.weight * max(0.0, found.agreement)


def query_similarity(index: VectorIndex, query: str, passage_ids: set[str]) -> dict[str, float]:
    """Cosine similarity between ``query`` and the given passages of the engine's index."""
    if not passage_ids:
        return {}
    chunks = index.chunks
    rows = [i for i, c in enumerate(chunks) if c.chunk_id in passage_ids]
    vec = np.asarray(index.embedder.embed_queries([query]), dtype=np.float32)[0]
    mat = np.asarray(index.vectors(), dtype=np.float32)[rows]
    return {chunks[i].chunk_id: float(v) for i, v in zip(rows, mat @ vec, strict=True)}


def heads_section(route: AttentionRoute, memory: Any) -> dict[str, Any] | None:
    """The head set a save records (``None``: the pipeline ranks without heads)."""
    head_set = route.active_head_set(memory) if route.retrieval != "clues" else None
    return head_set.to_json() if head_set is not None else None
