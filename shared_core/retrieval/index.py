"""Dense passage index: exact inner-product search (faiss ``IndexFlatIP``) on unit vectors.

Saved as the two plain files of ``index_files`` (no pickle, no faiss format).

Thread safety: one index may be searched from many threads while another thread adds to it.
faiss is not safe to search while it grows, so a short lock guards the faiss index and the
chunk list together; query embedding (the slow part) runs outside it, in parallel.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from shared_core.retrieval.chunk_store import ChunkStore
from shared_core.retrieval.embeddings import Embedder
from shared_core.retrieval.index_files import (
    CHUNKS_FILE,
    VECTORS_FILE,
    chunk_passage,
    write_index_files,
)
from shared_core.types import Chunk, Hit


class DenseIndex(ChunkStore):
    """Exact cosine-similarity search over chunks, embedded with ``embedder``."""

    def __init__(self, embedder: Embedder) -> None:
        super().__init__(embedder)
        # The lock guards _index with the chunks: faiss never searches while it grows.
        self._index: faiss.IndexFlatIP | None = None

    @classmethod
    def from_vectors(
        cls, chunks: Sequence[Chunk], vectors: np.ndarray, embedder: Embedder
    ) -> DenseIndex:
        """An index of ``chunks`` with their passage vectors already computed by ``embedder``
        (one row each, unit length), so a subset of a larger corpus needs no re-embedding."""
        items = list(chunks)
        index = cls(embedder)
        index._check_new(items)
        if items:
            index._append(items, vectors)
        return index

    def _append(self, items: list[Chunk], vectors: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(items):
            raise ValueError(
                f"expected {len(items)} vectors, got an array of shape {vectors.shape}"
            )
        with self._lock:
            self._check_new(items)  # again: another thread may have added them meanwhile
            if self._index is None:
                self._index = faiss.IndexFlatIP(int(vectors.shape[1]))
            elif vectors.shape[1] != self._index.d:
                raise ValueError(
                    f"vectors of dim {vectors.shape[1]} for an index of dim {self._index.d}"
                )
            self._index.add(vectors)
            for item in items:
                self._positions[item.chunk_id] = len(self._chunks)
                self._chunks.append(item)

    def _drop_vectors(self, size: int) -> None:
        if self._index is not None:
            self._index.remove_ids(np.arange(size, self._index.ntotal, dtype=np.int64))

    def vectors(self) -> np.ndarray:
        """A copy of the stored vectors, shape ``(len(self), dim)``."""
        with self._lock:
            return self._vectors()

    def _vectors(self) -> np.ndarray:
        if self._index is None:
            return np.zeros((0, self.embedder.dim), dtype=np.float32)
        return np.ascontiguousarray(self._index.reconstruct_n(0, self._index.ntotal))

    # ------------------------------------------------------------------ search

    def _nearest(self, vectors: np.ndarray, top: int) -> list[list[Hit]]:
        scores, ids = self._index.search(vectors, top)  # type: ignore[union-attr]
        return [
            self._hits(row_scores, row_ids) for row_scores, row_ids in zip(scores, ids, strict=True)
        ]

    def _is_empty(self) -> bool:
        return self._index is None or not self._chunks

    def _hits(self, scores: np.ndarray, ids: np.ndarray) -> list[Hit]:
        hits: list[Hit] = []
        for score, pos in zip(scores.tolist(), ids.tolist(), strict=True):
            if pos < 0:
                continue
            hits.append(Hit(passage=chunk_passage(self._chunks[pos]), score=score, rank=len(hits)))
        return hits

    # ------------------------------------------------------------------ persistence

    def save(
        self, directory: str | Path, *, chunking: Mapping[str, int] | None = None
    ) -> dict[str, Any]:
        """Write ``index.safetensors`` and ``chunks.json`` into an existing ``directory``
        (``index_files.write_index_files``); returns the manifest entry."""
        with self._lock:  # one consistent snapshot even if another thread adds meanwhile
            vectors = self._vectors()
            chunks = list(self._chunks)
        return write_index_files(directory, self.embedder, vectors, chunks, chunking=chunking)


__all__ = ["CHUNKS_FILE", "VECTORS_FILE", "DenseIndex", "chunk_passage"]
