"""Behaviour of the LangChain adapter beyond the standard suites (all on ``ScriptedEngine``)."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar
from uuid import UUID

import pytest
from fakes import ScriptedEngine
from langchain_core.callbacks import (
    AsyncCallbackManagerForRetrieverRun,
    BaseCallbackHandler,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnablePassthrough
from pydantic import Field

from langchain_memorag import ChatMemoRAG, MemoRAGRetriever, MemoryLLM, create_memorag_tool
from shared_core.errors import InputError, NoMemoryError
from shared_core.models.streaming import TextStream
from shared_core.types import ChatTurn, Generation

ROOT = Path(__file__).resolve().parents[1]

TEXTS = [
    "Polonium is a radioactive element named after Poland.",
    "The city saw a record birth rate in the census year.",
    "Pierre studied crystals and magnetism in Paris.",
    "Radium glows faintly in the dark.",
    "The Sorbonne awarded its first doctorate in physics to a woman in 1903.",
    "Marie Curie was born in Warsaw in 1867.",
]
EVIDENCE_ID = "doc-5#0"
QUERY = "Which city saw the birth of the polonium discoverer?"
CLUES = ["Marie Curie, born 1867", "Curie grew up in Warsaw"]
REPLY = "She was born in Warsaw, Poland."


def make_engine(reply: str = REPLY) -> ScriptedEngine:
    return ScriptedEngine(TEXTS, {QUERY: CLUES}, reply=reply)


class RecordingEngine(ScriptedEngine):
    """Also records the generation options the adapter passed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.options: list[dict[str, Any]] = []

    def chat(self, messages: Sequence[ChatTurn], **kwargs: Any) -> Generation:
        self.options.append(kwargs)
        return super().chat(messages, **kwargs)

    def stream_chat(self, messages: Sequence[ChatTurn], **kwargs: Any) -> Iterator[str]:
        self.options.append(kwargs)
        return super().stream_chat(messages, **kwargs)


class TaggedRetriever(BaseRetriever):
    """A custom base retriever: fixed ranked documents with metadata; records calls."""

    docs: list[Document]
    seen_k: list[int | None] = Field(default_factory=list)

    def _get_relevant_documents(
        self,
        query: str,
        *,
        run_manager: CallbackManagerForRetrieverRun,
        k: int | None = None,
    ) -> list[Document]:
        self.seen_k.append(k)
        words = set(re.findall(r"\w+", query.lower()))
        ranked = sorted(
            self.docs,
            key=lambda d: -len(words & set(re.findall(r"\w+", d.page_content.lower()))),
        )
        return ranked[: k or 4]

    async def _aget_relevant_documents(
        self,
        query: str,
        *,
        run_manager: AsyncCallbackManagerForRetrieverRun,
        k: int | None = None,
    ) -> list[Document]:
        return self._get_relevant_documents(query, run_manager=run_manager.get_sync(), k=k)


def tagged_docs() -> list[Document]:
    docs = [
        Document(page_content=t, metadata={"source": "wiki", "row": i, "tags": ["x"]})
        for i, t in enumerate(TEXTS)
    ]
    docs[0].id = "polonium-page"
    return docs


class RunRecorder(BaseCallbackHandler):
    def __init__(self) -> None:
        self.starts: list[tuple[str, UUID, UUID | None]] = []

    def on_retriever_start(
        self,
        serialized: dict[str, Any] | None,
        query: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        self.starts.append((query, run_id, parent_run_id))


# -- retriever ---------------------------------------------------------------------------------


def test_clue_finds_evidence_the_raw_query_misses() -> None:
    engine = make_engine()
    assert EVIDENCE_ID not in [h.passage.id for h in engine.index.search(QUERY, 3)]
    docs = MemoRAGRetriever(query_metadata=True, engine=engine, k=3).invoke(QUERY)
    by_id = {d.id: d for d in docs}
    assert EVIDENCE_ID in by_id
    evidence = by_id[EVIDENCE_ID]
    assert evidence.page_content == TEXTS[5]
    assert evidence.metadata["memorag_clues"] == CLUES
    assert evidence.metadata["memorag_clue_kinds"] == ["span", "span"]
    assert QUERY not in evidence.metadata["memorag_clues"]
    assert evidence.metadata["source_id"] == EVIDENCE_ID
    assert evidence.metadata["doc_id"] == "doc-5"
    assert isinstance(evidence.metadata["relevance_score"], float)


async def test_async_clue_path_matches_sync() -> None:
    retriever = MemoRAGRetriever(engine=make_engine(), k=3)
    sync_docs = retriever.invoke(QUERY)
    async_docs = await retriever.ainvoke(QUERY)
    assert [d.id for d in async_docs] == [d.id for d in sync_docs]


@pytest.mark.parametrize("k", [1, 2, 3, 6])
def test_exactly_k(k: int) -> None:
    retriever = MemoRAGRetriever(engine=make_engine(), k=2)
    assert len(retriever.invoke(QUERY, k=k)) == k
    assert len(MemoRAGRetriever(engine=make_engine(), k=k).invoke(QUERY)) == k


def test_k_over_corpus_returns_everything_once() -> None:
    docs = MemoRAGRetriever(engine=make_engine(), k=50).invoke(QUERY)
    assert sorted(d.id for d in docs) == sorted(f"doc-{i}#0" for i in range(len(TEXTS)))


async def test_history_reaches_the_engine() -> None:
    engine = make_engine()
    retriever = MemoRAGRetriever(engine=engine, k=2)
    history = [HumanMessage("Who discovered polonium?"), AIMessage("Marie Curie.")]
    expected = (ChatTurn("user", "Who discovered polonium?"), ChatTurn("assistant", "Marie Curie."))
    retriever.invoke("Where was she born?", history=history)
    assert engine.calls[-1] == ("Where was she born?", expected)
    await retriever.ainvoke("Where was she born?", history=history)
    assert engine.calls[-1] == ("Where was she born?", expected)
    retriever.invoke("Where was she born?")
    assert engine.calls[-1] == ("Where was she born?", ())


def test_bad_k_is_refused_by_the_engine() -> None:
    with pytest.raises(InputError):
        MemoRAGRetriever(engine=make_engine()).invoke(QUERY, k=0)
    with pytest.raises(ValueError):
        MemoRAGRetriever(engine=make_engine(), k=0)


def test_relevance_scores_are_descending() -> None:
    docs = MemoRAGRetriever(query_metadata=True, engine=make_engine(), k=6).invoke(QUERY)
    scores = [d.metadata["relevance_score"] for d in docs]
    assert scores == sorted(scores, reverse=True)


class NoAsyncEngine(ScriptedEngine):
    def retrieve(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("ainvoke must await engine.aretrieve, not call retrieve")


async def test_ainvoke_awaits_aretrieve() -> None:
    engine = NoAsyncEngine(TEXTS, {QUERY: CLUES})
    docs = await MemoRAGRetriever(engine=engine, k=3).ainvoke(QUERY)
    assert EVIDENCE_ID in [d.id for d in docs]


@pytest.mark.parametrize("use_async", [False, True])
async def test_base_retriever_metadata_kept_and_inputs_untouched(use_async: bool) -> None:
    docs = tagged_docs()
    before = copy.deepcopy(docs)
    base = TaggedRetriever(docs=docs)
    retriever = MemoRAGRetriever(
        query_metadata=True, engine=make_engine(), base_retriever=base, k=4
    )
    result = await retriever.ainvoke(QUERY) if use_async else retriever.invoke(QUERY)
    assert len(result) == 4
    for doc in result:
        assert doc.metadata["source"] == "wiki"
        assert doc.metadata["tags"] == ["x"]
        assert isinstance(doc.metadata["relevance_score"], float)
        assert doc.metadata["memorag_clues"]
        assert doc.id and "source_id" not in doc.metadata  # a store document keeps its own metadata
        assert all(doc is not d for d in docs)
    ids = {d.id for d in result}
    assert "polonium-page" in ids  # the caller's id is kept
    assert all(i == "polonium-page" or i.startswith("lc-") for i in ids)
    # Same text -> same content-hash id on every call.
    assert {d.id for d in retriever.invoke(QUERY)} == ids
    assert docs == before
    assert all("relevance_score" not in d.metadata for d in docs)


def test_base_retriever_clue_finds_evidence() -> None:
    base = TaggedRetriever(docs=tagged_docs())
    result = MemoRAGRetriever(
        query_metadata=True, engine=make_engine(), base_retriever=base, k=4
    ).invoke(QUERY)
    warsaw = [d for d in result if "Warsaw" in d.page_content]
    assert warsaw and set(CLUES) <= set(warsaw[0].metadata["memorag_clues"])


def test_per_clue_depth_passed_to_base_retriever() -> None:
    base = TaggedRetriever(docs=tagged_docs())
    MemoRAGRetriever(engine=make_engine(), base_retriever=base, k=2).invoke(QUERY)
    assert base.seen_k and set(base.seen_k) == {3}  # the engine's default, max(k, ret_hit=3)
    base.seen_k.clear()
    MemoRAGRetriever(engine=make_engine(), base_retriever=base, k=2, search_k=5).invoke(QUERY)
    assert set(base.seen_k) == {5}
    assert len(base.seen_k) == 1 + len(CLUES)  # the query plus one search per clue


class NoKRetriever(BaseRetriever):
    docs: list[Document]

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        return self.docs


def test_base_retriever_without_k_still_works() -> None:
    base = NoKRetriever(docs=tagged_docs()[:3])
    assert len(MemoRAGRetriever(engine=make_engine(), base_retriever=base, k=2).invoke(QUERY)) == 2


@pytest.mark.parametrize("use_async", [False, True])
async def test_base_retriever_runs_are_children(use_async: bool) -> None:
    recorder = RunRecorder()
    base = TaggedRetriever(docs=tagged_docs())
    retriever = MemoRAGRetriever(engine=make_engine(), base_retriever=base, k=2)
    config = {"callbacks": [recorder]}
    if use_async:
        await retriever.ainvoke(QUERY, config=config)
    else:
        retriever.invoke(QUERY, config=config)
    roots = [s for s in recorder.starts if s[2] is None]
    assert len(roots) == 1 and roots[0][0] == QUERY
    children = [s for s in recorder.starts if s[2] == roots[0][1]]
    assert sorted(q for q, _, _ in children) == sorted([QUERY, *CLUES])


def test_missing_engine_is_a_clear_error() -> None:
    with pytest.raises(NoMemoryError, match=r"MemoRAG\(\).*memorize"):
        MemoRAGRetriever().invoke(QUERY)
    with pytest.raises(NoMemoryError, match=r"MemoryLLM\(engine="):
        MemoryLLM().invoke("hi")


def test_engine_is_not_serialised() -> None:
    retriever = MemoRAGRetriever(engine=make_engine(), k=2)
    assert "engine" not in retriever.model_dump()
    assert "engine" not in MemoryLLM(engine=make_engine()).model_dump()


class FakeMemoRAG(ScriptedEngine):
    """Stands in for ``shared_core.MemoRAG`` in the constructor tests."""

    instances: ClassVar[list[FakeMemoRAG]] = []

    def __init__(self, **kwargs: Any) -> None:
        super().__init__([], {QUERY: CLUES})
        self.kwargs = kwargs
        FakeMemoRAG.instances.append(self)

    def memorize(self, context: Any, save_dir: str | None = None, print_stats: bool = False):
        self.memorized = list(context)
        return super().memorize(self.memorized)

    @classmethod
    def from_dir(cls, save_dir: str, **kwargs: Any) -> FakeMemoRAG:
        engine = cls(**kwargs)
        engine.loaded_from = save_dir
        return engine


@pytest.fixture
def fake_memorag(monkeypatch: pytest.MonkeyPatch) -> type[FakeMemoRAG]:
    import shared_core

    FakeMemoRAG.instances = []
    monkeypatch.setattr(shared_core, "MemoRAG", FakeMemoRAG, raising=False)
    return FakeMemoRAG


def test_from_texts_builds_and_memorizes(fake_memorag: type[FakeMemoRAG]) -> None:
    metadatas = [{"n": i} for i in range(len(TEXTS))]
    retriever = MemoRAGRetriever.from_texts(TEXTS, metadatas, k=3, beacon_ratio=8)
    engine = fake_memorag.instances[-1]
    assert engine.kwargs == {"beacon_ratio": 8}
    assert [d.text for d in engine.memorized] == TEXTS
    assert [dict(d.metadata) for d in engine.memorized] == metadatas
    assert retriever.k == 3 and retriever.engine is engine
    assert EVIDENCE_ID in [d.id for d in retriever.invoke(QUERY)]
    with pytest.raises(ValueError, match="metadatas"):
        MemoRAGRetriever.from_texts(TEXTS, metadatas[:2])


def test_from_documents_keeps_ids_and_metadata(fake_memorag: type[FakeMemoRAG]) -> None:
    MemoRAGRetriever.from_documents(tagged_docs(), k=2)
    memorized = fake_memorag.instances[-1].memorized
    assert memorized[0].doc_id == "polonium-page" and memorized[1].doc_id is None
    assert memorized[2].metadata["source"] == "wiki"


def test_save_and_load(fake_memorag: type[FakeMemoRAG], tmp_path: Path) -> None:
    retriever = MemoRAGRetriever(engine=make_engine())
    retriever.save(str(tmp_path))
    assert retriever.engine.saved_to == [str(tmp_path)]
    loaded = MemoRAGRetriever.load(str(tmp_path), k=5, device="cpu")
    assert loaded.k == 5 and loaded.engine.loaded_from == str(tmp_path)
    assert loaded.engine.kwargs == {"device": "cpu"}


# -- chain, tool -----------------------------------------------------------------------------


def format_docs(docs: list[Document]) -> str:
    return "\n\n".join(d.page_content for d in docs)


def make_chain(engine: ScriptedEngine) -> Any:
    retriever = MemoRAGRetriever(engine=engine, k=3)
    prompt = ChatPromptTemplate.from_messages(
        [("system", "Answer from the context.\n\n{context}"), ("human", "{question}")]
    )
    return (
        {"context": retriever | format_docs, "question": RunnablePassthrough()}
        | prompt
        | MemoryLLM(engine=engine)
        | StrOutputParser()
    )


async def test_lcel_chain_invoke_ainvoke_stream() -> None:
    engine = make_engine()
    chain = make_chain(engine)
    assert chain.invoke(QUERY) == REPLY
    assert await chain.ainvoke(QUERY) == REPLY
    pieces = list(chain.stream(QUERY))
    assert len(pieces) > 1 and "".join(pieces) == REPLY
    _, turns = engine.calls[-1]
    assert [t.role for t in turns] == ["system", "user"]
    assert TEXTS[5] in turns[0].content  # the clue-found evidence reached the prompt
    assert turns[1].content == QUERY


async def test_tool_returns_content_and_artifact() -> None:
    tool = create_memorag_tool(MemoRAGRetriever(engine=make_engine(), k=3))
    assert tool.name == "memorag_search"
    assert set(tool.args) == {"query"}
    call = {"name": tool.name, "args": {"query": QUERY}, "id": "call-1", "type": "tool_call"}
    for message in (tool.invoke(call), await tool.ainvoke(call)):
        assert isinstance(message, ToolMessage)
        assert f"[{EVIDENCE_ID}] {TEXTS[5]}" in message.content
        assert EVIDENCE_ID in [d.id for d in message.artifact]
        assert all(isinstance(d, Document) for d in message.artifact)
    plain = create_memorag_tool(MemoRAGRetriever(engine=make_engine()), response_format="content")
    assert isinstance(plain.invoke({"query": QUERY}), str)


def test_tool_on_other_retrievers_uses_plain_prompt() -> None:
    tool = create_memorag_tool(NoKRetriever(docs=tagged_docs()[:2]), name="plain")
    content = tool.invoke({"query": "x"})
    assert content == f"{TEXTS[0]}\n\n{TEXTS[1]}"


# -- chat model --------------------------------------------------------------------------------


def test_history_and_roles_reach_the_engine() -> None:
    engine = make_engine()
    llm = MemoryLLM(engine=engine)
    result = llm.invoke(
        [
            SystemMessage("Answer from memory."),
            HumanMessage("Who discovered polonium?", name="ann"),
            AIMessage("Marie Curie."),
            ToolMessage("Warsaw, 1867", tool_call_id="t1", name="memorag_search"),
            HumanMessage("Where was she born?"),
        ]
    )
    assert result.content == REPLY
    _, turns = engine.calls[-1]
    assert turns == (
        ChatTurn("system", "Answer from memory."),
        ChatTurn("user", "ann: Who discovered polonium?"),
        ChatTurn("assistant", "Marie Curie."),
        ChatTurn("user", "Tool memorag_search returned: Warsaw, 1867"),
        ChatTurn("user", "Where was she born?"),
    )


def test_ai_tool_calls_are_rendered_as_text() -> None:
    engine = make_engine()
    MemoryLLM(engine=engine).invoke(
        [
            HumanMessage("q"),
            AIMessage(
                "", tool_calls=[{"name": "memorag_search", "args": {"query": "q"}, "id": "1"}]
            ),
            ToolMessage("found", tool_call_id="1"),
            HumanMessage("so?"),
        ]
    )
    _, turns = engine.calls[-1]
    assert turns[1] == ChatTurn("assistant", "[called memorag_search({'query': 'q'})]")
    assert turns[2] == ChatTurn("user", "Tool 1 returned: found")


def test_stop_sequences_merge_field_and_call() -> None:
    engine = RecordingEngine(TEXTS, reply="The memory says hello.")
    llm = MemoryLLM(engine=engine, stop=["hello"])
    assert llm.invoke("hi", stop=["says"]).content == "The memory "
    assert engine.options[-1]["stop"] == ["hello", "says"]
    assert llm.invoke("hi").content == "The memory says "
    chunks = list(llm.stream("hi", stop=["memory"]))
    assert "".join(c.text for c in chunks).strip() == "The"
    assert engine.options[-1]["stop"] == ["hello", "memory"]


def test_generation_options_are_passed() -> None:
    engine = RecordingEngine(TEXTS)
    MemoryLLM(engine=engine).invoke("hi")
    assert engine.options[-1] == {"max_new_tokens": 256, "stop": [], "temperature": 0.0}
    MemoryLLM(engine=engine, max_tokens=2, temperature=0.7).invoke("hi")
    assert engine.options[-1] == {"max_new_tokens": 2, "stop": [], "temperature": 0.7}
    MemoryLLM(engine=engine).invoke("hi", max_tokens=3)
    assert engine.options[-1]["max_new_tokens"] == 3


def test_usage_and_model_name() -> None:
    llm = ChatMemoRAG(engine=make_engine(), model_name="memorag-smol")
    message = llm.invoke("Where was she born?")
    assert message.usage_metadata == {
        "input_tokens": 4,
        "output_tokens": len(REPLY.split()),
        "total_tokens": 4 + len(REPLY.split()),
    }
    assert message.response_metadata["model_name"] == "memorag-smol"
    chunks = list(llm.stream("Where was she born?"))
    assert sum(1 for c in chunks if c.usage_metadata) == 1
    assert sum(1 for c in chunks if c.response_metadata.get("model_name")) == 1
    assert chunks[-1].chunk_position == "last"


async def test_stream_reports_the_engine_token_counts() -> None:
    engine = make_engine()
    llm = MemoryLLM(engine=engine)
    full: AIMessageChunk | None = None
    for chunk in llm.stream("Where was she born?"):
        full = chunk if full is None else full + chunk
    assert full is not None and full.text == REPLY
    expected = engine.chat([ChatTurn("user", "Where was she born?")])
    assert full.usage_metadata == {
        "input_tokens": expected.prompt_tokens,
        "output_tokens": expected.completion_tokens,
        "total_tokens": expected.prompt_tokens + expected.completion_tokens,
    }
    # the streamed pieces are words, the counted tokens are the memory's: not one per piece
    stream = engine.stream_chat([ChatTurn("user", "Where was she born?")], max_new_tokens=3)
    assert len(list(stream)) == 3 and stream.generation is not None
    afull: AIMessageChunk | None = None
    async for chunk in llm.astream("Where was she born?"):
        afull = chunk if afull is None else afull + chunk
    assert afull is not None and afull.text == REPLY
    assert afull.usage_metadata == full.usage_metadata


class TextOnlyEngine(ScriptedEngine):
    """A back-end whose stream yields text and no ``Generation``: token counts unknown."""

    def stream_chat(self, messages: Sequence[ChatTurn], **kwargs: Any) -> TextStream:
        return TextStream(iter(["only ", "text"]))


def test_stream_reports_no_usage_when_the_engine_cannot_count() -> None:
    chunks = list(MemoryLLM(engine=TextOnlyEngine(TEXTS)).stream("hi"))
    assert "".join(c.text for c in chunks) == "only text"
    assert all(c.usage_metadata is None for c in chunks)


class TokenCounter(BaseCallbackHandler):
    def __init__(self) -> None:
        self.tokens: list[str] = []

    def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
        self.tokens.append(token)


def test_streaming_field_makes_invoke_stream() -> None:
    counter = TokenCounter()
    MemoryLLM(engine=make_engine()).invoke("hi", config={"callbacks": [counter]})
    assert counter.tokens == []
    message = MemoryLLM(engine=make_engine(), streaming=True).invoke(
        "hi", config={"callbacks": [counter]}
    )
    assert "".join(counter.tokens) == message.content == REPLY


def test_constructor_is_cheap_and_standard_params() -> None:
    llm = MemoryLLM(model="m", temperature=0, max_tokens=9, stop=["x"])
    assert llm.engine is None and llm.model == "m"
    for option in ({"timeout": 3}, {"api_key": "k"}, {"max_retries": 2}):
        with pytest.raises(ValueError, match=next(iter(option))):
            MemoryLLM(**option)
    params = llm._get_ls_params(model="override")
    assert params["ls_provider"] == "memorag" and params["ls_model_name"] == "override"
    assert params["ls_stop"] == ["x"] and params["ls_max_tokens"] == 9
    assert llm._llm_type == "memorag-chat"
    assert "bind_tools" in type(llm).__dict__  # tool calling by constrained decoding


# -- packaging hygiene -------------------------------------------------------------------------


def test_import_does_not_pull_llama_index() -> None:
    code = (
        "import sys, langchain_memorag; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('llama_index', 'langchain', "
        "'langchain_community', 'langchain_classic')]; "
        "print(bad); assert not bad, bad"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_library_imports_only_langchain_core() -> None:
    banned = re.compile(
        r"^\s*(from|import)\s+(langchain(\.|\s|$)|langchain_community|langchain_classic|llama_index)",
        re.M,
    )
    files = sorted((ROOT / "langchain_memorag").glob("**/*.py"))
    assert files
    offenders = [str(f) for f in files if banned.search(f.read_text(encoding="utf-8"))]
    assert not offenders


def test_public_api() -> None:
    import langchain_memorag
    import shared_core

    assert sorted(langchain_memorag.__all__) == sorted(
        [
            "ChatMemoRAG",
            "MemoRAGEmbeddings",
            "MemoRAGRetriever",
            "MemoryLLM",
            "__version__",
            "create_memorag_answer_tool",
            "create_memorag_tool",
        ]
    )
    assert langchain_memorag.__version__ == shared_core.__version__
    assert langchain_memorag.ChatMemoRAG is langchain_memorag.MemoryLLM
