"""LangChain's own standard test suites (langchain-tests) run against the LangChain adapter.

All classes use ``ScriptedEngine`` (the real engine with a scripted memory), so the suites
check the adapter's contract (exact k, async, streaming, usage metadata, standard params) in
milliseconds.
"""

from __future__ import annotations

from typing import Any

from fakes import ScriptedEngine
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.vectorstores import InMemoryVectorStore
from langchain_tests.integration_tests import (
    ChatModelIntegrationTests,
    RetrieversIntegrationTests,
)
from langchain_tests.unit_tests import ChatModelUnitTests

from langchain_memorag import MemoRAGRetriever, MemoryLLM

TEXTS = [
    "Ada Lovelace wrote the first published algorithm for the Analytical Engine.",
    "Charles Babbage designed the Analytical Engine in 1837.",
    "The Analytical Engine was never completed during Babbage's lifetime.",
    "Lovelace was the daughter of the poet Lord Byron.",
    "Alan Turing formalised computation with the Turing machine in 1936.",
    "Grace Hopper developed one of the first compilers.",
]
QUERY = "Who wrote the first algorithm?"
CLUES = {QUERY: ["Ada Lovelace", "Analytical Engine algorithm"]}


#: What the scripted memory "prefers" to write for the suite's tool-calling and structured
#: prompts; the replies are decoded under the real grammar constraint (tests/scripted.py).
TOOL_REPLIES = [
    # the standard agent loop: the scripted model picks the weather tool, then calls it
    (("weather in San Francisco", "Which tool should be called"), "get_weather"),
    (
        ("weather in San Francisco", "Reply with the tool call in JSON"),
        '{"name":"get_weather","arguments":{"location":"San Francisco, CA"}}',
    ),
    ("magic_function(3)", '{"name":"magic_function","arguments":{"input":3}}'),
    ("magic_function_no_args()", '{"name":"magic_function_no_args","arguments":{}}'),
    (
        "joke about cats",
        '{"name":"Joke","arguments":{"setup":"Why did the cat sit on the computer?",'
        '"punchline":"To keep an eye on the mouse."}}',
    ),
    *(
        (
            name,
            f'{{"name":"unicode_customer","arguments":{{"customer_name":"{name}",'
            '"description":"A company"}}',
        )
        for name in ("你好啊集团", "こんにちは株式会社")
    ),
]


def _engine() -> ScriptedEngine:
    return ScriptedEngine(
        TEXTS, CLUES, reply="Ada Lovelace wrote it for Babbage's engine.", rules=TOOL_REPLIES
    )


class TestMemoRAGRetrieverOwnIndex(RetrieversIntegrationTests):
    """The engine searches its own index."""

    @property
    def retriever_constructor(self) -> type[MemoRAGRetriever]:
        return MemoRAGRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {"engine": _engine(), "k": 2}

    @property
    def retriever_query_example(self) -> str:
        return QUERY


class TestMemoRAGRetrieverOverVectorStore(RetrieversIntegrationTests):
    """The engine searches a LangChain vector-store retriever once per clue."""

    @property
    def retriever_constructor(self) -> type[MemoRAGRetriever]:
        return MemoRAGRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        store = InMemoryVectorStore(DeterministicFakeEmbedding(size=16))
        store.add_documents(
            [Document(page_content=t, metadata={"row": i}) for i, t in enumerate(TEXTS)]
        )
        return {"engine": _engine(), "base_retriever": store.as_retriever(), "k": 2}

    @property
    def retriever_query_example(self) -> str:
        return QUERY


def _local_params(params: dict[str, Any]) -> dict[str, Any]:
    """The suite's standard parameters without the ones a local memory has no use for.

    ``MemoryLLM`` refuses ``timeout``, ``max_retries`` and ``api_key`` rather than accept and
    ignore them (there is no remote call to time out, retry or authenticate).
    """
    return {k: v for k, v in params.items() if k not in ("timeout", "max_retries", "api_key")}


class TestMemoryLLMUnit(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[MemoryLLM]:
        return MemoryLLM

    @property
    def standard_chat_model_params(self) -> dict[str, Any]:
        return _local_params(super().standard_chat_model_params)

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"engine": _engine(), "model": "memorag-test"}


class TestMemoryLLMIntegration(ChatModelIntegrationTests):
    @property
    def chat_model_class(self) -> type[MemoryLLM]:
        return MemoryLLM

    @property
    def standard_chat_model_params(self) -> dict[str, Any]:
        return _local_params(super().standard_chat_model_params)

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"engine": _engine(), "model": "memorag-test"}

    @property
    def has_tool_calling(self) -> bool:
        return True

    @property
    def has_tool_choice(self) -> bool:
        return True

    @property
    def has_structured_output(self) -> bool:
        return True

    @property
    def supports_json_mode(self) -> bool:
        # ``method="json_mode"`` (like every method) decodes under the schema's grammar
        return True

    @property
    def supports_model_override(self) -> bool:
        # One engine holds one model; ``model`` is a label, so a per-call override can't
        # switch what answers.
        return False
