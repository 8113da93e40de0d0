"""A pipeline's save: memory + index + the settings to rebuild it, in one atomic snapshot."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from shared_core.config import MemoRAGConfig
from shared_core.errors import PersistenceError
from shared_core.memory.base import Memory, check_memory_fields
from shared_core.persistence import SaveDir, write_manifest
from shared_core.retrieval.embeddings import Embedder
from shared_core.retrieval.index_choice import load_index
from shared_core.retrieval.saved_chunking import check_chunking, chunking_record
from shared_core.retrieval.vector_index import VectorIndex
from shared_core.saved_settings import model_ref

KIND = "memorag"


def pipeline_section(
    config: MemoRAGConfig, memory: Memory, embedder: Embedder, language: str, generator: str
) -> dict[str, Any]:
    """The settings a later ``from_dir`` rebuilds and serves the pipeline from (local model
    folders as absolute paths; ``generator`` is the answer generator's kind)."""
    options = {
        k: v
        for k, v in config.memory_kwargs().items()
        if isinstance(v, (str, int, float, bool, type(None)))
    }
    return {
        "mem_model_name_or_path": model_ref(config.mem_model_name_or_path),
        "ret_model_name_or_path": model_ref(config.ret_model_name_or_path),
        "embedder": embedder.name,
        "memory_options": options,
        "memory_backend": memory.backend,
        "retrieval_chunk_size": config.retrieval_chunk_size,
        "chunk_overlap": config.chunk_overlap,
        "language": language,
        "documents": [d["doc_id"] for d in memory.documents],
        "ret_hit": config.ret_hit,
        "fusion": config.fusion,
        "retrieval": config.retrieval,
        "heads_weight": config.heads_weight,
        "heads_weighting": config.heads_weighting,
        "rrf_k": config.rrf_k,
        "query_weight": config.query_weight,
        "anchor_clues": config.anchor_clues,
        "clue_strategy": config.clue_strategy if isinstance(config.clue_strategy, str) else None,
        "gen_model_name_or_path": model_ref(config.gen_model_name_or_path),
        "generator": generator,
        "answer_style": config.answer_style,
    }


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


def saved_pipeline(save_dir: str | Path) -> tuple[Path, Mapping[str, Any]]:
    """The snapshot folder and ``pipeline`` section of a save (for ``from_dir``)."""
    folder, manifest = SaveDir(save_dir).require()
    pipeline = manifest.get("pipeline")
    if not isinstance(pipeline, dict):
        raise PersistenceError(f"{folder / 'manifest.json'} is not a MemoRAG save")
    return folder, pipeline


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
    info = dict(manifest)
    info["snapshot"] = folder.name
    del info["files"]
    return info
