"""The chunk bookkeeping every vector store shares: chunks in insertion order, ids unique,
``add`` embedding new chunks, ``search_many`` embedding the queries in one batch; a store only
says how vectors are appended and how the nearest ones are found."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from shared_core.errors import InputError, NoMemoryError
from shared_core.inputs import check_k, check_query
from shared_core.retrieval.embeddings import Embedder
from shared_core.retrieval.index_files import read_index_files
from shared_core.types import Chunk, Hit

EMPTY_INDEX = "the index is empty: add documents (memorize a context) before searching"

_Store = TypeVar("_Store", bound="ChunkStore")


def checked_queries(queries: Sequence[str], k: int) -> tuple[list[str], int]:
    """``search_many``'s arguments, checked: the query strings and ``k``."""
    if isinstance(queries, str):
        raise InputError("search_many takes a list of query strings, not a single str")
    k = check_k(k)
    return [check_query(q) for q in queries], k


class ChunkStore(ABC):
    """Chunks and their ids under one lock (readers never see vectors without chunks)."""

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder
        self._chunks: list[Chunk] = []
        self._positions: dict[str, int] = {}
        self._lock = threading.Lock()

    @classmethod
    def load(
        cls: type[_Store],
        directory: str | Path,
        embedder: Embedder,
        *,
        expected: Mapping[str, Any] | None = None,
        **store: Any,
    ) -> _Store:
        """Load an index saved by ``save`` into a new store (``store``: its own options, e.g.
        Qdrant's connection); ``PersistenceError`` when a file is missing, corrupt or not
        matching ``expected`` (the dict ``save`` returned), ``IncompatibleMemoryError`` when it
        was built with another embedder."""
        chunks, vectors = read_index_files(directory, embedder, expected=expected)
        index = cls(embedder, **store)
        if chunks:
            index._append(chunks, vectors)
        return index

    def __len__(self) -> int:
        return len(self._chunks)

    @property
    def chunks(self) -> tuple[Chunk, ...]:
        """Every chunk, in insertion order."""
        with self._lock:
            return tuple(self._chunks)

    def get(self, chunk_id: str) -> Chunk | None:
        """The chunk with this id, or ``None``."""
        with self._lock:
            pos = self._positions.get(chunk_id)
            return None if pos is None else self._chunks[pos]

    def add(self, chunks: Sequence[Chunk], *, show_progress: bool = False) -> None:
        """Embed and append chunks; ids must be new and unique (else ``InputError``)."""
        items = list(chunks)
        self._check_new(items)
        if not items:
            return
        vectors = self.embedder.embed_passages([c.text for c in items], show_progress=show_progress)
        self._append(items, vectors)

    def _check_new(self, items: list[Chunk]) -> None:
        seen: set[str] = set()
        for item in items:
            if not isinstance(item, Chunk):
                raise InputError(
                    f"{type(self).__name__}.add takes Chunk objects, got {type(item).__name__}"
                )
            if item.chunk_id in seen or item.chunk_id in self._positions:
                raise InputError(f"duplicate chunk id {item.chunk_id!r}: chunk ids must be unique")
            seen.add(item.chunk_id)

    @abstractmethod
    def _append(self, items: list[Chunk], vectors: np.ndarray) -> None:
        """Store ``vectors`` (one row per item) and record the items, under ``_lock``."""

    def truncate(self, size: int) -> None:
        """Keep only the first ``size`` chunks: undo the adds after them (the pipeline's
        rollback when the memory refuses what the index already took)."""
        with self._lock:
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise InputError(f"size must be an int >= 0, got {size!r}")
            if size >= len(self._chunks):
                return
            self._drop_vectors(size)
            for chunk in self._chunks[size:]:
                del self._positions[chunk.chunk_id]
            del self._chunks[size:]

    @abstractmethod
    def _drop_vectors(self, size: int) -> None:
        """Keep only the first ``size`` stored vectors, under ``_lock``."""

    def search(self, query: str, k: int) -> list[Hit]:
        """The ``min(k, len(self))`` chunks most similar to ``query``, best first."""
        return self.search_many([query], k)[0]

    def search_many(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        """One hit list per query, all queries embedded in a single batch."""
        texts, k = checked_queries(queries, k)
        self._check_not_empty()
        if not texts:
            return []
        vectors = self.embedder.embed_queries(texts)  # outside the lock: runs in parallel
        with self._lock:
            self._check_not_empty()
            return self._nearest(vectors, min(k, len(self._chunks)))

    def _check_not_empty(self) -> None:
        if self._is_empty():
            raise NoMemoryError(EMPTY_INDEX)

    def _is_empty(self) -> bool:
        return not self._chunks

    @abstractmethod
    def _nearest(self, vectors: np.ndarray, top: int) -> list[list[Hit]]:
        """The ``top`` hits for each query vector, best first, under ``_lock``."""
