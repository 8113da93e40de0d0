"""BM25 beside the dense index (``bm25s``, extra ``[hybrid]``): ``mode="bm25"`` ranks by BM25
alone, ``mode="hybrid"`` searches every key in both and fuses the two lists by reciprocal rank
(``weight / (rrf_k + rank)``, summed).

The BM25 side is built from the chunk texts the wrapped index holds, so it needs no files of
its own: a save is the wrapped index's, and a load rebuilds BM25 (lazily, on the first search
after an ``add``; bm25s has no incremental update, so each rebuild reads the whole corpus).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from shared_core.errors import InputError, NoMemoryError
from shared_core.extras import import_extra
from shared_core.inputs import check_k
from shared_core.retrieval.chunk_store import EMPTY_INDEX, checked_queries
from shared_core.retrieval.index import chunk_passage
from shared_core.retrieval.vector_index import VectorIndex
from shared_core.types import Chunk, Hit

SearchMode = Literal["dense", "bm25", "hybrid"]
SEARCH_MODES: tuple[str, ...] = ("dense", "bm25", "hybrid")


def _bm25s() -> Any:
    return import_extra(
        "bm25s", feature="search_mode='bm25'/'hybrid'", needs="bm25s", extra="hybrid"
    )


class _BM25:
    """A bm25s index over a fixed list of texts."""

    def __init__(self, texts: Sequence[str]) -> None:
        bm25s = _bm25s()
        from bm25s.tokenization import Tokenizer

        self.size = len(texts)
        self.tokenizer = Tokenizer(stopwords="en")
        ids = self.tokenizer.tokenize(list(texts), return_as="ids", show_progress=False)
        self.model = bm25s.BM25()
        self.model.index(ids, show_progress=False)

    def rank(self, queries: Sequence[str], k: int) -> list[list[tuple[int, float]]]:
        """Per query, ``(position, score)`` of the ``k`` best texts; score-0 ties in order."""
        ids = self.tokenizer.tokenize(
            list(queries), update_vocab=False, return_as="ids", show_progress=False
        )
        top = min(k, self.size)
        found, scores = self.model.retrieve(ids, k=top, show_progress=False, n_threads=1)
        ranked = []
        for row_ids, row_scores in zip(np.asarray(found), np.asarray(scores), strict=True):
            hits = [(int(i), float(s)) for i, s in zip(row_ids, row_scores, strict=True) if s > 0]
            taken = {i for i, _ in hits}
            # No term in common: fill with the corpus order, so a list is always min(k, size).
            for pos in range(self.size):
                if len(hits) >= top:
                    break
                if pos not in taken:
                    hits.append((pos, 0.0))
            ranked.append(hits)
        return ranked


class HybridIndex:
    """A ``VectorIndex`` searched by BM25 alone or by BM25 and dense vectors fused (RRF).

    Args:
        inner: The dense index (``DenseIndex`` or ``QdrantIndex``) that stores the chunks.
        mode: ``"bm25"`` or ``"hybrid"``.
        rrf_k: The RRF constant (60 as in the RRF paper).
        dense_weight / bm25_weight: Each list's weight in the fused score.
        candidates: How deep each list is searched before fusing (at least ``k``).
    """

    def __init__(
        self,
        inner: VectorIndex,
        *,
        mode: SearchMode = "hybrid",
        rrf_k: int = 60,
        dense_weight: float = 1.0,
        bm25_weight: float = 1.0,
        candidates: int = 20,
    ) -> None:
        if mode not in ("bm25", "hybrid"):
            raise InputError(f"HybridIndex mode must be 'bm25' or 'hybrid', got {mode!r}")
        if not (dense_weight >= 0 and bm25_weight >= 0 and dense_weight + bm25_weight > 0):
            raise InputError("dense_weight and bm25_weight must be >= 0, not both 0")
        self.inner = inner
        self.mode = mode
        self.rrf_k = check_k(rrf_k, name="rrf_k")
        self.dense_weight = float(dense_weight)
        self.bm25_weight = float(bm25_weight)
        self.candidates = check_k(candidates, name="candidates")
        self._bm25: _BM25 | None = None
        self._lock = threading.Lock()
        _bm25s()  # fail at construction, not at the first search

    @property
    def embedder(self) -> Any:
        return self.inner.embedder

    def __len__(self) -> int:
        return len(self.inner)

    @property
    def chunks(self) -> tuple[Chunk, ...]:
        return self.inner.chunks

    def get(self, chunk_id: str) -> Chunk | None:
        return self.inner.get(chunk_id)

    def vectors(self) -> np.ndarray:
        return self.inner.vectors()

    def add(self, chunks: Sequence[Chunk], *, show_progress: bool = False) -> None:
        self.inner.add(chunks, show_progress=show_progress)

    def truncate(self, size: int) -> None:
        self.inner.truncate(size)  # the keyword index is rebuilt when the size changes

    def save(
        self, directory: str | Path, *, chunking: Mapping[str, int] | None = None
    ) -> dict[str, Any]:
        return {**self.inner.save(directory, chunking=chunking), "search_mode": self.mode}

    # ------------------------------------------------------------------ search

    def _keyword_index(self) -> tuple[_BM25, tuple[Chunk, ...]]:
        chunks = self.inner.chunks
        with self._lock:
            if self._bm25 is None or self._bm25.size != len(chunks):
                self._bm25 = _BM25([c.text for c in chunks])
            return self._bm25, chunks

    def search(self, query: str, k: int) -> list[Hit]:
        return self.search_many([query], k)[0]

    def search_many(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        """One hit list of ``min(k, len(self))`` chunks per query."""
        texts, k = checked_queries(queries, k)
        if not len(self.inner):
            raise NoMemoryError(EMPTY_INDEX)
        if not texts:
            return []
        depth = max(k, self.candidates)
        bm25, chunks = self._keyword_index()
        keyword = bm25.rank(texts, depth)
        if self.mode == "bm25":
            return [
                [
                    Hit(passage=chunk_passage(chunks[pos]), score=score, rank=rank)
                    for rank, (pos, score) in enumerate(row[:k])
                ]
                for row in keyword
            ]
        dense = self.inner.search_many(texts, depth)
        return [self._fuse(d, b, chunks, k) for d, b in zip(dense, keyword, strict=True)]

    def _fuse(
        self, dense: list[Hit], keyword: list[tuple[int, float]], chunks: Sequence[Chunk], k: int
    ) -> list[Hit]:
        scores: dict[str, float] = {}
        passages: dict[str, Any] = {}
        for rank, hit in enumerate(dense):
            scores[hit.passage.id] = self.dense_weight / (self.rrf_k + rank + 1)
            passages[hit.passage.id] = hit.passage
        for rank, (pos, score) in enumerate(keyword):
            if score <= 0:
                break  # no shared term: BM25 says nothing about the rest
            chunk = chunks[pos]
            weight = self.bm25_weight / (self.rrf_k + rank + 1)
            scores[chunk.chunk_id] = scores.get(chunk.chunk_id, 0.0) + weight
            passages.setdefault(chunk.chunk_id, chunk_passage(chunk))
        order = sorted(scores, key=lambda pid: -scores[pid])[:k]
        return [Hit(passage=passages[p], score=scores[p], rank=r) for r, p in enumerate(order)]


__all__ = ["SEARCH_MODES", "HybridIndex", "SearchMode"]
