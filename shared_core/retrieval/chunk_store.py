"""The chunk bookkeeping every vector store shares: chunks in insertion order, ids unique,
``add`` embedding new chunks; a store only says how vectors are appended."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np

from shared_core.errors import InputError
from shared_core.retrieval.embeddings import Embedder
from shared_core.types import Chunk


class ChunkStore(ABC):
    """Chunks and their ids under one lock (readers never see vectors without chunks)."""

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder
        self._chunks: list[Chunk] = []
        self._positions: dict[str, int] = {}
        self._lock = threading.Lock()

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
