"""LangChain chat model that answers against a MemoRAG memory.

``MemoryLLM`` translates LangChain messages into ``ChatTurn``s and calls the engine's ``chat``
/ ``stream_chat`` / ``astream_chat``; everything model-side (chat template, the memory, stop
handling, token counting) is the engine's job. Construction is cheap: the engine (which holds
the weights) is built separately and injected.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel, LangSmithParams
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import ConfigDict, Field, SecretStr

from shared_core.errors import NoMemoryError
from shared_core.types import ChatTurn, Generation, Role

__all__ = ["ChatMemoRAG", "MemoryLLM"]

DEFAULT_MAX_TOKENS = 256

_NO_ENGINE = (
    "MemoryLLM has no engine. Build one first, e.g. "
    "`engine = MemoRAG(); engine.memorize(texts)` then `MemoryLLM(engine=engine)`."
)

_ROLES: dict[str, Role] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "ai": "assistant",
}


def _tool_call_text(message: AIMessage) -> str:
    calls = ", ".join(f"{c['name']}({c['args']})" for c in message.tool_calls)
    return f"[called {calls}]" if calls else ""


def to_chat_turn(message: BaseMessage) -> ChatTurn:
    """Translate one LangChain message into an engine ``ChatTurn``.

    System / human / AI messages keep their role; tool and function results become user turns
    that say which tool answered; a message ``name`` is kept as a ``"name: "`` prefix.
    Non-text content blocks (images, reasoning) are dropped.
    """
    text = message.text
    role: Role
    if isinstance(message, SystemMessage):
        role = "system"
    elif isinstance(message, HumanMessage):
        role = "user"
    elif isinstance(message, AIMessage):
        role = "assistant"
        calls = _tool_call_text(message)
        text = f"{text}\n{calls}".strip() if calls else text
    elif isinstance(message, (ToolMessage, FunctionMessage)):
        source = message.name or getattr(message, "tool_call_id", None) or "tool"
        return ChatTurn(role="user", content=f"Tool {source} returned: {text}")
    elif isinstance(message, ChatMessage) and message.role.lower() in _ROLES:
        role = _ROLES[message.role.lower()]
    else:
        label = message.role if isinstance(message, ChatMessage) else message.type
        return ChatTurn(role="user", content=f"{label}: {text}")
    if message.name:
        text = f"{message.name}: {text}"
    return ChatTurn(role=role, content=text)


def to_chat_turns(messages: Sequence[BaseMessage]) -> list[ChatTurn]:
    """Translate a message list, leaving out turns with no text."""
    turns = [to_chat_turn(m) for m in messages]
    return [t for t in turns if t.content.strip()]


def _usage(prompt_tokens: int, completion_tokens: int) -> UsageMetadata:
    return UsageMetadata(
        input_tokens=prompt_tokens,
        output_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
    )


class MemoryLLM(BaseChatModel):
    """A chat model answering from a MemoRAG memory (the engine's ``chat``).

    Earlier messages (system prompt included) are passed to the engine as history; the last
    message is the prompt. No tool calling or structured output: the memory model only writes
    text.

    Attributes:
        engine: A ``RetrievalEngine`` (``shared_core.MemoRAG``); required at call time.
        model: A label reported as ``model_name`` in metadata and traces (alias ``model_name``).
        temperature: Sampling temperature; ``None`` means greedy (0.0).
        max_tokens: Maximum new tokens; ``None`` means 256.
        stop: Stop sequences, merged with the ones given per call.

    Example:
        ```python
        engine = MemoRAG()
        engine.memorize(book_text)
        llm = MemoryLLM(engine=engine)
        llm.invoke("Who is the narrator's brother?")
        ```
    """

    model_config = ConfigDict(populate_by_name=True, arbitrary_types_allowed=True)

    engine: Any = Field(default=None, exclude=True)
    model: str = Field(default="memorag", alias="model_name")
    temperature: float | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    stop: list[str] | None = None
    streaming: bool = False
    # Accepted for drop-in compatibility with API-backed chat models; a local memory ignores them.
    timeout: float | None = None
    max_retries: int | None = None
    api_key: SecretStr | None = None

    @property
    def _llm_type(self) -> str:
        return "memorag-chat"

    @property
    def _identifying_params(self) -> Mapping[str, Any]:
        return {
            "model_name": self.model,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "stop": self.stop,
        }

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(
            ls_provider="memorag",
            ls_model_name=kwargs.get("model") or self.model,
            ls_model_type="chat",
        )
        temperature = kwargs.get("temperature", self.temperature)
        if temperature is not None:
            params["ls_temperature"] = temperature
        max_tokens = kwargs.get("max_tokens", self.max_tokens)
        if max_tokens is not None:
            params["ls_max_tokens"] = max_tokens
        if stops := self._stops(stop):
            params["ls_stop"] = stops
        return params

    # -- helpers -----------------------------------------------------------------------------

    def _require_engine(self) -> Any:
        if self.engine is None:
            raise NoMemoryError(_NO_ENGINE)
        return self.engine

    def _stops(self, stop: list[str] | None) -> list[str]:
        merged: list[str] = []
        for s in [*(self.stop or []), *(stop or [])]:
            if s and s not in merged:
                merged.append(s)
        return merged

    def _options(self, stop: list[str] | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        max_tokens = kwargs.get("max_tokens") or self.max_tokens or DEFAULT_MAX_TOKENS
        temperature = kwargs.get("temperature", self.temperature)
        return {
            "max_new_tokens": int(max_tokens),
            "stop": self._stops(stop),
            "temperature": 0.0 if temperature is None else float(temperature),
        }

    def _result(self, gen: Generation, model: str) -> ChatResult:
        message = AIMessage(
            content=gen.text,
            usage_metadata=_usage(gen.prompt_tokens, gen.completion_tokens),
            response_metadata={"model_name": model, "finish_reason": gen.finish_reason},
        )
        info = {"finish_reason": gen.finish_reason}
        return ChatResult(generations=[ChatGeneration(message=message, generation_info=info)])

    def _last_chunk(self, final: Generation | None, pieces: int, model: str) -> ChatGenerationChunk:
        """The closing chunk: usage (once), ``model_name`` (once), ``chunk_position="last"``.

        If the engine's stream ends with a ``Generation`` its token counts are used; otherwise
        each streamed piece counts as one output token and input tokens are unknown (0).
        """
        usage = _usage(final.prompt_tokens, final.completion_tokens) if final else _usage(0, pieces)
        finish = final.finish_reason if final else "stop"
        message = AIMessageChunk(
            content="",
            usage_metadata=usage,
            response_metadata={"model_name": model, "finish_reason": finish},
            chunk_position="last",
        )
        return ChatGenerationChunk(message=message, generation_info={"finish_reason": finish})

    # -- LangChain hooks ---------------------------------------------------------------------

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        engine = self._require_engine()
        gen = engine.chat(to_chat_turns(messages), **self._options(stop, kwargs))
        return self._result(gen, self.model)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        engine = self._require_engine()
        turns = to_chat_turns(messages)
        gen = await asyncio.to_thread(engine.chat, turns, **self._options(stop, kwargs))
        return self._result(gen, self.model)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        engine = self._require_engine()
        final: Generation | None = None
        pieces = 0
        for piece in engine.stream_chat(to_chat_turns(messages), **self._options(stop, kwargs)):
            if isinstance(piece, Generation):
                final = piece
                continue
            pieces += 1
            yield ChatGenerationChunk(message=AIMessageChunk(content=piece))
        yield self._last_chunk(final, pieces, self.model)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        engine = self._require_engine()
        final: Generation | None = None
        pieces = 0
        stream = engine.astream_chat(to_chat_turns(messages), **self._options(stop, kwargs))
        async for piece in stream:
            if isinstance(piece, Generation):
                final = piece
                continue
            pieces += 1
            yield ChatGenerationChunk(message=AIMessageChunk(content=piece))
        yield self._last_chunk(final, pieces, self.model)


ChatMemoRAG = MemoryLLM
"""Alias following LangChain's ``Chat<Provider>`` naming convention."""
