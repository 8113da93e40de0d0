"""A pipeline's save: memory + index + the settings to rebuild it, in one atomic snapshot."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from shared_core.config import UNSAVED_INDEX_OPTIONS, MemoRAGConfig
from shared_core.errors import PersistenceError
from shared_core.memory.base import Memory, check_memory_fields
from shared_core.persistence import SaveDir, write_manifest
from shared_core.retrieval.embeddings import Embedder
from shared_core.retrieval.index_choice import load_index
from shared_core.retrieval.saved_chunking import check_chunking, chunking_record
from shared_core.retrieval.vector_index import VectorIndex
from shared_core.saved_settings import CONFIG_FORMAT

KIND = "memorag"


def pipeline_section(
    config: MemoRAGConfig, memory: Memory, embedder: Embedder, language: str, generator: str
) -> dict[str, Any]:
    """The settings a later ``from_dir`` rebuilds and serves the pipeline from: the whole
    config (``MemoRAGConfig.saved_options``: local model folders as absolute paths, no
    secrets), the prompt ``language`` in force, and what the pipeline was built with
    (``generator``: the answer generator's kind)."""
    section: dict[str, Any] = {
        "config_format": CONFIG_FORMAT,
        **config.saved_options(language=language),
    }
    for name in ("clue_strategy", "scorer"):
        if name not in section:
            section[name] = None  # an object: from_dir warns that it must be passed again
    unsaved = sorted(set(config.index_options) & set(UNSAVED_INDEX_OPTIONS))
    if unsaved:
        section["index_options_unsaved"] = unsaved
    section.update(
        embedder=embedder.name,
        documents=[d["doc_id"] for d in memory.documents],
        generator=generator,
    )
    return section


def write_save(
    save_dir: str | Path,
    memory: Memory,
    index: VectorIndex,
    section: Mapping[str, Any],
    config: MemoRAGConfig,
    *,
    overwrite: bool = False,
    known: Collection[str] = (),
) -> str:
    """Write a new snapshot of ``memory`` and ``index`` and make it current atomically;
    ``known`` are the snapshots this state already contains (any other live one is a
    concurrent save: refused). Returns the new snapshot's name."""
    target = SaveDir(save_dir)
    chunking = chunking_record(config.retrieval_chunk_size, config.chunk_overlap)
    with target.stage(lineage=memory.lineage, overwrite=overwrite, known=known) as folder:
        write_manifest(
            folder,
            {
                "kind": KIND,
                "lineage": memory.lineage,
                "memory": memory.write_files(folder),
                "index": index.save(folder, chunking=chunking),
                "pipeline": dict(section),
            },
        )
    return str(target.committed)


def saved_pipeline(save_dir: str | Path) -> tuple[Path, Mapping[str, Any], Mapping[str, Any]]:
    """The snapshot folder, ``pipeline`` and ``memory`` sections of a save (for
    ``from_dir``)."""
    folder, manifest = SaveDir(save_dir).require()
    pipeline, memory = manifest.get("pipeline"), manifest.get("memory")
    if not isinstance(pipeline, dict):
        raise PersistenceError(f"{folder / 'manifest.json'} is not a MemoRAG save")
    return folder, pipeline, memory if isinstance(memory, dict) else {}


def saved_language(manifest: Mapping[str, Any]) -> str | None:
    """The prompt language a save was written in, if it names one."""
    section = manifest.get("pipeline")
    language = section.get("language") if isinstance(section, dict) else None
    return language if language in ("en", "zh") else None


def read_index(
    folder: Path, manifest: Mapping[str, Any], embedder: Embedder, config: MemoRAGConfig
) -> VectorIndex:
    """Check a snapshot's sections against each other (and its chunking against ``config``,
    which later ``add`` calls use) and load its index."""
    where = folder / "manifest.json"
    if manifest.get("kind") != KIND:
        raise PersistenceError(f"{where} holds a {manifest.get('kind')!r}, not a MemoRAG save")
    for key in ("memory", "index", "pipeline"):
        if not isinstance(manifest.get(key), dict):
            raise PersistenceError(f"{where} has no {key!r} section")
    index = load_index(
        folder,
        embedder,
        manifest["index"],
        config.index,
        config.search_mode,
        config.index_options,
    )
    doc_ids = manifest["pipeline"].get("documents")
    if not isinstance(doc_ids, list) or not all(isinstance(d, str) for d in doc_ids):
        raise PersistenceError(f"{where}: pipeline.documents must be a list of doc ids")
    if set(doc_ids) != {c.doc_id for c in index.chunks}:
        raise PersistenceError(f"{where}: the index and the memory hold different documents")
    check_memory_fields(where, manifest["memory"])
    if [d["doc_id"] for d in manifest["memory"]["documents"]] != doc_ids:
        raise PersistenceError(f"{where}: the memory section lists other documents")
    check_chunking(
        where,
        manifest,
        index.chunks,
        chunk_size=config.retrieval_chunk_size,
        chunk_overlap=config.chunk_overlap,
    )
    return index


def read_save_info(save_dir: str | Path) -> dict[str, Any]:
    """The manifest of a save directory, checked (for ``memorag stats``)."""
    folder, manifest = SaveDir(save_dir).require()
    where = folder / "manifest.json"
    for key in ("memory", "index", "pipeline"):
        if key in manifest and not isinstance(manifest[key], dict):
            raise PersistenceError(
                f"{where}: the {key!r} section is a JSON {type(manifest[key]).__name__}, not an "
                "object (edited or corrupt)"
            )
    documents = manifest.get("pipeline", {}).get("documents", [])
    if not isinstance(documents, list) or not all(isinstance(d, str) for d in documents):
        raise PersistenceError(f"{where}: pipeline.documents must be a list of doc ids")
    info = dict(manifest)
    info["snapshot"] = folder.name
    del info["files"]
    return info
