"""``memorize`` and ``add`` change the index first, then the memory; a step that fails changes
nothing, and if the memory refuses an ``add`` the index is put back: the two never disagree."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from fakes import WordHashEmbedder
from scripted import ScriptedMemory

from shared_core.errors import InputError, LimitError
from shared_core.pipeline import MemoRAG
from shared_core.retrieval.index import DenseIndex
from shared_core.retrieval.qdrant_index import QdrantIndex
from shared_core.types import Document

CORPUS = [f"The keeper of lamp {i} writes in the log every night." for i in range(4)]
NEW = ["The ferry to the island leaves at dawn.", "Gulls nest on the cliffs above the quay."]


class FailingEmbedder(WordHashEmbedder):
    """Embeds until ``fail`` is set, then raises (a store whose add fails)."""

    fail = False

    def embed_passages(self, texts: Any, show_progress: bool = False) -> np.ndarray:
        if self.fail:
            raise RuntimeError("the embedding server went away")
        return super().embed_passages(texts, show_progress=show_progress)


class RefusingMemory(ScriptedMemory):
    """A memory that refuses the next ``add`` (e.g. over its positions)."""

    refuse = False

    def add(self, context: Any, *, show_progress: bool | None = None) -> Any:
        if self.refuse:
            raise LimitError("the text is over this memory's positions")
        return super().add(context, show_progress=show_progress)


def _state(pipe: MemoRAG) -> tuple[Any, ...]:
    index = pipe.index
    return (
        [d["doc_id"] for d in pipe.memory.documents],
        [c.chunk_id for c in index.chunks],
        np.asarray(index.vectors()).shape,
    )


def _hits(pipe: MemoRAG, query: str) -> set[tuple[str, float]]:
    return {(h.passage.id, round(h.score, 5)) for h in pipe.index.search(query, 4)}


@pytest.mark.parametrize("search_mode", ["dense", "hybrid"])
def test_an_index_failure_during_add_leaves_memory_and_index_as_they_were(search_mode):
    embedder = FailingEmbedder()
    pipe = MemoRAG(
        memory=ScriptedMemory(), embedder=embedder, clue_strategy="none", search_mode=search_mode
    )
    pipe.memorize(CORPUS)
    before = _state(pipe)
    embedder.fail = True
    with pytest.raises(RuntimeError, match="went away"):
        pipe.add(NEW)
    assert _state(pipe) == before
    embedder.fail = False
    pipe.add(NEW)  # and the same add works once the store does
    assert len(pipe.memory.documents) == 6 and len(pipe.index) == 6


@pytest.mark.parametrize("index", ["faiss", "qdrant"])
def test_a_memory_that_refuses_an_add_gets_the_index_put_back(index):
    memory = RefusingMemory()
    pipe = MemoRAG(memory=memory, embedder=WordHashEmbedder(), clue_strategy="none", index=index)
    pipe.memorize(CORPUS)
    before = _state(pipe)
    hits = _hits(pipe, "keeper lamp log")
    memory.refuse = True
    with pytest.raises(LimitError):
        pipe.add(NEW)
    assert _state(pipe) == before
    assert _hits(pipe, "keeper lamp log") == hits
    assert pipe.index.search("ferry island dawn", 1)[0].passage.id.startswith("doc-")
    memory.refuse = False
    pipe.add(NEW)  # the same ids again: the rollback left none behind
    assert _state(pipe)[0][-2:] == ["doc-4", "doc-5"] and len(pipe.index) == 6


def test_a_duplicate_document_changes_neither():
    pipe = MemoRAG(memory=ScriptedMemory(), embedder=WordHashEmbedder(), clue_strategy="none")
    pipe.memorize([Document(t, doc_id=f"d{i}") for i, t in enumerate(CORPUS)])
    before = _state(pipe)
    with pytest.raises(InputError, match="already"):
        pipe.add(Document("again", doc_id="d1"))
    assert _state(pipe) == before


@pytest.mark.parametrize("make", [DenseIndex, lambda e: QdrantIndex(e, location=":memory:")])
def test_truncate_undoes_the_last_adds(make):
    from shared_core.types import Chunk

    index = make(WordHashEmbedder())
    chunks = [
        Chunk(text=t, doc_id=f"d{i}", chunk_id=f"d{i}#0", start=0, end=len(t))
        for i, t in enumerate(CORPUS)
    ]
    index.add(chunks[:2])
    kept = np.asarray(index.vectors()).copy()
    index.add(chunks[2:])
    index.truncate(2)
    assert [c.chunk_id for c in index.chunks] == ["d0#0", "d1#0"] and index.get("d3#0") is None
    np.testing.assert_allclose(index.vectors(), kept)
    assert {h.passage.id for h in index.search("keeper lamp", 4)} == {"d0#0", "d1#0"}
    index.add(chunks[2:])
    assert len(index) == 4
