"""How a save's chunks were cut, recorded with the index and checked on load.

Later ``add`` calls chunk new text with the pipeline's ``retrieval_chunk_size`` and
``chunk_overlap``; a load refuses a save whose recorded settings differ from the pipeline's
(or from the copy in ``chunks.json``, which its sha256 covers), and chunks that point past the
end of their document, naming the field.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from shared_core.errors import IncompatibleMemoryError, PersistenceError
from shared_core.persistence.files import short
from shared_core.types import Chunk

_FIELDS = ("retrieval_chunk_size", "chunk_overlap")


def chunking_record(chunk_size: int, chunk_overlap: int) -> dict[str, int]:
    """What ``DenseIndex.save(chunking=...)`` records."""
    return {"retrieval_chunk_size": chunk_size, "chunk_overlap": chunk_overlap}


def check_chunking(
    where: Path,
    manifest: Mapping[str, Any],
    chunks: Sequence[Chunk],
    *,
    chunk_size: int,
    chunk_overlap: int,
) -> None:
    """Check the manifest's chunking fields against the index's copy, the pipeline's
    settings and the documents' lengths (``chars``)."""
    pipeline, index = manifest["pipeline"], manifest["index"]
    recorded = index.get("chunking")
    mine = chunking_record(chunk_size, chunk_overlap)
    for key in _FIELDS:
        saved = pipeline.get(key)
        if isinstance(recorded, Mapping) and key in recorded and recorded[key] != saved:
            raise PersistenceError(
                f"{where}: pipeline.{key} is {short(saved)}, but the index was chunked with "
                f"{short(recorded[key])} (chunks.json): the manifest was edited"
            )
        if saved is not None and saved != mine[key]:
            raise IncompatibleMemoryError(
                f"{where}: pipeline.{key} is {short(saved)} in the save but {mine[key]} here; "
                f"later add() calls would chunk with another size: pass {key}={short(saved)} "
                "(or load with MemoRAG.from_dir without it)"
            )
    lengths = {
        d["doc_id"]: d["chars"]
        for d in manifest["memory"].get("documents", [])
        if isinstance(d, Mapping) and "chars" in d
    }
    for chunk in chunks:
        chars = lengths.get(chunk.doc_id)
        if chars is not None and chunk.end > chars:
            raise PersistenceError(
                f"{where}: document {chunk.doc_id!r} has chars {chars}, but its chunk "
                f"{chunk.chunk_id!r} ends at {chunk.end}: the document records were edited"
            )
