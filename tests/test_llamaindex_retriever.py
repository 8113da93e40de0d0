"""``MemoRAGRetriever`` and ``MemoRAGQueryTransform`` against ``ScriptedEngine``."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, ClassVar

import llama_index.core.settings as li_settings
import pytest
from fakes import ScriptedEngine
from llama_index.core import Document as LIDocument
from llama_index.core import VectorStoreIndex
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.indices.query.query_transform import HyDEQueryTransform
from llama_index.core.indices.query.query_transform.base import BaseQueryTransform
from llama_index.core.llms.mock import MockLLM
from llama_index.core.retrievers import TransformRetriever
from llama_index.core.schema import (
    MetadataMode,
    NodeRelationship,
    NodeWithScore,
    QueryBundle,
    RelatedNodeInfo,
    TextNode,
)

import shared_core
from llamaindex_memorag import MemoRAGQueryTransform, MemoRAGRetriever
from shared_core.retrieval.external import PER_QUERY_KEYS
from shared_core.types import Document

CORPUS = [
    "Charles Babbage designed the Analytical Engine in London.",
    "The Analytical Engine was a proposed mechanical general-purpose computer.",
    "Paris is the capital of France and sits on the Seine.",
    "Ada Lovelace published the first algorithm intended for such a machine.",
    "Mount Everest is the highest mountain above sea level.",
]
#: No word of this query occurs in CORPUS; the scripted clues point at doc-3.
RIDDLE = "Which countess pioneered programming?"
CLUES = {RIDDLE: ["Ada Lovelace", "published first algorithm"]}


@pytest.fixture(autouse=True)
def _no_global_llamaindex_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail loudly if anything reaches for ``Settings.llm`` / ``Settings.embed_model`` (OpenAI)."""

    def refuse(*_: Any, **__: Any) -> None:
        raise AssertionError("LlamaIndex fell back to its global default model")

    monkeypatch.setattr(li_settings.Settings, "_llm", None)
    monkeypatch.setattr(li_settings.Settings, "_embed_model", None)
    monkeypatch.setattr(li_settings, "resolve_llm", refuse)
    monkeypatch.setattr(li_settings, "resolve_embed_model", refuse)


class SpyEngine(ScriptedEngine):
    """Records the keyword arguments of every retrieve / aretrieve call."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.retrieve_calls: list[tuple[str, str, int, dict[str, Any]]] = []

    def retrieve(self, query: str, k: int, **kwargs: Any):  # type: ignore[override]
        self.retrieve_calls.append(("sync", query, k, kwargs))
        return super().retrieve(query, k, **kwargs)

    async def aretrieve(self, query: str, k: int, **kwargs: Any):  # type: ignore[override]
        self.retrieve_calls.append(("async", query, k, kwargs))
        return await super().aretrieve(query, k, **kwargs)


class OverlapRetriever(BaseRetriever):
    """A deterministic LlamaIndex retriever over the caller's own node objects."""

    def __init__(self, nodes: Sequence[TextNode], top_k: int) -> None:
        self.nodes = list(nodes)
        self.top_k = top_k
        self.async_calls = 0
        super().__init__()

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        words = {w.lower().strip("?.,") for w in query_bundle.query_str.split() if len(w) > 2}
        scored = []
        for i, node in enumerate(self.nodes):
            text_words = {w.lower().strip("?.,") for w in node.get_content().split()}
            scored.append((len(words & text_words), -i, node))
        scored.sort(key=lambda t: (t[0], t[1]), reverse=True)
        return [NodeWithScore(node=n, score=float(s)) for s, _, n in scored[: self.top_k]]

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        self.async_calls += 1
        return self._retrieve(query_bundle)


def caller_nodes() -> list[TextNode]:
    nodes = []
    for i, text in enumerate(CORPUS):
        node = TextNode(
            id_=f"node-{i}",
            text=text,
            metadata={"title": f"Article {i}", "year": 1840 + i},
            excluded_llm_metadata_keys=["year"],
        )
        node.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id=f"wiki-{i}")
        if i:
            node.relationships[NodeRelationship.PREVIOUS] = RelatedNodeInfo(node_id=f"node-{i - 1}")
        nodes.append(node)
    return nodes


def ids(nodes: Sequence[NodeWithScore]) -> list[str]:
    return [n.node.node_id for n in nodes]


def scores(nodes: Sequence[NodeWithScore]) -> list[float | None]:
    return [n.score for n in nodes]


# -- class contract ---------------------------------------------------------------------------


def test_retriever_is_a_llamaindex_base_retriever() -> None:
    assert BaseRetriever in MemoRAGRetriever.__mro__
    assert BaseQueryTransform in MemoRAGQueryTransform.__mro__


@pytest.mark.parametrize("k", [1, 2, 3, 5, 7, 50])
def test_returns_exactly_similarity_top_k_or_the_whole_corpus(k: int) -> None:
    retriever = MemoRAGRetriever(ScriptedEngine(CORPUS, CLUES), similarity_top_k=k)
    nodes = retriever.retrieve(RIDDLE)
    assert len(nodes) == min(k, len(CORPUS))
    assert len(set(ids(nodes))) == len(nodes)
    assert all(isinstance(n.score, float) for n in nodes)
    assert scores(nodes) == sorted(scores(nodes), reverse=True)


async def test_sync_and_async_agree() -> None:
    engine = SpyEngine(CORPUS, CLUES)
    retriever = MemoRAGRetriever(engine, similarity_top_k=3)
    sync_nodes = retriever.retrieve(RIDDLE)
    async_nodes = await retriever.aretrieve(RIDDLE)
    assert ids(sync_nodes) == ids(async_nodes)
    assert scores(sync_nodes) == scores(async_nodes)
    assert [mode for mode, *_ in engine.retrieve_calls] == ["sync", "async"]


async def test_sync_and_async_agree_over_a_base_retriever() -> None:
    base = OverlapRetriever(caller_nodes(), top_k=5)
    retriever = MemoRAGRetriever(
        ScriptedEngine(["unused"], CLUES), base_retriever=base, similarity_top_k=3
    )
    sync_nodes = retriever.retrieve(RIDDLE)
    async_nodes = await retriever.aretrieve(RIDDLE)
    assert ids(sync_nodes) == ids(async_nodes)
    assert scores(sync_nodes) == scores(async_nodes)
    assert base.async_calls == 3  # the query and two clues, each through base.aretrieve


def test_a_clue_finds_what_the_raw_query_misses() -> None:
    without = MemoRAGRetriever(
        ScriptedEngine(CORPUS), query_metadata=True, similarity_top_k=3
    ).retrieve(RIDDLE)
    assert "doc-3#0" not in ids(without)

    nodes = MemoRAGRetriever(
        ScriptedEngine(CORPUS, CLUES), query_metadata=True, similarity_top_k=3
    ).retrieve(RIDDLE)
    found = {n.node.node_id: n.node for n in nodes}
    assert "doc-3#0" in found
    meta = found["doc-3#0"].metadata
    assert meta["memorag_clues"][-2:] == CLUES[RIDDLE]
    assert meta["memorag_clue_kinds"][-2:] == ["span", "span"]
    assert meta["source_id"] == "doc-3#0"


def test_engine_passages_become_text_nodes_with_source_and_offsets() -> None:
    nodes = MemoRAGRetriever(ScriptedEngine(CORPUS, CLUES), similarity_top_k=5).retrieve(RIDDLE)
    for nws in nodes:
        node = nws.node
        assert isinstance(node, TextNode)
        i = int(node.node_id.split("-")[1].split("#")[0])
        assert node.get_content() == CORPUS[i]
        assert node.ref_doc_id == f"doc-{i}"
        assert (node.start_char_idx, node.end_char_idx) == (0, len(CORPUS[i]))
        for mode in (MetadataMode.LLM, MetadataMode.EMBED):
            shown = node.get_content(metadata_mode=mode)
            assert "memorag" not in shown and "source_id" not in shown and "doc_id" not in shown


def test_base_retriever_nodes_keep_ids_metadata_relationships_and_stay_untouched() -> None:
    nodes = caller_nodes()
    before = [n.model_dump() for n in nodes]
    retriever = MemoRAGRetriever(
        ScriptedEngine(["unused"], CLUES),
        query_metadata=True,
        base_retriever=OverlapRetriever(nodes, top_k=5),
        similarity_top_k=4,
    )
    results = retriever.retrieve(RIDDLE)
    assert len(results) == 4
    assert [n.model_dump() for n in nodes] == before  # the caller's nodes are not mutated
    by_id = {n.node_id: n for n in nodes}
    for nws in results:
        out, original = nws.node, by_id[nws.node.node_id]
        assert out is not original
        assert out.get_content() == original.get_content()
        assert out.relationships == original.relationships
        assert out.ref_doc_id == original.ref_doc_id
        assert {k: out.metadata[k] for k in original.metadata} == original.metadata
        assert "source_id" not in out.metadata  # the store node keeps its own metadata (its hash)
        assert set(PER_QUERY_KEYS) <= set(out.metadata)
        assert "year" in out.excluded_llm_metadata_keys  # the caller's exclusions survive
        llm_text = out.get_content(metadata_mode=MetadataMode.LLM)
        assert "title: " in llm_text and "memorag" not in llm_text and "source_id" not in llm_text
    assert "node-3" in ids(results)  # found by the clues through the caller's retriever


def test_vector_index_retriever_as_backend() -> None:
    index = VectorStoreIndex(caller_nodes(), embed_model=MockEmbedding(embed_dim=8))
    retriever = MemoRAGRetriever(
        ScriptedEngine(["unused"], CLUES),
        base_retriever=index.as_retriever(similarity_top_k=5),
        similarity_top_k=3,
    )
    results = retriever.retrieve(RIDDLE)
    assert len(results) == 3
    assert set(ids(results)) <= {f"node-{i}" for i in range(5)}
    assert all(n.node.metadata["title"].startswith("Article") for n in results)


def test_search_top_k_caps_base_retriever_hits() -> None:
    retriever = MemoRAGRetriever(
        ScriptedEngine(["unused"]),
        base_retriever=OverlapRetriever(caller_nodes(), top_k=5),
        similarity_top_k=5,
        search_top_k=2,
    )
    assert len(retriever.retrieve("Analytical Engine")) == 2


def test_warns_when_the_base_retriever_returns_fewer_than_top_k(
    caplog: pytest.LogCaptureFixture,
) -> None:
    index = VectorStoreIndex(caller_nodes(), embed_model=MockEmbedding(embed_dim=8))
    with caplog.at_level("WARNING"):
        MemoRAGRetriever(
            ScriptedEngine(["unused"]),
            base_retriever=index.as_retriever(similarity_top_k=2),
            similarity_top_k=4,
        )
    assert "fewer than similarity_top_k" in caplog.text


# -- custom_embedding_strs and query transforms ------------------------------------------------


def test_custom_embedding_strs_reach_the_engine_as_extra_queries() -> None:
    engine = SpyEngine(CORPUS)
    retriever = MemoRAGRetriever(engine, query_metadata=True, similarity_top_k=3)
    bundle = QueryBundle(
        RIDDLE, custom_embedding_strs=[RIDDLE, "Lovelace published", "Ada algorithm", RIDDLE]
    )
    nodes = retriever.retrieve(bundle)
    (_, query, k, kwargs) = engine.retrieve_calls[-1]
    assert (query, k) == (RIDDLE, 3)
    assert list(kwargs["extra_queries"]) == ["Lovelace published", "Ada algorithm"]
    assert kwargs["search"] is None
    doc3 = next(n.node for n in nodes if n.node.node_id == "doc-3#0")
    assert doc3.metadata["memorag_clue_kinds"] == ["custom", "custom"]


def test_hyde_transform_retriever_composes() -> None:
    engine = SpyEngine(CORPUS, CLUES)
    retriever = TransformRetriever(
        MemoRAGRetriever(engine, similarity_top_k=3), HyDEQueryTransform(llm=MockLLM())
    )
    nodes = retriever.retrieve(RIDDLE)
    assert len(nodes) == 3
    (_, query, _, kwargs) = engine.retrieve_calls[-1]
    assert query == RIDDLE
    (hyde_doc,) = kwargs["extra_queries"]
    assert RIDDLE in hyde_doc and hyde_doc != RIDDLE  # MockLLM echoes the HyDE prompt


def test_query_transform_adds_clues_and_keeps_custom_strings() -> None:
    transform = MemoRAGQueryTransform(ScriptedEngine(CORPUS, CLUES))
    assert transform.run(RIDDLE).custom_embedding_strs == [RIDDLE, *CLUES[RIDDLE]]
    bundle = QueryBundle(RIDDLE, custom_embedding_strs=["a hypothetical answer", "Ada Lovelace"])
    out = transform.run(bundle)
    assert out.query_str == RIDDLE
    assert out.custom_embedding_strs == [
        RIDDLE,
        "a hypothetical answer",
        "Ada Lovelace",
        "published first algorithm",
    ]
    assert bundle.custom_embedding_strs == ["a hypothetical answer", "Ada Lovelace"]
    assert transform.get_prompts() == {}


def test_query_transform_drives_any_vector_retriever() -> None:
    index = VectorStoreIndex(caller_nodes(), embed_model=MockEmbedding(embed_dim=8))
    retriever = TransformRetriever(
        index.as_retriever(similarity_top_k=2),
        MemoRAGQueryTransform(ScriptedEngine(CORPUS, CLUES)),
    )
    assert len(retriever.retrieve(RIDDLE)) == 2


# -- constructors, persistence, errors ----------------------------------------------------------


class StubMemoRAG(ScriptedEngine):
    """Stands in for ``shared_core.MemoRAG``: records construction, memorize and from_dir."""

    instances: ClassVar[list[StubMemoRAG]] = []
    loaded: ClassVar[list[tuple[str, dict[str, Any]]]] = []

    def __init__(self, **kwargs: Any) -> None:
        super().__init__([], CLUES)
        self.kwargs = kwargs
        self.memorized: list[Document] = []
        StubMemoRAG.instances.append(self)

    def memorize(self, context: Sequence[Document], **_: Any) -> StubMemoRAG:
        self.memorized = list(context)
        super().memorize(self.memorized)
        return self

    @classmethod
    def from_dir(cls, save_dir: str, **kwargs: Any) -> ScriptedEngine:
        cls.loaded.append((save_dir, kwargs))
        return ScriptedEngine(CORPUS, CLUES)


@pytest.fixture
def stub_memorag(monkeypatch: pytest.MonkeyPatch) -> type[StubMemoRAG]:
    StubMemoRAG.instances = []
    StubMemoRAG.loaded = []
    monkeypatch.setattr(shared_core, "MemoRAG", StubMemoRAG, raising=False)
    return StubMemoRAG


def test_from_defaults_nodes_memorizes_them(stub_memorag: type[StubMemoRAG]) -> None:
    nodes = caller_nodes()
    retriever = MemoRAGRetriever.from_defaults(nodes=nodes, similarity_top_k=3, beacon_ratio=8)
    (engine,) = stub_memorag.instances
    assert engine.kwargs == {"beacon_ratio": 8}
    assert [d.doc_id for d in engine.memorized] == [n.node_id for n in nodes]
    assert [d.text for d in engine.memorized] == CORPUS
    assert engine.memorized[0].metadata == {"title": "Article 0", "year": 1840}
    results = retriever.retrieve(RIDDLE)
    assert len(results) == 3
    doc3 = next(n.node for n in results if n.node.node_id == "node-3#0")
    assert doc3.ref_doc_id == "node-3" and doc3.metadata["title"] == "Article 3"


def test_from_defaults_documents_and_given_engine(stub_memorag: type[StubMemoRAG]) -> None:
    docs = [LIDocument(text=t, id_=f"d{i}") for i, t in enumerate(CORPUS)]
    engine = StubMemoRAG()
    retriever = MemoRAGRetriever.from_defaults(documents=docs, engine=engine)
    assert retriever.engine is engine and stub_memorag.instances == [engine]
    assert [d.doc_id for d in engine.memorized] == [f"d{i}" for i in range(5)]


def test_from_defaults_index_searches_the_index(stub_memorag: type[StubMemoRAG]) -> None:
    index = VectorStoreIndex(caller_nodes(), embed_model=MockEmbedding(embed_dim=8))
    retriever = MemoRAGRetriever.from_defaults(index=index, similarity_top_k=3)
    (engine,) = stub_memorag.instances
    assert sorted(d.doc_id for d in engine.memorized) == [f"node-{i}" for i in range(5)]
    assert retriever.base_retriever is not None
    assert retriever.base_retriever.similarity_top_k == 3  # type: ignore[attr-defined]
    results = retriever.retrieve(RIDDLE)
    assert len(results) == 3 and all(i.startswith("node-") and "#" not in i for i in ids(results))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one of"),
        ({"nodes": [TextNode(text="a")], "documents": [LIDocument(text="b")]}, "exactly one of"),
        ({"nodes": []}, "empty"),
        ({"documents": []}, "empty"),
        ({"nodes": [TextNode(text="a")], "similarity_top_k": 0}, "similarity_top_k"),
        ({"nodes": [TextNode(text="a")], "similarity_top_k": -2}, "similarity_top_k"),
        (
            {"nodes": [TextNode(text="a")], "engine": ScriptedEngine(["x"]), "beacon_ratio": 2},
            "both",
        ),
        ({"engine": ScriptedEngine(["x"])}, "MemoRAGRetriever(engine)"),
    ],
)
def test_from_defaults_explicit_errors(
    stub_memorag: type[StubMemoRAG], kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        MemoRAGRetriever.from_defaults(**kwargs)
    assert stub_memorag.instances == []


def test_from_defaults_refuses_non_nodes(stub_memorag: type[StubMemoRAG]) -> None:
    with pytest.raises(TypeError, match="nodes must hold"):
        MemoRAGRetriever.from_defaults(nodes=["plain text"])  # type: ignore[list-item]


def test_constructor_errors() -> None:
    engine = ScriptedEngine(CORPUS)
    with pytest.raises(ValueError, match="similarity_top_k"):
        MemoRAGRetriever(engine, similarity_top_k=0)
    with pytest.raises(ValueError, match="similarity_top_k"):
        MemoRAGRetriever(engine, similarity_top_k=True)
    with pytest.raises(ValueError, match="search_top_k"):
        MemoRAGRetriever(engine, search_top_k=0)
    with pytest.raises(TypeError, match="BaseRetriever"):
        MemoRAGRetriever(engine, base_retriever=object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="engine"):
        MemoRAGRetriever(None)  # type: ignore[arg-type]


def test_empty_query_is_refused_by_the_engine() -> None:
    with pytest.raises(ValueError, match="query is empty"):
        MemoRAGRetriever(ScriptedEngine(CORPUS)).retrieve("   ")


def test_persist_and_from_persist_dir_delegate(
    stub_memorag: type[StubMemoRAG], tmp_path: Any
) -> None:
    engine = ScriptedEngine(CORPUS, CLUES)
    MemoRAGRetriever(engine).persist(str(tmp_path))
    assert engine.saved_to == [str(tmp_path)]

    loaded = MemoRAGRetriever.from_persist_dir(str(tmp_path), similarity_top_k=4, device="cpu")
    assert stub_memorag.loaded == [(str(tmp_path), {"device": "cpu"})]
    assert loaded.similarity_top_k == 4
    assert len(loaded.retrieve(RIDDLE)) == 4


def test_prompts_are_empty_and_updatable() -> None:
    retriever = MemoRAGRetriever(ScriptedEngine(CORPUS))
    assert retriever.get_prompts() == {}
    retriever.update_prompts({})


def test_node_snapshot_is_independent_of_later_edits() -> None:
    nodes = caller_nodes()
    retriever = MemoRAGRetriever(
        ScriptedEngine(["unused"]), base_retriever=OverlapRetriever(nodes, 5), similarity_top_k=2
    )
    out = retriever.retrieve("Analytical Engine")[0].node
    snapshot = copy.deepcopy(nodes[0].metadata)
    out.metadata["title"] = "edited"
    out.excluded_llm_metadata_keys.append("title")
    assert nodes[0].metadata == snapshot
    assert nodes[0].excluded_llm_metadata_keys == ["year"]


def test_an_existing_source_id_is_kept() -> None:
    nodes = [TextNode(id_="n0", text="Analytical Engine notes", metadata={"source_id": "mine"})]
    retriever = MemoRAGRetriever(
        ScriptedEngine(["unused"]), base_retriever=OverlapRetriever(nodes, 1), similarity_top_k=1
    )
    (result,) = retriever.retrieve("Analytical Engine")
    assert result.node.metadata["source_id"] == "mine"
