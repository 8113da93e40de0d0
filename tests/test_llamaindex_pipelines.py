"""MemoRAG retriever + MemoryLLM inside LlamaIndex query engines, tools, agents and chat engines."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import llama_index.core.settings as li_settings
import pytest
from fakes import ScriptedEngine
from llama_index.core.agent.workflow import FunctionAgent, ToolCallResult
from llama_index.core.base.llms.types import ChatMessage, MessageRole, ToolCallBlock
from llama_index.core.chat_engine import CondensePlusContextChatEngine
from llama_index.core.llms.mock import MockFunctionCallingLLM
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.tools import QueryEngineTool

from llamaindex_memorag import (
    MemoRAGRetriever,
    MemoryLLM,
    memorag_query_engine,
    memorag_query_engine_tool,
)
from shared_core.types import ChatTurn

CORPUS = [
    "Charles Babbage designed the Analytical Engine in London.",
    "The Analytical Engine was a proposed mechanical general-purpose computer.",
    "Paris is the capital of France and sits on the Seine.",
    "Ada Lovelace published the first algorithm intended for such a machine.",
    "Mount Everest is the highest mountain above sea level.",
]
RIDDLE = "Which countess pioneered programming?"
CLUES = {RIDDLE: ["Ada Lovelace", "published first algorithm"]}
REPLY = "Ada Lovelace, who published the first algorithm."


@pytest.fixture(autouse=True)
def _no_global_llamaindex_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail loudly if anything reaches for ``Settings.llm`` / ``Settings.embed_model`` (OpenAI)."""

    def refuse(*_: Any, **__: Any) -> None:
        raise AssertionError("LlamaIndex fell back to its global default model")

    monkeypatch.setattr(li_settings.Settings, "_llm", None)
    monkeypatch.setattr(li_settings.Settings, "_embed_model", None)
    monkeypatch.setattr(li_settings, "resolve_llm", refuse)
    monkeypatch.setattr(li_settings, "resolve_embed_model", refuse)


@pytest.fixture
def engine() -> ScriptedEngine:
    return ScriptedEngine(CORPUS, CLUES, reply=REPLY)


def last_prompt(engine: ScriptedEngine) -> str:
    """Everything the engine was last asked to answer, as one string."""
    return "\n".join(turn.content for turn in engine.calls[-1][1])


def check_answer(engine: ScriptedEngine, response: Any) -> None:
    assert str(response) == REPLY
    assert len(response.source_nodes) == 3
    assert "doc-3#0" in [n.node.node_id for n in response.source_nodes]
    prompt = last_prompt(engine)
    assert RIDDLE in prompt and CORPUS[3] in prompt  # the clue-found passage is in the context
    assert "memorag_clues" not in prompt and "source_id" not in prompt and "doc_id" not in prompt


def test_retriever_query_engine(engine: ScriptedEngine) -> None:
    qe = RetrieverQueryEngine.from_args(
        MemoRAGRetriever(engine, similarity_top_k=3), llm=MemoryLLM(engine=engine)
    )
    check_answer(engine, qe.query(RIDDLE))


async def test_retriever_query_engine_async(engine: ScriptedEngine) -> None:
    qe = RetrieverQueryEngine.from_args(
        MemoRAGRetriever(engine, similarity_top_k=3), llm=MemoryLLM(engine=engine)
    )
    check_answer(engine, await qe.aquery(RIDDLE))


def test_retriever_query_engine_streaming(engine: ScriptedEngine) -> None:
    qe = memorag_query_engine(
        MemoRAGRetriever(engine, similarity_top_k=3), MemoryLLM(engine=engine), streaming=True
    )
    response = qe.query(RIDDLE)
    pieces = list(response.response_gen)
    assert len(pieces) > 1 and "".join(pieces) == REPLY
    assert len(response.source_nodes) == 3


async def test_retriever_query_engine_async_streaming(engine: ScriptedEngine) -> None:
    qe = memorag_query_engine(
        MemoRAGRetriever(engine, similarity_top_k=3), MemoryLLM(engine=engine), streaming=True
    )
    response = await qe.aquery(RIDDLE)
    pieces = [piece async for piece in response.async_response_gen()]
    assert "".join(pieces) == REPLY


def test_query_engine_helper_requires_an_llm(engine: ScriptedEngine) -> None:
    with pytest.raises(ValueError, match="llm="):
        memorag_query_engine(MemoRAGRetriever(engine), None)  # type: ignore[arg-type]


def test_query_engine_tool_call(engine: ScriptedEngine) -> None:
    qe = memorag_query_engine(
        MemoRAGRetriever(engine, similarity_top_k=3), MemoryLLM(engine=engine)
    )
    tool = memorag_query_engine_tool(qe)
    assert isinstance(tool, QueryEngineTool)
    assert tool.metadata.name == "memorag" and "memory" in tool.metadata.description
    output = tool.call(input=RIDDLE)
    assert output.content == REPLY
    assert RIDDLE in last_prompt(engine)


def scripted_tool_caller(question: str) -> Any:
    """A function-calling script: ask the ``memorag`` tool, then answer with what it said."""

    def respond(messages: Sequence[ChatMessage], **kwargs: Any) -> ChatMessage:
        results = [m for m in messages if m.role == MessageRole.TOOL]
        if results:
            return ChatMessage(role="assistant", content=f"Final: {results[-1].content}")
        assert [t.metadata.name for t in kwargs["tools"]] == ["memorag"]
        call = ToolCallBlock(
            tool_call_id="call-1", tool_name="memorag", tool_kwargs={"input": question}
        )
        return ChatMessage(role="assistant", blocks=[call])

    return respond


async def test_function_agent_calls_the_query_engine_tool(engine: ScriptedEngine) -> None:
    qe = memorag_query_engine(
        MemoRAGRetriever(engine, similarity_top_k=3), MemoryLLM(engine=engine)
    )
    agent = FunctionAgent(
        tools=[memorag_query_engine_tool(qe)],
        llm=MockFunctionCallingLLM(response_generator=scripted_tool_caller(RIDDLE)),
        system_prompt="Use the memorag tool for questions about the documents.",
    )
    handler = agent.run(user_msg=RIDDLE)
    calls = [ev async for ev in handler.stream_events() if isinstance(ev, ToolCallResult)]
    output = await handler
    assert [(c.tool_name, c.tool_kwargs) for c in calls] == [("memorag", {"input": RIDDLE})]
    assert calls[0].tool_output.content == REPLY
    assert str(output.response.content) == f"Final: {REPLY}"
    assert CORPUS[3] in last_prompt(engine)


def test_chat_engine_follow_up_keeps_the_history(engine: ScriptedEngine) -> None:
    chat = CondensePlusContextChatEngine.from_defaults(
        MemoRAGRetriever(engine, similarity_top_k=2), llm=MemoryLLM(engine=engine)
    )
    first = chat.chat("Who designed the Analytical Engine?")
    assert str(first) == REPLY
    second = chat.chat("Where did he live?")
    assert str(second) == REPLY
    turns = engine.calls[-1][1]
    assert turns[0].role == "system"  # the retrieved context
    assert ChatTurn("user", "Who designed the Analytical Engine?") in turns
    assert ChatTurn("assistant", REPLY) in turns
    assert turns[-1] == ChatTurn("user", "Where did he live?")


async def test_chat_engine_async_streaming_follow_up(engine: ScriptedEngine) -> None:
    chat = CondensePlusContextChatEngine.from_defaults(
        MemoRAGRetriever(engine, similarity_top_k=2), llm=MemoryLLM(engine=engine)
    )
    await chat.achat("Who designed the Analytical Engine?")
    response = await chat.astream_chat("Where did he live?")
    pieces = [piece async for piece in response.async_response_gen()]
    assert "".join(pieces) == REPLY
    turns = engine.calls[-1][1]
    assert ChatTurn("user", "Who designed the Analytical Engine?") in turns
    assert turns[-1] == ChatTurn("user", "Where did he live?")
