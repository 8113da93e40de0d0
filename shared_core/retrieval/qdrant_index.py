"""The engine's own index on Qdrant (``pip install memorag-integrations[qdrant]``): in process
(``location=":memory:"``), in a local folder (``path=``), or on a server / cluster (``url=`` and
``api_key=``).

The vectors live in one Qdrant collection (dot product on unit vectors: the same scores as the
faiss index), one point per chunk whose id is the chunk's position. The chunk texts stay in
the process too (the clue copier reads the whole corpus). Saves are the same two checked files
as the faiss index's (``write_index_files``); loading one uploads its vectors into a fresh
collection, so a save never depends on a running store. Safety rules are the faiss index's:
chunk ids unique, dims checked, an empty index refuses to search, and a collection that
already holds points is never written into.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from shared_core.errors import InputError, PersistenceError
from shared_core.extras import import_extra
from shared_core.retrieval.chunk_store import ChunkStore
from shared_core.retrieval.embeddings import Embedder
from shared_core.retrieval.index_files import chunk_passage, write_index_files
from shared_core.types import Chunk, Hit

#: Points per upsert / retrieve request.
BATCH = 512
_LOCATIONS = ("location", "path", "url")


def _qdrant() -> Any:
    return import_extra(
        "qdrant_client", feature="index='qdrant'", needs="qdrant-client", extra="qdrant"
    )


def connect(
    *,
    location: str | None = None,
    path: str | Path | None = None,
    url: str | None = None,
    api_key: str | None = None,
    timeout: float | None = None,
) -> Any:
    """A ``QdrantClient`` for exactly one of ``location`` (``":memory:"``), ``path`` or ``url``."""
    given = {"location": location, "path": path, "url": url}
    named = [k for k, v in given.items() if v is not None]
    if len(named) > 1:
        raise InputError(f"give one of location=, path= or url= for Qdrant, got {named}")
    if api_key is not None and url is None:
        raise InputError("a Qdrant api_key goes with url= (a server or cluster)")
    client_kwargs: dict[str, Any] = {}
    if url is not None:
        client_kwargs = {"url": url, "api_key": api_key}
        if timeout is not None:
            client_kwargs["timeout"] = int(timeout)
    elif path is not None:
        client_kwargs = {"path": str(path)}
    else:
        client_kwargs = {"location": location or ":memory:"}
    qdrant = _qdrant()
    try:
        return qdrant.QdrantClient(**client_kwargs)
    except Exception as exc:  # sqlite3.DatabaseError, a lock held elsewhere, a bad URL ...
        where = f"the Qdrant folder {path}" if path is not None else f"Qdrant at {url or location}"
        raise PersistenceError(
            f"{where} cannot be opened ({type(exc).__name__}: {exc}); a corrupt or foreign "
            "folder? pass another path= or remove it"
        ) from None


def reload_collection(directory: str | Path) -> str:
    """The one collection name loads of the save in ``directory`` use in a local folder: each
    reload replaces it, so reloading never adds a collection."""
    root = Path(directory).resolve().parent  # the snapshot's save directory
    return f"memorag-save-{hashlib.sha256(str(root).encode()).hexdigest()[:16]}"


class QdrantIndex(ChunkStore):
    """Exact dot-product search over chunks in a Qdrant collection, embedded with ``embedder``.

    Args:
        embedder: Embeds passages and queries (unit vectors).
        client: A ``QdrantClient``; default: one from ``connect(**connection)``.
        collection: The collection name; default a new ``memorag-<uuid>``. It must not exist
            yet or be empty.
        connection: ``location=``, ``path=``, ``url=``, ``api_key=`` for ``connect``.
    """

    def __init__(
        self,
        embedder: Embedder,
        *,
        client: Any = None,
        collection: str | None = None,
        replace: bool = False,
        **connection: Any,
    ) -> None:
        if client is not None and connection:
            raise InputError(f"client= and connection options {sorted(connection)} both given")
        super().__init__(embedder)
        self.client = client if client is not None else connect(**connection)
        self.collection = collection or f"memorag-{uuid.uuid4().hex[:16]}"
        if not isinstance(self.collection, str) or not self.collection.strip():
            raise InputError(f"collection must be a non-empty string, got {collection!r}")
        self._dim: int | None = None
        try:
            exists = self.client.collection_exists(self.collection)
            if exists and replace:
                self.client.delete_collection(self.collection)
                exists = False
        except Exception as exc:  # a corrupt local folder fails on first use
            raise PersistenceError(
                f"Qdrant {connection or 'client'}: collection {self.collection!r} cannot be "
                f"read ({type(exc).__name__}: {exc})"
            ) from None
        if exists:
            points = self.client.count(self.collection, exact=True).count
            if points:
                raise InputError(
                    f"the Qdrant collection {self.collection!r} already holds {points} points; "
                    "pass another collection= (or delete it) so two memories never mix"
                )

    def _append(self, items: list[Chunk], vectors: np.ndarray) -> None:
        models = _qdrant().models
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(items):
            raise ValueError(
                f"expected {len(items)} vectors, got an array of shape {vectors.shape}"
            )
        with self._lock:
            self._check_new(items)
            dim = int(vectors.shape[1])
            if self._dim is None:
                if not self.client.collection_exists(self.collection):
                    self.client.create_collection(
                        self.collection,
                        vectors_config=models.VectorParams(size=dim, distance=models.Distance.DOT),
                    )
                self._dim = dim
            elif dim != self._dim:
                raise ValueError(f"vectors of dim {dim} for an index of dim {self._dim}")
            start = len(self._chunks)
            for offset in range(0, len(items), BATCH):
                points = [
                    models.PointStruct(
                        id=start + offset + i,
                        vector=vector.tolist(),
                        payload={"chunk_id": chunk.chunk_id, "doc_id": chunk.doc_id},
                    )
                    for i, (chunk, vector) in enumerate(
                        zip(
                            items[offset : offset + BATCH],
                            vectors[offset : offset + BATCH],
                            strict=True,
                        )
                    )
                ]
                self.client.upsert(self.collection, points=points, wait=True)
            for item in items:  # only once every point is in: readers never see half an add
                self._positions[item.chunk_id] = len(self._chunks)
                self._chunks.append(item)

    def _drop_vectors(self, size: int) -> None:
        models = _qdrant().models
        gone = list(range(size, len(self._chunks)))
        self.client.delete(self.collection, points_selector=models.PointIdsList(points=gone))

    def vectors(self) -> np.ndarray:
        """A copy of the stored vectors, shape ``(len(self), dim)``, read back from Qdrant."""
        with self._lock:
            return self._vectors(len(self._chunks))

    def _vectors(self, count: int) -> np.ndarray:
        if count == 0:
            return np.zeros((0, self.embedder.dim), dtype=np.float32)
        rows = np.zeros((count, self._dim or self.embedder.dim), dtype=np.float32)
        for start in range(0, count, BATCH):
            ids = list(range(start, min(start + BATCH, count)))
            for point in self.client.retrieve(self.collection, ids=ids, with_vectors=True):
                rows[int(point.id)] = np.asarray(point.vector, dtype=np.float32)
        return rows

    # ------------------------------------------------------------------ search

    def _nearest(self, vectors: np.ndarray, top: int) -> list[list[Hit]]:
        models = _qdrant().models
        requests = [models.QueryRequest(query=v.tolist(), limit=top) for v in vectors]
        answers = self.client.query_batch_points(self.collection, requests=requests)
        chunks = self._chunks
        return [
            [
                Hit(passage=chunk_passage(chunks[int(p.id)]), score=float(p.score), rank=rank)
                for rank, p in enumerate(answer.points)
                if int(p.id) < len(chunks)
            ]
            for answer in answers
        ]

    # ------------------------------------------------------------------ persistence

    @classmethod
    def load(
        cls,
        directory: str | Path,
        embedder: Embedder,
        *,
        expected: Mapping[str, Any] | None = None,
        **store: Any,
    ) -> QdrantIndex:
        """A saved index uploaded into Qdrant. In a local folder (``path=``) without a
        ``collection=``, each reload of one save replaces its one collection there (a fresh
        collection per reload would pile up, never removed)."""
        if store.get("path") is not None and store.get("collection") is None:
            store = {**store, "collection": reload_collection(directory), "replace": True}
        return super().load(directory, embedder, expected=expected, **store)

    def save(
        self, directory: str | Path, *, chunking: Mapping[str, int] | None = None
    ) -> dict[str, Any]:
        """Write the same ``index.safetensors`` + ``chunks.json`` as the faiss index."""
        with self._lock:
            chunks = list(self._chunks)
            vectors = self._vectors(len(chunks))
        entry = write_index_files(directory, self.embedder, vectors, chunks, chunking=chunking)
        return {**entry, "store": "qdrant"}


__all__ = ["QdrantIndex", "connect"]
