"""One option picks the engine's own index: ``index="faiss"`` (in process) or ``"qdrant"``
(``index_options``: ``location=":memory:"`` | ``path=`` | ``url=`` + ``api_key=``,
``collection=``), and ``search_mode="dense"`` | ``"bm25"`` | ``"hybrid"`` (BM25 beside it)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from shared_core.errors import InputError
from shared_core.retrieval.embeddings import Embedder
from shared_core.retrieval.hybrid import SEARCH_MODES, HybridIndex
from shared_core.retrieval.index import DenseIndex
from shared_core.retrieval.vector_index import VectorIndex

INDEXES: tuple[str, ...] = ("faiss", "qdrant")
_QDRANT_OPTIONS = frozenset(
    {"location", "path", "url", "api_key", "timeout", "collection", "client"}
)


def check_index_choice(index: str, search_mode: str, options: Mapping[str, Any] | None) -> None:
    """Refuse an unknown index, search mode or option before anything is built."""
    if index not in INDEXES:
        raise InputError(f"unknown index {index!r}; choose one of {INDEXES}")
    if search_mode not in SEARCH_MODES:
        raise InputError(f"unknown search_mode {search_mode!r}; choose one of {SEARCH_MODES}")
    options = dict(options or {})
    if index == "faiss" and options:
        raise InputError(f"index_options {sorted(options)} are for index='qdrant'")
    unknown = set(options) - _QDRANT_OPTIONS
    if unknown:
        raise InputError(
            f"unknown index_options {sorted(unknown)}; Qdrant takes {sorted(_QDRANT_OPTIONS)}"
        )


def _wrap(inner: VectorIndex, search_mode: str) -> VectorIndex:
    return inner if search_mode == "dense" else HybridIndex(inner, mode=search_mode)  # type: ignore[arg-type]


def new_index(
    embedder: Embedder, index: str, search_mode: str, options: Mapping[str, Any] | None
) -> VectorIndex:
    """An empty index of the chosen kind."""
    check_index_choice(index, search_mode, options)
    if index == "qdrant":
        from shared_core.retrieval.qdrant_index import QdrantIndex

        return _wrap(QdrantIndex(embedder, **dict(options or {})), search_mode)
    return _wrap(DenseIndex(embedder), search_mode)


def load_index(
    folder: str | Path,
    embedder: Embedder,
    expected: Mapping[str, Any] | None,
    index: str,
    search_mode: str,
    options: Mapping[str, Any] | None,
) -> VectorIndex:
    """A saved index (the same files for every kind) read into the chosen kind."""
    check_index_choice(index, search_mode, options)
    if index == "qdrant":
        from shared_core.retrieval.qdrant_index import QdrantIndex

        inner: VectorIndex = QdrantIndex.load(
            folder, embedder, expected=expected, **dict(options or {})
        )
    else:
        inner = DenseIndex.load(folder, embedder, expected=expected)
    return _wrap(inner, search_mode)


__all__ = ["INDEXES", "check_index_choice", "load_index", "new_index"]
