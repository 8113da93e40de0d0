"""Both adapters over one real engine: same passages, same clues, same scores, same metadata,
with the engine's own index and with a framework retriever (LangChain / LlamaIndex, ranking the
same passages alike) as the search back-end."""

from __future__ import annotations

import re

import pytest
from scripted import SPAN, ScriptedGenerator, ScriptedMemory, shared_embedder

from shared_core import MemoRAG
from shared_core.memory.compressed_kv import CompressedKVMemory

pytest.importorskip("langchain_core")
pytest.importorskip("llama_index.core")

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from llama_index.core.base.base_retriever import BaseRetriever as LIBaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
from pydantic import Field

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
        llama,
        tokenizer,
        beacon_ratio=4,
        window=128,
        reserve_tokens=64,
        show_progress=False,
        compress="always",
        scorer="key_norm",
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
    lc_docs = LCRetriever.from_engine(engine, query_metadata=True, k=k).invoke(QUESTION)
    li_nodes = LIRetriever(engine, query_metadata=True, similarity_top_k=k).retrieve(QUESTION)
    assert _ids_lc(lc_docs) == _ids_li(li_nodes)
    assert len(lc_docs) == k
    for doc, node in zip(lc_docs, li_nodes, strict=True):
        assert doc.metadata["relevance_score"] == pytest.approx(node.score)
        assert doc.metadata["memorag_clues"] == node.node.metadata["memorag_clues"]
        assert doc.page_content == node.node.get_content()
    # the async paths agree with the sync ones
    assert _ids_lc(
        await LCRetriever.from_engine(engine, query_metadata=True, k=k).ainvoke(QUESTION)
    ) == _ids_lc(lc_docs)
    assert _ids_li(
        await LIRetriever(engine, query_metadata=True, similarity_top_k=k).aretrieve(QUESTION)
    ) == _ids_li(li_nodes)


def test_the_clue_reaches_both_adapters(scripted_engine):
    lc_top = LCRetriever.from_engine(scripted_engine, query_metadata=True, k=2).invoke(QUESTION)
    li_top = LIRetriever(scripted_engine, query_metadata=True, similarity_top_k=2).retrieve(
        QUESTION
    )
    born = [d for d in lc_top if "Leith" in d.page_content]
    assert born and "span" in born[0].metadata["memorag_clue_kinds"]
    assert any("Leith" in n.node.get_content() for n in li_top)


# -- a framework retriever as the back-end ------------------------------------------------------

_WORD = re.compile(r"\w+")


def _overlap_ranking(query: str) -> list[int]:
    """Indices of CORPUS by shared words with ``query`` (ties: corpus order), the best one twice:
    both framework retrievers below return this, repeats included, to test de-duplication."""
    words = {w.lower() for w in _WORD.findall(query)}
    order = sorted(
        range(len(CORPUS)),
        key=lambda i: (-len(words & {w.lower() for w in _WORD.findall(CORPUS[i])}), i),
    )
    return [order[0], *order]


class LCOverlap(BaseRetriever):
    """A LangChain retriever over CORPUS that honours ``k``."""

    seen_k: list[int] = Field(default_factory=list)

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, k: int = 4
    ) -> list[Document]:
        self.seen_k.append(k)
        return [
            Document(id=f"p{i}", page_content=CORPUS[i], metadata={"row": i})
            for i in _overlap_ranking(query)[: k + 1]  # k distinct: the best one comes twice
        ]


class LIOverlap(LIBaseRetriever):
    """A LlamaIndex retriever over CORPUS: returns its whole ranking, with the scores the
    engine gives a LangChain list without scores (1 / (distinct rank + 1)), so both carry the
    same information and relevance scores can agree."""

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        ranking = _overlap_ranking(query_bundle.query_str)
        rank = {i: r for r, i in enumerate(dict.fromkeys(ranking))}
        return [
            NodeWithScore(
                node=TextNode(id_=f"p{i}", text=CORPUS[i], metadata={"row": i}),
                score=1.0 / (rank[i] + 1),
            )
            for i in ranking
        ]


def _same_results(lc_docs: list[Document], li_nodes: list[NodeWithScore]) -> None:
    assert _ids_lc(lc_docs) == _ids_li(li_nodes)
    assert len(set(_ids_lc(lc_docs))) == len(lc_docs)  # de-duplicated on both sides
    for doc, node in zip(lc_docs, li_nodes, strict=True):
        assert doc.page_content == node.node.get_content()
        assert doc.metadata["relevance_score"] == pytest.approx(node.score)
        lc_meta = {k: v for k, v in doc.metadata.items() if k != "relevance_score"}
        assert lc_meta == node.node.metadata


@pytest.mark.parametrize("which", ["scripted_engine", "tiny_engine"])
@pytest.mark.parametrize(("k", "search_k"), [(1, None), (3, None), (3, 2), (5, 5)])
async def test_both_adapters_agree_over_a_framework_retriever(which, k, search_k, request):
    engine = request.getfixturevalue(which)
    lc_base = LCOverlap()
    lc = LCRetriever.from_engine(
        engine, query_metadata=True, k=k, base_retriever=lc_base, search_k=search_k
    )
    li = LIRetriever(
        engine,
        query_metadata=True,
        base_retriever=LIOverlap(),
        similarity_top_k=k,
        search_top_k=search_k,
    )
    lc_docs = lc.invoke(QUESTION)
    li_nodes = li.retrieve(QUESTION)
    _same_results(lc_docs, li_nodes)
    # exactly k, unless searches shallower than k find fewer distinct passages between them
    assert len(lc_docs) == k if (search_k or k) >= k else 1 <= len(lc_docs) <= k
    # one depth setting: the engine's, passed on to a retriever that takes k
    assert set(lc_base.seen_k) == {search_k or max(k, engine.config.ret_hit)}
    _same_results(await lc.ainvoke(QUESTION), await li.aretrieve(QUESTION))


async def test_framework_and_own_index_agree_when_they_rank_alike(scripted_engine):
    """The back-end changes where passages come from, not how they are fused."""
    own = LIRetriever(scripted_engine, query_metadata=True, similarity_top_k=3).retrieve(QUESTION)
    framework = LIRetriever(
        scripted_engine, query_metadata=True, base_retriever=LIOverlap(), similarity_top_k=3
    ).retrieve(QUESTION)
    assert [n.node.metadata["memorag_clues"] for n in own] != [] and len(framework) == 3
    assert all(n.node.metadata["memorag_clues"] for n in framework)
