"""The engine's own index as a protocol: what the pipeline, the clue copier and persistence
need from a store. ``DenseIndex`` (faiss, in process) and ``QdrantIndex`` (Qdrant: local, a
server or a cluster) implement it; ``HybridIndex`` wraps either with BM25 beside it.

Every implementation saves the same two files (``index.safetensors`` + ``chunks.json``, via
``write_index_files``), so a save does not depend on the store it was made with.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from shared_core.retrieval.embeddings import Embedder
from shared_core.types import Chunk, Hit


@runtime_checkable
class VectorIndex(Protocol):
    """Chunks with their embeddings, searchable by query text."""

    embedder: Embedder

    def __len__(self) -> int: ...

    @property
    def chunks(self) -> tuple[Chunk, ...]:
        """Every chunk, in insertion order."""
        ...

    def get(self, chunk_id: str) -> Chunk | None: ...

    def vectors(self) -> np.ndarray:
        """The chunks' unit-norm embeddings ``[chunks, dim]`` (float32), in chunk order."""
        ...

    def add(self, chunks: Sequence[Chunk], *, show_progress: bool = False) -> None:
        """Embed and append chunks with new, unique ids (else ``InputError``)."""
        ...

    def truncate(self, size: int) -> None:
        """Keep only the first ``size`` chunks (undo the adds after them)."""
        ...

    def search(self, query: str, k: int) -> list[Hit]: ...

    def search_many(self, queries: Sequence[str], k: int) -> list[list[Hit]]: ...

    def save(
        self, directory: str | Path, *, chunking: Mapping[str, int] | None = None
    ) -> dict[str, Any]:
        """Write the index files into ``directory`` (``chunking``: how the chunks were cut);
        returns the manifest entry."""
        ...
