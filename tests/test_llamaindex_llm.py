"""``llamaindex_memorag.MemoryLLM`` against ``ScriptedEngine``."""

from __future__ import annotations

import itertools
from typing import Any

import llama_index.core.settings as li_settings
import pytest
from fakes import ScriptedEngine
from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.llms import LLM
from llama_index.core.llms.function_calling import FunctionCallingLLM

from llamaindex_memorag import MemoryLLM
from llamaindex_memorag.llms import to_chat_turns
from shared_core.types import ChatTurn

REPLY = "Ada Lovelace wrote the first published algorithm for the Analytical Engine."


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
    return ScriptedEngine(["Ada Lovelace wrote notes."], reply=REPLY)


def test_memory_llm_is_a_function_calling_llm() -> None:
    assert issubclass(MemoryLLM, FunctionCallingLLM) and issubclass(MemoryLLM, LLM)
    assert MemoryLLM.class_name() == "MemoryLLM"


def test_metadata_and_fields() -> None:
    llm = MemoryLLM(engine=ScriptedEngine([]), context_window=4096, num_output=64)
    meta = llm.metadata
    assert meta.is_chat_model is True
    assert meta.is_function_calling_model is True
    assert (meta.context_window, meta.num_output, meta.model_name) == (4096, 64, "memorag")
    assert llm.temperature == 0.0
    assert "engine" not in llm.to_dict() and "_engine" not in llm.to_dict()


def test_construction_is_cheap_and_a_missing_engine_fails_at_call_time() -> None:
    llm = MemoryLLM()
    with pytest.raises(RuntimeError, match=r"MemoryLLM\(engine="):
        llm.complete("hello")
    with pytest.raises(RuntimeError, match="no engine"):
        llm.chat([ChatMessage(role="user", content="hello")])


def test_complete_sends_one_user_turn(engine: ScriptedEngine) -> None:
    response = MemoryLLM(engine=engine).complete("Who wrote the algorithm?")
    assert response.text == REPLY
    assert engine.calls[-1][1] == (ChatTurn(role="user", content="Who wrote the algorithm?"),)
    usage = response.raw["usage"]
    assert usage["completion_tokens"] == len(REPLY.split())
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_generation_options_reach_the_engine(engine: ScriptedEngine) -> None:
    llm = MemoryLLM(engine=engine, num_output=3)
    assert llm.complete("q").text == "Ada Lovelace wrote"
    assert llm.complete("q", max_tokens=2).text == "Ada Lovelace"
    assert llm.complete("q", stop=["wrote"]).text == "Ada Lovelace "


def test_stream_complete_deltas_concatenate_to_the_text(engine: ScriptedEngine) -> None:
    llm = MemoryLLM(engine=engine)
    chunks = list(llm.stream_complete("Who wrote the algorithm?"))
    assert len(chunks) > 1
    assert "".join(c.delta or "" for c in chunks) == chunks[-1].text == REPLY
    assert all(a.text + (b.delta or "") == b.text for a, b in itertools.pairwise(chunks))


async def test_async_completion_matches_sync(engine: ScriptedEngine) -> None:
    llm = MemoryLLM(engine=engine)
    assert (await llm.acomplete("q")).text == llm.complete("q").text == REPLY
    chunks = [c async for c in await llm.astream_complete("q")]
    assert "".join(c.delta or "" for c in chunks) == chunks[-1].text == REPLY


def test_chat_passes_the_whole_dialogue(engine: ScriptedEngine) -> None:
    messages = [
        ChatMessage(role=MessageRole.SYSTEM, content="Answer from memory."),
        ChatMessage(role=MessageRole.USER, content="Who wrote the first algorithm?"),
        ChatMessage(role=MessageRole.ASSISTANT, content="Ada Lovelace."),
        ChatMessage(role=MessageRole.USER, content="When was she born?"),
    ]
    response = MemoryLLM(engine=engine).chat(messages)
    assert response.message.role == MessageRole.ASSISTANT
    assert response.message.content == REPLY
    assert engine.calls[-1][1] == (
        ChatTurn("system", "Answer from memory."),
        ChatTurn("user", "Who wrote the first algorithm?"),
        ChatTurn("assistant", "Ada Lovelace."),
        ChatTurn("user", "When was she born?"),
    )


async def test_chat_streaming_and_async(engine: ScriptedEngine) -> None:
    llm = MemoryLLM(engine=engine)
    messages = [ChatMessage(role="user", content="Who?")]
    chunks = list(llm.stream_chat(messages))
    assert "".join(c.delta or "" for c in chunks) == chunks[-1].message.content == REPLY
    assert (await llm.achat(messages)).message.content == REPLY
    achunks = [c async for c in await llm.astream_chat(messages)]
    assert [c.delta for c in achunks] == [c.delta for c in chunks]


def test_predict_and_stream_go_through_chat(engine: ScriptedEngine) -> None:
    from llama_index.core.prompts import PromptTemplate

    llm = MemoryLLM(engine=engine, system_prompt="Be brief.")
    prompt = PromptTemplate("Question: {q}")
    assert llm.predict(prompt, q="who?") == REPLY
    turns = engine.calls[-1][1]
    assert turns[0] == ChatTurn("system", "Be brief.")
    assert turns[-1] == ChatTurn("user", "Question: who?")
    assert "".join(llm.stream(prompt, q="who?")) == REPLY


def test_role_translation() -> None:
    turns = to_chat_turns(
        [
            ChatMessage(role=MessageRole.DEVELOPER, content="d"),
            ChatMessage(role=MessageRole.CHATBOT, content="c"),
            ChatMessage(role=MessageRole.TOOL, content="t", additional_kwargs={"name": "add"}),
            ChatMessage(role=MessageRole.USER, content=None),
            ChatMessage(
                role=MessageRole.ASSISTANT,
                content="",
                additional_kwargs={"tool_calls": [{"name": "add", "arguments": {"a": 1}}]},
            ),
        ]
    )
    assert [(t.role, t.content) for t in turns] == [
        ("system", "d"),
        ("assistant", "c"),
        ("user", "Tool add returned: t"),
        ("user", ""),
        ("assistant", "[called add({'a': 1})]"),
    ]


async def test_streams_end_with_the_engines_token_counts(engine: ScriptedEngine) -> None:
    llm = MemoryLLM(engine=engine)
    messages = [ChatMessage(role="user", content="Who?")]
    usage = llm.chat(messages).raw["usage"]
    chunks = list(llm.stream_chat(messages))
    assert chunks[-1].raw["usage"] == usage
    assert all(not c.raw for c in chunks[:-1])  # usage once, on the last piece
    achunks = [c async for c in await llm.astream_chat(messages)]
    assert achunks[-1].raw["usage"] == usage
    completions = list(llm.stream_complete("Who?"))
    assert completions[-1].raw["usage"] == usage
