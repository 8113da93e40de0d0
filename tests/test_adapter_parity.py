"""Both adapters over one real engine: same passages, same clues, same scores."""

from __future__ import annotations

import pytest
from scripted import SPAN, ScriptedGenerator, ScriptedMemory, shared_embedder

from shared_core import MemoRAG
from shared_core.memory.compressed_kv import CompressedKVMemory

pytest.importorskip("langchain_core")
pytest.importorskip("llama_index.core")

from langchain_memorag import MemoRAGRetriever as LCRetriever
from llamaindex_memorag import MemoRAGRetriever as LIRetriever

CORPUS = [
    "The lighthouse on Skerry Point was built by the engineer Alan Marsh in 1851.",
    "Alan Marsh was born in Leith and trained as a stonemason before turning to engineering.",
    "Herring boats from Wick sailed past the point every autumn.",
    "The keeper's log records a great storm in the winter of 1862.",
    "A school for the keepers' children opened in the village in 1870.",
]
QUESTION = "Where was the builder of the Skerry Point lighthouse born?"


def _ids_lc(docs):
    return [d.id for d in docs]


def _ids_li(nodes):
    return [n.node.node_id for n in nodes]


@pytest.fixture(scope="module")
def scripted_engine():
    memory = ScriptedMemory({SPAN: "Alan Marsh was born in Leith and trained as a stonemason."})
    pipe = MemoRAG(
        memory=memory,
        embedder=shared_embedder(),
        generator=ScriptedGenerator("ok"),
        clue_strategy="span",
        retrieval_chunk_size=64,
    )
    return pipe.memorize(CORPUS)


@pytest.fixture(scope="module")
def tiny_engine(llama, tokenizer):
    memory = CompressedKVMemory(
        llama, tokenizer, beacon_ratio=4, window=128, reserve_tokens=64, show_progress=False
    )
    pipe = MemoRAG(
        memory=memory,
        embedder=shared_embedder(),
        clue_strategy="span+surrogate",
        retrieval_chunk_size=64,
    )
    return pipe.memorize(CORPUS)


@pytest.mark.parametrize("which", ["scripted_engine", "tiny_engine"])
@pytest.mark.parametrize("k", [1, 3, 5])
async def test_both_adapters_return_the_same_passages(which, k, request):
    engine = request.getfixturevalue(which)
    lc_docs = LCRetriever.from_engine(engine, k=k).invoke(QUESTION)
    li_nodes = LIRetriever(engine, similarity_top_k=k).retrieve(QUESTION)
    assert _ids_lc(lc_docs) == _ids_li(li_nodes)
    assert len(lc_docs) == k
    for doc, node in zip(lc_docs, li_nodes, strict=True):
        assert doc.metadata["relevance_score"] == pytest.approx(node.score)
        assert doc.metadata["memorag_clues"] == node.node.metadata["memorag_clues"]
        assert doc.page_content == node.node.get_content()
    # the async paths agree with the sync ones
    assert _ids_lc(await LCRetriever.from_engine(engine, k=k).ainvoke(QUESTION)) == _ids_lc(lc_docs)
    assert _ids_li(await LIRetriever(engine, similarity_top_k=k).aretrieve(QUESTION)) == _ids_li(
        li_nodes
    )


def test_the_clue_reaches_both_adapters(scripted_engine):
    lc_top = LCRetriever.from_engine(scripted_engine, k=2).invoke(QUESTION)
    li_top = LIRetriever(scripted_engine, similarity_top_k=2).retrieve(QUESTION)
    born = [d for d in lc_top if "Leith" in d.page_content]
    assert born and "span" in born[0].metadata["memorag_clue_kinds"]
    assert any("Leith" in n.node.get_content() for n in li_top)
