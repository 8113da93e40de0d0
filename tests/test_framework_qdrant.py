"""The frameworks' own Qdrant stores as ``base_retriever``, end to end: LangChain
``QdrantVectorStore(...).as_retriever()`` and LlamaIndex ``QdrantVectorStore`` through
``VectorStoreIndex(...).as_retriever()``, both in Qdrant's local ``":memory:"`` mode and both
embedding with the embedded MiniLM (the adapters' ``MemoRAGEmbeddings`` / ``MemoRAGEmbedding``:
``langchain-huggingface`` / ``llama-index-embeddings-huggingface`` need huggingface_hub < 2,
older than the one transformers 5 runs on here). The memory's clues are scripted, so which
passage each clue finds is known."""

from __future__ import annotations

import pytest
from scripted import SPAN, SURROGATE, ScriptedMemory, shared_embedder

from shared_core.pipeline import MemoRAG
from shared_core.retrieval.embeddings import Embedder

pytest.importorskip("qdrant_client")
pytestmark = pytest.mark.real_model

TEXTS = [
    "The ship's doctor aboard the Gull was a quiet man named Halloran.",
    "Halloran rents a small room above the bakery on Wick Lane.",
    "The chapel bell was cast in 1790 and cracked during a hard frost.",
    "The mill on the Ashe river was rebuilt with stone from the quarry.",
    "Fishermen mend their nets on the quay while the tide is out.",
    "The harbourmaster's daughter keeps the tide tables in a leather book.",
]
QUERY = "Where does the ship's doctor live?"
EVIDENCE = "Halloran rents a small room above the bakery on Wick Lane."
RULES = {
    (SPAN, QUERY): "Halloran rents a small room above the bakery.",
    (SURROGATE, QUERY): "Which lane does Halloran rent a room on?",
}


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return shared_embedder()


def _engine(embedder: Embedder) -> MemoRAG:
    engine = MemoRAG(
        memory=ScriptedMemory(RULES), embedder=embedder, clue_strategy="span+surrogate"
    )
    engine.memorize(TEXTS)
    return engine


def test_langchain_qdrant_vector_store_as_base_retriever(embedder: Embedder) -> None:
    langchain_qdrant = pytest.importorskip("langchain_qdrant")
    from langchain_memorag import MemoRAGEmbeddings, MemoRAGRetriever

    store = langchain_qdrant.QdrantVectorStore.from_texts(
        TEXTS,
        embedding=MemoRAGEmbeddings(embedder=embedder),
        metadatas=[{"line": i} for i in range(len(TEXTS))],
        location=":memory:",
        collection_name="lc-docs",
    )
    retriever = MemoRAGRetriever(
        query_metadata=True,
        engine=_engine(embedder),
        base_retriever=store.as_retriever(search_kwargs={"k": 2}),
        k=2,
    )
    docs = retriever.invoke(QUERY)
    assert len(docs) == 2
    assert EVIDENCE in [d.page_content for d in docs]
    evidence = next(d for d in docs if d.page_content == EVIDENCE)
    assert evidence.metadata["line"] == 1  # Qdrant's own document came back, metadata intact
    assert evidence.metadata["_collection_name"] == "lc-docs"
    assert evidence.metadata["memorag_clues"]  # and a clue found it


async def test_langchain_qdrant_async(embedder: Embedder) -> None:
    langchain_qdrant = pytest.importorskip("langchain_qdrant")
    from langchain_memorag import MemoRAGEmbeddings, MemoRAGRetriever

    store = langchain_qdrant.QdrantVectorStore.from_texts(
        TEXTS,
        embedding=MemoRAGEmbeddings(embedder=embedder),
        location=":memory:",
        collection_name="lc-async",
    )
    retriever = MemoRAGRetriever(
        engine=_engine(embedder), base_retriever=store.as_retriever(search_kwargs={"k": 2}), k=2
    )
    docs = await retriever.ainvoke(QUERY)
    assert EVIDENCE in [d.page_content for d in docs]


def test_llamaindex_qdrant_vector_store_index_as_base_retriever(embedder: Embedder) -> None:
    li_qdrant = pytest.importorskip("llama_index.vector_stores.qdrant")
    from llama_index.core import Document, StorageContext, VectorStoreIndex
    from qdrant_client import QdrantClient

    from llamaindex_memorag import MemoRAGEmbedding, MemoRAGRetriever

    store = li_qdrant.QdrantVectorStore(
        client=QdrantClient(location=":memory:"), collection_name="li-docs"
    )
    documents = [Document(text=t, metadata={"line": i}) for i, t in enumerate(TEXTS)]
    index = VectorStoreIndex.from_documents(
        documents,
        storage_context=StorageContext.from_defaults(vector_store=store),
        embed_model=MemoRAGEmbedding(embedder=embedder),
    )
    retriever = MemoRAGRetriever(
        _engine(embedder),
        query_metadata=True,
        base_retriever=index.as_retriever(similarity_top_k=2),
        similarity_top_k=2,
    )
    nodes = retriever.retrieve(QUERY)
    assert len(nodes) == 2
    texts = [n.node.get_content() for n in nodes]
    assert EVIDENCE in texts
    evidence = nodes[texts.index(EVIDENCE)]
    assert evidence.node.metadata["line"] == 1
    assert evidence.node.metadata["memorag_clues"]
