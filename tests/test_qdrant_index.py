"""The own index on Qdrant (local mode: ``":memory:"`` and ``path=``) behind the ``VectorIndex``
protocol: the same hits as faiss, incremental add, the faiss index's safety rules, the same
save files both ways, and a pipeline chosen by ``index="qdrant"``; BM25 / hybrid search beside
either store."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scripted import ScriptedMemory, shared_embedder

from shared_core.errors import InputError, NoMemoryError, PersistenceError
from shared_core.pipeline import MemoRAG
from shared_core.retrieval.embeddings import Embedder
from shared_core.retrieval.hybrid import HybridIndex
from shared_core.retrieval.index import CHUNKS_FILE, VECTORS_FILE, DenseIndex
from shared_core.retrieval.vector_index import VectorIndex
from shared_core.types import Chunk

qdrant_index = pytest.importorskip("shared_core.retrieval.qdrant_index")
pytest.importorskip("qdrant_client")
QdrantIndex = qdrant_index.QdrantIndex

pytestmark = pytest.mark.real_model

CORPUS = {
    "cats": "Cats are small domesticated felines that purr and chase mice.",
    "rockets": "The rocket engine burns liquid hydrogen and oxygen to reach orbit.",
    "bread": "Knead the dough, let it rise, then bake the bread in a hot oven.",
    "tax": "Income tax returns must be filed with the revenue service by April.",
    "volcano": "Lava erupted from the volcano and flowed down toward the village.",
    "zx81": "The Sinclair ZX81 home computer shipped with one kilobyte of memory.",
}
QUERIES = ["feline pets", "space launch fuel", "baking", "Sinclair ZX81 memory"]


def _chunks(items: dict[str, str], doc: str = "doc") -> list[Chunk]:
    return [
        Chunk(f"{doc}#{key}", doc, text, i * 100, i * 100 + len(text), {"topic": key})
        for i, (key, text) in enumerate(items.items())
    ]


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return shared_embedder()


@pytest.fixture(scope="module")
def dense(embedder: Embedder) -> DenseIndex:
    index = DenseIndex(embedder)
    index.add(_chunks(CORPUS))
    return index


@pytest.fixture
def qdrant(embedder: Embedder) -> QdrantIndex:
    index = QdrantIndex(embedder, location=":memory:")
    index.add(_chunks(CORPUS))
    return index


def _ids(hits) -> list[str]:
    return [h.passage.id for h in hits]


def test_both_stores_implement_the_protocol(dense: DenseIndex, qdrant: QdrantIndex) -> None:
    assert isinstance(dense, VectorIndex) and isinstance(qdrant, VectorIndex)
    assert isinstance(HybridIndex(qdrant), VectorIndex)


def test_qdrant_finds_what_faiss_finds(dense: DenseIndex, qdrant: QdrantIndex) -> None:
    ours, theirs = qdrant.search_many(QUERIES, 3), dense.search_many(QUERIES, 3)
    for a, b in zip(ours, theirs, strict=True):
        assert _ids(a) == _ids(b)
        assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=1e-5)
        assert [h.rank for h in a] == [0, 1, 2]
    assert qdrant.search("feline pets", 1)[0].passage.metadata["topic"] == "cats"
    assert len(qdrant.search("anything", 50)) == len(CORPUS)  # min(k, len)


def test_incremental_add_and_safety_rules(embedder: Embedder, qdrant: QdrantIndex) -> None:
    qdrant.add([Chunk("new#0", "new", "Penguins huddle together on the Antarctic ice.", 0, 46)])
    assert len(qdrant) == len(CORPUS) + 1
    assert _ids(qdrant.search("birds in the cold south", 1)) == ["new#0"]
    with pytest.raises(InputError, match="duplicate chunk id 'new#0'"):
        qdrant.add([Chunk("new#0", "new", "again", 0, 5)])
    with pytest.raises(InputError, match="Chunk objects"):
        qdrant.add(["a plain string"])  # type: ignore[list-item]
    with pytest.raises(InputError, match="not a single str"):
        qdrant.search_many("one query", 2)  # type: ignore[arg-type]
    with pytest.raises(InputError):
        qdrant.search("cats", 0)
    with pytest.raises(NoMemoryError, match="empty"):
        QdrantIndex(embedder, location=":memory:").search("cats", 1)


def test_a_collection_that_holds_points_is_never_reused(
    embedder: Embedder, qdrant: QdrantIndex
) -> None:
    with pytest.raises(InputError, match=rf"{qdrant.collection!r} already holds 6 points"):
        QdrantIndex(embedder, client=qdrant.client, collection=qdrant.collection)
    with pytest.raises(InputError, match="one of location=, path= or url="):
        QdrantIndex(embedder, location=":memory:", path="/tmp/x")
    with pytest.raises(InputError, match="api_key goes with url="):
        QdrantIndex(embedder, location=":memory:", api_key="secret")


def test_saves_are_the_same_files_both_ways(
    embedder: Embedder, dense: DenseIndex, qdrant: QdrantIndex, tmp_path: Path
) -> None:
    a, b = tmp_path / "faiss", tmp_path / "qdrant"
    a.mkdir(), b.mkdir()
    entry_a, entry_b = dense.save(a), qdrant.save(b)
    assert entry_b["store"] == "qdrant"
    assert json.loads((a / CHUNKS_FILE).read_text()) == json.loads((b / CHUNKS_FILE).read_text())
    np.testing.assert_allclose(qdrant.vectors(), dense.vectors(), atol=1e-6)
    # faiss save -> Qdrant, Qdrant save -> faiss: the same hits
    into_qdrant = QdrantIndex.load(a, embedder, expected=entry_a, location=":memory:")
    into_faiss = DenseIndex.load(b, embedder, expected=entry_b)
    for index in (into_qdrant, into_faiss):
        assert [_ids(h) for h in index.search_many(QUERIES, 2)] == [
            _ids(h) for h in dense.search_many(QUERIES, 2)
        ]


def test_a_tampered_save_is_refused_before_qdrant_sees_it(
    embedder: Embedder, qdrant: QdrantIndex, tmp_path: Path
) -> None:
    entry = qdrant.save(tmp_path)
    data = bytearray((tmp_path / VECTORS_FILE).read_bytes())
    data[-1] ^= 0xFF
    (tmp_path / VECTORS_FILE).write_bytes(bytes(data))
    from qdrant_client import QdrantClient

    client = QdrantClient(location=":memory:")
    with pytest.raises(PersistenceError, match="sha256 does not match"):
        QdrantIndex.load(tmp_path, embedder, expected=entry, client=client, collection="c")
    assert not client.collection_exists("c")


def test_local_folder_mode_keeps_the_collection_on_disk(embedder: Embedder, tmp_path: Path) -> None:
    index = QdrantIndex(embedder, path=tmp_path / "qdrant", collection="docs")
    index.add(_chunks(CORPUS))
    index.client.close()
    from qdrant_client import QdrantClient

    reopened = QdrantClient(path=str(tmp_path / "qdrant"))
    assert reopened.count("docs", exact=True).count == len(CORPUS)
    reopened.close()


# -- BM25 and hybrid -------------------------------------------------------------------------


@pytest.mark.parametrize("store", ["faiss", "qdrant"])
def test_bm25_and_hybrid_beside_either_store(embedder: Embedder, store: str) -> None:
    inner = DenseIndex(embedder) if store == "faiss" else QdrantIndex(embedder, location=":memory:")
    keyword = HybridIndex(inner, mode="bm25")
    keyword.add(_chunks(CORPUS))
    # an exact rare term: BM25 puts it first
    assert _ids(keyword.search("ZX81 kilobyte", 1)) == ["doc#zx81"]
    # no shared term: still min(k, len) hits (filled in corpus order, score 0)
    hits = keyword.search("qwertyuiop", 3)
    assert len(hits) == 3 and all(h.score == 0.0 for h in hits)
    hybrid = HybridIndex(inner, mode="hybrid")
    # dense alone finds a paraphrase BM25 cannot: hybrid keeps it
    assert _ids(hybrid.search("feline pets", 1)) == ["doc#cats"]
    assert _ids(hybrid.search("ZX81 kilobyte", 1)) == ["doc#zx81"]
    assert len(hybrid.search("anything at all", 4)) == 4
    # a later add is searchable by BM25 too (rebuilt on the next search)
    hybrid.add([Chunk("new#0", "new", "Quokkas live on Rottnest Island.", 0, 32)])
    assert _ids(keyword.search("quokkas Rottnest", 1)) == ["new#0"]
    assert _ids(hybrid.search("quokkas Rottnest", 1)) == ["new#0"]


def test_hybrid_fuses_by_reciprocal_rank(embedder: Embedder) -> None:
    inner = DenseIndex(embedder)
    inner.add(_chunks(CORPUS))
    hybrid = HybridIndex(inner, mode="hybrid", rrf_k=60)
    query = "Sinclair ZX81 memory"
    top = hybrid.search(query, 1)[0]
    dense_rank = _ids(inner.search(query, len(CORPUS))).index(top.passage.id)
    assert top.score == pytest.approx(1 / (60 + dense_rank + 1) + 1 / 61)


# -- the pipeline option -----------------------------------------------------------------------

TEXTS = [
    "Halloran rents a small room above the bakery on Wick Lane.",
    "The chapel bell was cast in 1790 and cracked during a hard frost.",
    "The mill on the Ashe river was rebuilt with stone from the quarry.",
]


@pytest.mark.parametrize("search_mode", ["dense", "hybrid"])
def test_pipeline_on_qdrant_memorize_add_save_load(
    embedder: Embedder, tmp_path: Path, search_mode: str
) -> None:
    options = {"location": ":memory:"}
    pipe = MemoRAG(
        memory=ScriptedMemory(),
        embedder=embedder,
        clue_strategy="none",
        index="qdrant",
        search_mode=search_mode,
        index_options=options,
    )
    pipe.memorize(TEXTS[:2])
    pipe.add(TEXTS[2:], save_dir=tmp_path / "save")
    assert pipe.corpus_size == 3
    assert "Wick Lane" in pipe.retrieve("Where is Halloran's room?", 1).passages[0].passage.text
    again = MemoRAG(
        memory=ScriptedMemory(),
        embedder=embedder,
        clue_strategy="none",
        index="qdrant",
        search_mode=search_mode,
        index_options=options,
    ).load(tmp_path / "save")
    assert again.corpus_size == 3
    found = again.retrieve("the mill on the river", 1).passages[0].passage.text
    assert "Ashe" in found
    # the same save opens in the faiss index too
    plain = MemoRAG(memory=ScriptedMemory(), embedder=embedder, clue_strategy="none")
    assert plain.load(tmp_path / "save").corpus_size == 3


def test_pipeline_refuses_unknown_index_choices(embedder: Embedder) -> None:
    with pytest.raises(InputError, match="unknown index 'milvus'"):
        MemoRAG(embedder=embedder, index="milvus")
    with pytest.raises(InputError, match="unknown search_mode 'sparse'"):
        MemoRAG(embedder=embedder, search_mode="sparse")
    with pytest.raises(InputError, match="are for index='qdrant'"):
        MemoRAG(embedder=embedder, index_options={"url": "http://x"})
    with pytest.raises(InputError, match="unknown index_options"):
        MemoRAG(embedder=embedder, index="qdrant", index_options={"host": "x"})
