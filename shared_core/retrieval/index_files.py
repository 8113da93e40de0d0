"""The index's two files, shared by every store: ``index.safetensors`` (float32 vectors under
``"vectors"``) and ``chunks.json`` (chunks, embedder name and fingerprint, dim, count, how the
chunks were cut). Loading checks every field, every size and (when given) every sha256 before
trusting a byte; no pickle and no faiss format.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save as save_safetensors

from shared_core.errors import IncompatibleMemoryError, PersistenceError
from shared_core.persistence.files import write_new
from shared_core.retrieval.embeddings import Embedder
from shared_core.types import Chunk, Passage

VECTORS_FILE = "index.safetensors"
CHUNKS_FILE = "chunks.json"
FORMAT = "memorag-dense-index"
FORMAT_VERSION = 1
#: A safetensors header this large cannot describe one tensor: refuse before reading it.
_MAX_HEADER_BYTES = 1 << 20


def write_index_files(
    directory: str | Path,
    embedder: Embedder,
    vectors: np.ndarray,
    chunks: Sequence[Chunk],
    *,
    chunking: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """Write ``vectors`` (one row per chunk) and ``chunks`` as the index's two files.

    Shared by every ``VectorIndex``, so a save does not depend on the store it came from.
    ``chunking`` records how the chunks were cut, so a load can check the settings later
    ``add`` calls will use. Returns the manifest entry: ``{"files": {name: sha256},
    "embedder", "embedder_fingerprint", "dim", "count", "chunking"}``.
    """
    folder = Path(directory)
    if not folder.is_dir():
        raise PersistenceError(f"cannot save the index: {folder} is not an existing directory")
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    dim = int(vectors.shape[1])
    record = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "embedder": embedder.name,
        "embedder_fingerprint": embedder.fingerprint,
        "dim": dim,
        "count": len(chunks),
        "chunking": dict(chunking or {}),
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
        write_new(folder / name, data)
        files[name] = hashlib.sha256(data).hexdigest()
    return {
        "files": files,
        "embedder": embedder.name,
        "embedder_fingerprint": record["embedder_fingerprint"],
        "dim": dim,
        "count": len(chunks),
        "chunking": record["chunking"],
    }


def read_index_files(
    directory: str | Path, embedder: Embedder, *, expected: Mapping[str, Any] | None = None
) -> tuple[list[Chunk], np.ndarray]:
    """The chunks and vectors ``write_index_files`` wrote, every field and hash checked."""
    folder = Path(directory)
    if not folder.is_dir():
        raise PersistenceError(f"no saved index: {folder} is not a directory")
    hashes = _expected_hashes(expected)
    chunks_path = folder / CHUNKS_FILE
    record = _read_chunks(_read_file(chunks_path, hashes.get(CHUNKS_FILE)), chunks_path)
    _check_expected(record, expected)
    saved_print = record.get("embedder_fingerprint")
    if saved_print is not None and saved_print != embedder.fingerprint:
        raise IncompatibleMemoryError(
            f"{folder / CHUNKS_FILE}: the index was built with embedder "
            f"{record['embedder']!r} (weights fingerprint {saved_print[:12]}), but the given "
            f"embedder {embedder.name!r} has fingerprint {embedder.fingerprint[:12]}: another "
            "model (or other weights) is at that name; pass ret_model_name_or_path= (or "
            "embedder=) naming the model the memory was built with"
        )
    if saved_print is None and record["embedder"] != embedder.name:
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
    return record["chunks"], vectors


# ---------------------------------------------------------------------- helpers: chunks


def chunk_passage(chunk: Chunk) -> Passage:
    """The ``Passage`` a search returns for ``chunk`` (its position in ``metadata``)."""
    metadata = {
        **chunk.metadata,
        "doc_id": chunk.doc_id,
        "start": chunk.start,
        "end": chunk.end,
        "chunk_id": chunk.chunk_id,
    }
    return Passage(id=chunk.chunk_id, text=chunk.text, metadata=metadata)


def _chunk_record(chunk: Chunk) -> dict[str, Any]:
    """Every field of ``chunk``, in declaration order (the metadata as a plain dict)."""
    record = {f.name: getattr(chunk, f.name) for f in fields(chunk)}
    return {**record, "metadata": dict(chunk.metadata)}


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
    for key in ("embedder", "embedder_fingerprint", "dim", "count", "chunking"):
        if key in expected and expected[key] != record.get(key):
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
    fingerprint = record.get("embedder_fingerprint")
    if fingerprint is not None and not isinstance(fingerprint, str):
        raise PersistenceError(f"{where}: 'embedder_fingerprint' must be a string")
    chunking = record.get("chunking", {})
    if not isinstance(chunking, dict) or not all(
        isinstance(k, str) and _is_int(v) and 0 <= v < 1 << 30 for k, v in chunking.items()
    ):
        raise PersistenceError(f"{where}: 'chunking' must map names to non-negative ints")
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


__all__ = ["CHUNKS_FILE", "VECTORS_FILE", "chunk_passage", "read_index_files", "write_index_files"]
