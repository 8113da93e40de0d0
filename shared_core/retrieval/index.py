"""Dense passage index: exact inner-product search (faiss ``IndexFlatIP``) on unit vectors.

Saved as two plain files, no pickle and no faiss format: ``index.safetensors`` (the float32
vectors under ``"vectors"``) and ``chunks.json`` (the chunks, the embedder name, dim and count).
Loading checks every field, every size and (when given) every sha256 before trusting a byte.

Thread safety: one index may be searched from many threads while another thread adds to it.
faiss is not safe to search while it grows, so a short lock guards the faiss index and the
chunk list together; query embedding (the slow part) runs outside it, in parallel.
"""

from __future__ import annotations

import hashlib
import json
import struct
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from safetensors.numpy import save as save_safetensors

from shared_core.errors import (
    IncompatibleMemoryError,
    InputError,
    NoMemoryError,
    PersistenceError,
)
from shared_core.inputs import check_k, check_query
from shared_core.retrieval.embeddings import Embedder
from shared_core.types import Chunk, Hit, Passage

VECTORS_FILE = "index.safetensors"
CHUNKS_FILE = "chunks.json"
FORMAT = "memorag-dense-index"
FORMAT_VERSION = 1
#: A safetensors header this large cannot describe one tensor: refuse before reading it.
_MAX_HEADER_BYTES = 1 << 20


class DenseIndex:
    """Exact cosine-similarity search over chunks, embedded with ``embedder``."""

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder
        self._chunks: list[Chunk] = []
        self._positions: dict[str, int] = {}
        self._index: faiss.IndexFlatIP | None = None
        # Guards _index, _chunks and _positions together: readers never see vectors without
        # their chunks, and faiss never searches while it grows.
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ contents

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
                raise InputError(f"DenseIndex.add takes Chunk objects, got {type(item).__name__}")
            if item.chunk_id in seen or item.chunk_id in self._positions:
                raise InputError(f"duplicate chunk id {item.chunk_id!r}: chunk ids must be unique")
            seen.add(item.chunk_id)

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

    def vectors(self) -> np.ndarray:
        """A copy of the stored vectors, shape ``(len(self), dim)``."""
        with self._lock:
            return self._vectors()

    def _vectors(self) -> np.ndarray:
        if self._index is None:
            return np.zeros((0, self.embedder.dim), dtype=np.float32)
        return np.ascontiguousarray(self._index.reconstruct_n(0, self._index.ntotal))

    # ------------------------------------------------------------------ search

    def search(self, query: str, k: int) -> list[Hit]:
        """The ``min(k, len(self))`` chunks most similar to ``query``, best first."""
        return self.search_many([query], k)[0]

    def search_many(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        """One hit list per query, all queries embedded in a single batch."""
        if isinstance(queries, str):
            raise InputError("search_many takes a list of query strings, not a single str")
        k = check_k(k)
        texts = [check_query(q) for q in queries]
        self._check_not_empty()
        if not texts:
            return []
        queries = self.embedder.embed_queries(texts)  # outside the lock: runs in parallel
        with self._lock:
            self._check_not_empty()
            top = min(k, len(self._chunks))
            scores, ids = self._index.search(queries, top)  # type: ignore[union-attr]
            return [
                self._hits(row_scores, row_ids)
                for row_scores, row_ids in zip(scores, ids, strict=True)
            ]

    def _check_not_empty(self) -> None:
        if self._index is None or not self._chunks:
            raise NoMemoryError(
                "the index is empty: add documents (memorize a context) before searching"
            )

    def _hits(self, scores: np.ndarray, ids: np.ndarray) -> list[Hit]:
        hits: list[Hit] = []
        for score, pos in zip(scores.tolist(), ids.tolist(), strict=True):
            if pos < 0:
                continue
            hits.append(Hit(passage=chunk_passage(self._chunks[pos]), score=score, rank=len(hits)))
        return hits

    # ------------------------------------------------------------------ persistence

    def save(self, directory: str | Path) -> dict[str, Any]:
        """Write ``index.safetensors`` and ``chunks.json`` into an existing ``directory``.

        Returns the manifest entry: ``{"files": {name: sha256}, "embedder", "dim", "count"}``.
        """
        folder = Path(directory)
        if not folder.is_dir():
            raise PersistenceError(f"cannot save the index: {folder} is not an existing directory")
        with self._lock:  # one consistent snapshot even if another thread adds meanwhile
            vectors = self._vectors()
            chunks = list(self._chunks)
        dim = int(vectors.shape[1])
        record = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "embedder": self.embedder.name,
            "dim": dim,
            "count": len(chunks),
            "chunks": [_chunk_record(c) for c in chunks],
        }
        try:
            chunks_bytes = json.dumps(record, ensure_ascii=False).encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise PersistenceError(
                f"cannot save {CHUNKS_FILE}: chunk metadata is not JSON-serialisable ({exc})"
            ) from exc
        vector_bytes = save_safetensors({"vectors": vectors}, metadata={"format": FORMAT})
        files = {}
        for name, data in ((VECTORS_FILE, vector_bytes), (CHUNKS_FILE, chunks_bytes)):
            (folder / name).write_bytes(data)
            files[name] = hashlib.sha256(data).hexdigest()
        return {"files": files, "embedder": self.embedder.name, "dim": dim, "count": len(chunks)}

    @classmethod
    def load(
        cls,
        directory: str | Path,
        embedder: Embedder,
        *,
        expected: Mapping[str, Any] | None = None,
    ) -> DenseIndex:
        """Read an index written by :meth:`save`, checking it thoroughly.

        Raises ``PersistenceError`` (naming the file) for anything missing, truncated, malformed
        or not matching ``expected`` (the dict ``save`` returned), and
        ``IncompatibleMemoryError`` when it was built with another embedder.
        """
        folder = Path(directory)
        if not folder.is_dir():
            raise PersistenceError(f"no saved index: {folder} is not a directory")
        hashes = _expected_hashes(expected)
        chunks_path = folder / CHUNKS_FILE
        record = _read_chunks(_read_file(chunks_path, hashes.get(CHUNKS_FILE)), chunks_path)
        _check_expected(record, expected)
        if record["embedder"] != embedder.name:
            raise IncompatibleMemoryError(
                f"{folder / CHUNKS_FILE}: the index was built with embedder "
                f"{record['embedder']!r}, but the given embedder is {embedder.name!r}; "
                "load it with the same embedding model (or rebuild the memory)"
            )
        if record["dim"] != embedder.dim:
            raise IncompatibleMemoryError(
                f"{folder / CHUNKS_FILE}: stored vectors have dim {record['dim']}, "
                f"but embedder {embedder.name!r} produces dim {embedder.dim}"
            )
        path = folder / VECTORS_FILE
        vectors = _read_vectors(path, _read_file(path, hashes.get(VECTORS_FILE)), record)
        index = cls(embedder)
        if record["chunks"]:
            index._append(record["chunks"], vectors)
        return index


# ---------------------------------------------------------------------- helpers: chunks


def chunk_passage(chunk: Chunk) -> Passage:
    metadata = {
        **chunk.metadata,
        "doc_id": chunk.doc_id,
        "start": chunk.start,
        "end": chunk.end,
        "chunk_id": chunk.chunk_id,
    }
    return Passage(id=chunk.chunk_id, text=chunk.text, metadata=metadata)


def _chunk_record(chunk: Chunk) -> dict[str, Any]:
    return {
        "chunk_id": chunk.chunk_id,
        "doc_id": chunk.doc_id,
        "text": chunk.text,
        "start": chunk.start,
        "end": chunk.end,
        "metadata": dict(chunk.metadata),
    }


# ---------------------------------------------------------------------- helpers: loading


def _expected_hashes(expected: Mapping[str, Any] | None) -> dict[str, str]:
    if expected is None:
        return {}
    files = expected.get("files") if isinstance(expected, Mapping) else None
    if not isinstance(files, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in files.items()
    ):
        raise PersistenceError("the manifest's index entry has no valid 'files' mapping")
    return dict(files)


def _check_expected(record: dict[str, Any], expected: Mapping[str, Any] | None) -> None:
    if expected is None:
        return
    for key in ("embedder", "dim", "count"):
        if key in expected and expected[key] != record[key]:
            raise PersistenceError(
                f"{CHUNKS_FILE}: {key} is {record[key]!r} but the manifest says {expected[key]!r}"
            )


def _read_file(path: Path, sha256: str | None) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise PersistenceError(f"{path}: file is missing") from None
    except OSError as exc:
        raise PersistenceError(f"{path}: cannot read it ({exc})") from exc
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256.lower():
        raise PersistenceError(
            f"{path}: sha256 does not match the manifest (the file was modified or truncated)"
        )
    return data


def _read_chunks(data: bytes, where: Path | str = CHUNKS_FILE) -> dict[str, Any]:
    try:
        record = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:  # ValueError: also 5000-digit ints
        raise PersistenceError(f"{where}: not valid UTF-8 JSON ({exc})") from None
    except RecursionError:
        raise PersistenceError(f"{where}: JSON nested too deeply") from None
    if not isinstance(record, dict):
        raise PersistenceError(f"{where}: expected a JSON object, got {type(record).__name__}")
    if record.get("format") != FORMAT or record.get("version") != FORMAT_VERSION:
        raise PersistenceError(
            f"{where}: unknown format {record.get('format')!r} version {record.get('version')!r} "
            f"(expected {FORMAT!r} version {FORMAT_VERSION})"
        )
    if not isinstance(record.get("embedder"), str):
        raise PersistenceError(f"{where}: 'embedder' must be a string")
    dim, count, items = record.get("dim"), record.get("count"), record.get("chunks")
    if not _is_int(dim) or dim < 1:
        raise PersistenceError(f"{where}: 'dim' must be a positive integer, got {dim!r}")
    if not _is_int(count) or count < 0:
        raise PersistenceError(f"{where}: 'count' must be a non-negative integer, got {count!r}")
    if not isinstance(items, list) or len(items) != count:
        raise PersistenceError(f"{where}: 'chunks' must be a list of 'count' ({count}) records")
    record["chunks"] = [_chunk_from_record(item, i, where) for i, item in enumerate(items)]
    ids = {c.chunk_id for c in record["chunks"]}
    if len(ids) != count:
        raise PersistenceError(f"{where}: chunk ids are not unique")
    return record


def _chunk_from_record(item: object, i: int, source: Path | str = CHUNKS_FILE) -> Chunk:
    where = f"{source}: chunk {i}"
    if not isinstance(item, dict):
        raise PersistenceError(f"{where} is not a JSON object")
    for key in ("chunk_id", "doc_id", "text"):
        if not isinstance(item.get(key), str):
            raise PersistenceError(f"{where}: {key!r} must be a string")
    start, end = item.get("start"), item.get("end")
    if not (_is_int(start) and _is_int(end) and 0 <= start <= end):
        raise PersistenceError(f"{where}: 'start'/'end' must be integers with 0 <= start <= end")
    metadata = item.get("metadata", {})
    if not isinstance(metadata, dict):
        raise PersistenceError(f"{where}: 'metadata' must be an object")
    return Chunk(item["chunk_id"], item["doc_id"], item["text"], start, end, metadata)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _read_vectors(path: Path, data: bytes, record: dict[str, Any]) -> np.ndarray:
    """Parse and check a safetensors file by hand, then view its single float32 tensor."""
    count, dim = record["count"], record["dim"]
    if len(data) < 8:
        raise PersistenceError(f"{path}: truncated ({len(data)} bytes, no safetensors header)")
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len > _MAX_HEADER_BYTES or 8 + header_len > len(data):
        raise PersistenceError(
            f"{path}: malformed safetensors header (declares {header_len} header bytes "
            f"in a {len(data)}-byte file)"
        )
    try:
        header = json.loads(data[8 : 8 + header_len].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise PersistenceError(f"{path}: malformed safetensors header (not JSON)") from None
    info = _vectors_entry(path, header)
    shape, (begin, stop) = info["shape"], info["data_offsets"]
    if shape != [count, dim]:
        raise PersistenceError(
            f"{path}: vectors have shape {shape}, but {CHUNKS_FILE} needs [{count}, {dim}]"
        )
    body = len(data) - 8 - header_len
    if not (begin == 0 and stop - begin == count * dim * 4 and stop <= body):
        raise PersistenceError(
            f"{path}: truncated or malformed (data offsets {[begin, stop]}, "
            f"{count * dim * 4} bytes expected, {body} bytes present)"
        )
    if stop != body:
        raise PersistenceError(f"{path}: {body - stop} unexpected trailing bytes")
    vectors = np.frombuffer(data, dtype="<f4", count=count * dim, offset=8 + header_len)
    vectors = vectors.reshape(count, dim).astype(np.float32)
    if not np.isfinite(vectors).all():
        raise PersistenceError(f"{path}: vectors contain NaN or infinite values")
    return vectors


def _vectors_entry(path: Path, header: object) -> dict[str, Any]:
    if not isinstance(header, dict):
        raise PersistenceError(f"{path}: malformed safetensors header (not an object)")
    names = [key for key in header if key != "__metadata__"]
    if names != ["vectors"]:
        raise PersistenceError(f"{path}: expected exactly one tensor 'vectors', found {names}")
    info = header["vectors"]
    if not isinstance(info, dict) or info.get("dtype") != "F32":
        raise PersistenceError(f"{path}: tensor 'vectors' must be described as dtype F32")
    shape, offsets = info.get("shape"), info.get("data_offsets")
    valid = (
        isinstance(shape, list)
        and len(shape) == 2
        and all(_is_int(n) and n >= 0 for n in shape)
        and isinstance(offsets, list)
        and len(offsets) == 2
        and all(_is_int(n) and n >= 0 for n in offsets)
        and offsets[0] <= offsets[1]
    )
    if not valid:
        raise PersistenceError(f"{path}: malformed safetensors header (bad shape or offsets)")
    return info


__all__ = ["CHUNKS_FILE", "VECTORS_FILE", "DenseIndex"]
