"""LangChain chat model that answers against a MemoRAG memory.

``MemoryLLM`` translates LangChain messages into ``ChatTurn``s and calls the engine's ``chat``
/ ``stream_chat`` / ``astream_chat``; everything model-side (chat template, the memory, stop
handling, token counting) is the engine's job. Construction is cheap: the engine (which holds
the weights) is built separately and injected.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel, LangSmithParams, LanguageModelInput
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
from langchain_core.messages.tool import tool_call, tool_call_chunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ConfigDict, Field

from shared_core.engine_ref import shared_engine_memo
from shared_core.errors import InputError, NoMemoryError
from shared_core.models.options import chat_options
from shared_core.models.streaming import TextStream
from shared_core.structured import StructuredReply, ToolSpec
from shared_core.types import ChatTurn, Generation, Role

__all__ = ["ChatMemoRAG", "MemoryLLM"]

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


def _tool_choice(choice: Any, names: Sequence[str]) -> str:
    """LangChain's ``tool_choice`` spellings as the engine's ``auto|required|none|<name>``."""
    if choice is None or choice == "auto":
        return "auto"
    if choice is True or choice in ("any", "required"):
        return "required"
    if choice is False or choice == "none":
        return "none"
    if isinstance(choice, dict):
        choice = (choice.get("function") or {}).get("name") or choice.get("name")
    if isinstance(choice, str) and choice in names:
        return choice
    raise InputError(
        f"tool_choice {choice!r} is not 'auto', 'any', 'none' or a bound tool {list(names)}"
    )


def _tool_spec(tool: Mapping[str, Any]) -> ToolSpec:
    function = tool["function"]
    return ToolSpec(
        name=function["name"],
        description=function.get("description", ""),
        parameters=function.get("parameters") or {"type": "object", "properties": {}},
    )


def _tool_message(reply: StructuredReply, model: str) -> AIMessage:
    return AIMessage(
        content="",
        tool_calls=[tool_call(name=c.name, args=c.arguments, id=c.id) for c in reply.tool_calls],
        usage_metadata=_usage(reply.generation.prompt_tokens, reply.generation.completion_tokens),
        response_metadata={"model_name": model, "finish_reason": "tool_calls"},
    )


class MemoryLLM(BaseChatModel):
    """A chat model answering from a MemoRAG memory (the engine's ``chat``).

    Earlier messages (system prompt included) are passed to the engine as history; the last
    message is the prompt. ``bind_tools`` and ``with_structured_output`` work by constrained
    decoding on the memory model: tool calls and structured replies are valid JSON for the
    tool's or schema's JSON schema by construction.

    Attributes:
        engine: A ``RetrievalEngine`` (``shared_core.MemoRAG``); required at call time.
        model: A label reported as ``model_name`` in metadata and traces (alias ``model_name``).
        temperature: Sampling temperature; ``None`` means greedy (0.0).
        max_tokens: Maximum new tokens; ``None`` means 256.
        stop: Stop sequences, merged with the ones given per call.
        streaming: Make ``invoke`` stream internally (callbacks get every new token).

    Example:
        ```python
        engine = MemoRAG()
        engine.memorize(book_text)
        llm = MemoryLLM(engine=engine)
        llm.invoke("Who is the narrator's brother?")
        ```
    """

    # Unknown options are refused: a local memory has no ``timeout``, ``max_retries`` or
    # ``api_key``, and accepting them would only hide that they do nothing.
    model_config = ConfigDict(populate_by_name=True, arbitrary_types_allowed=True, extra="forbid")

    engine: Any = Field(default=None, exclude=True)
    model: str = Field(default="memorag", alias="model_name")
    temperature: float | None = Field(default=None, ge=0.0)
    max_tokens: int | None = Field(default=None, ge=1)
    stop: list[str] | None = None
    #: ``True``: ``invoke`` runs through the stream, so callbacks see each new token
    #: (LangChain's ``BaseChatModel`` reads this field).
    streaming: bool = False

    def __deepcopy__(self, memo: dict[int, Any] | None = None) -> MemoryLLM:
        """A copy around the same engine (its weights and memory are shared, not cloned)."""
        return super().__deepcopy__(shared_engine_memo(memo, self.engine))

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
        return chat_options(stop=stop, default_stop=self.stop)["stop"]

    def _options(self, stop: list[str] | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        return chat_options(
            max_tokens=kwargs.get("max_tokens"),
            stop=stop,
            temperature=kwargs.get("temperature"),
            default_max_tokens=self.max_tokens,
            default_stop=self.stop,
            default_temperature=self.temperature,
        )

    def _result(self, gen: Generation, model: str) -> ChatResult:
        message = AIMessage(
            content=gen.text,
            usage_metadata=_usage(gen.prompt_tokens, gen.completion_tokens),
            response_metadata={"model_name": model, "finish_reason": gen.finish_reason},
        )
        info = {"finish_reason": gen.finish_reason}
        return ChatResult(generations=[ChatGeneration(message=message, generation_info=info)])

    def _last_chunk(self, stream: TextStream, model: str) -> ChatGenerationChunk:
        """The closing chunk: usage (once), ``model_name`` (once), ``chunk_position="last"``.

        Usage is the engine's own token count of the streamed reply; a back-end that cannot
        count (a foreign generator) reports none rather than a guess.
        """
        final = stream.generation
        usage = _usage(final.prompt_tokens, final.completion_tokens) if final else None
        finish = final.finish_reason if final else "stop"
        message = AIMessageChunk(
            content="",
            usage_metadata=usage,
            response_metadata={"model_name": model, "finish_reason": finish},
            chunk_position="last",
        )
        return ChatGenerationChunk(message=message, generation_info={"finish_reason": finish})

    # -- LangChain hooks ---------------------------------------------------------------------

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | dict[str, Any] | bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools (anything ``convert_to_openai_tool`` takes). ``tool_choice``: ``None`` /
        ``"auto"`` (the model picks a tool or answers in text), ``"any"`` / ``"required"`` /
        ``True`` (some tool), ``"none"``, or a tool's name (that tool)."""
        formatted = [convert_to_openai_tool(t) for t in tools]
        names = [t["function"]["name"] for t in formatted]
        choice = _tool_choice(tool_choice, names)
        return super().bind(tools=formatted, tool_choice=choice, **kwargs)

    def _tool_reply(self, messages: list[BaseMessage], kwargs: dict[str, Any]) -> AIMessage | None:
        """The tool call for ``messages`` when tools are bound and one is to be called."""
        tools = kwargs.get("tools")
        if not tools:
            return None
        engine = self._require_engine()
        after_tool = bool(messages) and isinstance(messages[-1], ToolMessage)
        reply = engine.chat_tools(
            to_chat_turns(messages),
            [_tool_spec(t) for t in tools],
            kwargs.get("tool_choice", "auto"),
            after_tool_result=after_tool,
        )
        return _tool_message(reply, self.model) if reply is not None else None

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        engine = self._require_engine()
        called = self._tool_reply(messages, kwargs)
        if called is not None:
            return ChatResult(generations=[ChatGeneration(message=called)])
        gen = engine.chat(to_chat_turns(messages), **self._options(stop, kwargs))
        return self._result(gen, self.model)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return await asyncio.to_thread(self._generate, messages, stop, None, **kwargs)

    def _called_chunks(self, called: AIMessage) -> Iterator[ChatGenerationChunk]:
        chunks = [
            tool_call_chunk(name=c["name"], args=json.dumps(c["args"]), id=c["id"], index=i)
            for i, c in enumerate(called.tool_calls)
        ]
        yield ChatGenerationChunk(message=AIMessageChunk(content="", tool_call_chunks=chunks))
        message = AIMessageChunk(
            content="",
            usage_metadata=called.usage_metadata,
            response_metadata=dict(called.response_metadata),
            chunk_position="last",
        )
        yield ChatGenerationChunk(message=message, generation_info={"finish_reason": "tool_calls"})

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        engine = self._require_engine()
        called = self._tool_reply(messages, kwargs)
        if called is not None:
            yield from self._called_chunks(called)
            return
        stream = engine.stream_chat(to_chat_turns(messages), **self._options(stop, kwargs))
        for piece in stream:
            yield ChatGenerationChunk(message=AIMessageChunk(content=piece))
        yield self._last_chunk(stream, self.model)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        engine = self._require_engine()
        if kwargs.get("tools"):
            called = await asyncio.to_thread(self._tool_reply, messages, kwargs)
            if called is not None:
                for chunk in self._called_chunks(called):
                    yield chunk
                return
        stream = engine.astream_chat(to_chat_turns(messages), **self._options(stop, kwargs))
        async for piece in stream:
            yield ChatGenerationChunk(message=AIMessageChunk(content=piece))
        yield self._last_chunk(stream, self.model)


ChatMemoRAG = MemoryLLM
"""Alias following LangChain's ``Chat<Provider>`` naming convention."""
