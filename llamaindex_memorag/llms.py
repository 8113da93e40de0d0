"""``MemoryLLM``: a MemoRAG engine answering as a LlamaIndex chat LLM.

Every prompt is answered *against the memory* by ``engine.chat``: the whole message list is
passed on (system prompt and earlier turns become the dialogue history), so query engines and
chat engines keep their multi-turn context.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
)
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import ToolSelection
from llama_index.core.tools import BaseTool

from shared_core.engine_ref import check_picklable, shared_engine_memo
from shared_core.errors import InputError
from shared_core.keywords import refuse_unknown
from shared_core.models.options import chat_options
from shared_core.models.streaming import TextStream
from shared_core.structured import StructuredReply, ToolSpec
from shared_core.types import ChatTurn, Generation, RetrievalEngine, Role

_ROLES: dict[str, Role] = {
    MessageRole.SYSTEM.value: "system",
    MessageRole.DEVELOPER.value: "system",
    MessageRole.USER.value: "user",
    MessageRole.ASSISTANT.value: "assistant",
    MessageRole.CHATBOT.value: "assistant",
    MessageRole.MODEL.value: "assistant",
    # tool / function results are information handed to the model, as a user turn would be
    MessageRole.TOOL.value: "user",
    MessageRole.FUNCTION.value: "user",
}


def _calls_text(message: ChatMessage) -> str:
    calls = message.additional_kwargs.get("tool_calls") or []
    said = ", ".join(f"{c['name']}({c['arguments']})" for c in calls if isinstance(c, dict))
    return f"[called {said}]" if said else ""


#: Other LLM classes' options, and what this one takes instead.
_HINTS = {
    "max_tokens": "num_output= (or max_tokens= per call)",
    "model": "model_name=",
    "timeout": "a local memory has no timeout",
    "api_key": "a local memory has no API key",
    "api_base": "a local memory has no endpoint",
    "max_retries": "a local memory has no retries",
    "top_k": "retrieval depth belongs to the retriever (similarity_top_k=)",
}


def to_chat_turns(messages: Sequence[ChatMessage]) -> list[ChatTurn]:
    """Translate LlamaIndex ``ChatMessage``s into engine ``ChatTurn``s (text content, and the
    tool calls an assistant message made, as text)."""
    turns = []
    for message in messages:
        role = message.role.value if isinstance(message.role, MessageRole) else message.role
        if role not in _ROLES:
            raise ValueError(f"MemoryLLM cannot handle a message with role {role!r}")
        text = "\n".join(t for t in (message.content or "", _calls_text(message)) if t)
        if role in (MessageRole.TOOL.value, MessageRole.FUNCTION.value):
            name = message.additional_kwargs.get("name") or "tool"
            text = f"Tool {name} returned: {text}"
        turns.append(ChatTurn(role=_ROLES[role], content=text))
    return turns


def _tool_choice(choice: Any, tool_required: bool) -> str:
    """LlamaIndex's ``tool_required`` / ``tool_choice`` as ``auto|required|none|<name>``."""
    if isinstance(choice, dict):
        choice = (choice.get("function") or {}).get("name") or choice.get("name")
    if isinstance(choice, str) and choice:
        return "required" if choice == "any" else choice
    return "required" if tool_required else "auto"


def _tool_spec(tool: BaseTool) -> ToolSpec:
    meta = tool.metadata
    return ToolSpec(
        name=meta.get_name(), description=meta.description, parameters=meta.get_parameters_dict()
    )


def _called(reply: StructuredReply) -> ChatResponse:
    calls = [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in reply.tool_calls]
    message = ChatMessage(
        role=MessageRole.ASSISTANT, content="", additional_kwargs={"tool_calls": calls}
    )
    return ChatResponse(message=message, raw=_raw(reply.generation))


def _raw(generation: Generation) -> dict[str, Any]:
    """The ``raw`` payload LlamaIndex's token counter reads (``raw["usage"]``)."""
    return {
        "usage": {
            "prompt_tokens": generation.prompt_tokens,
            "completion_tokens": generation.completion_tokens,
            "total_tokens": generation.prompt_tokens + generation.completion_tokens,
        },
        "finish_reason": generation.finish_reason,
    }


def _steps(stream: TextStream) -> Iterator[tuple[str, str, dict[str, Any] | None]]:
    """``(delta, text so far, raw)`` per piece; the last piece carries the usage ``raw`` (the
    engine's token counts), so LlamaIndex's token counter sees real numbers for streams too."""
    text, held = "", None
    for piece in stream:
        if held is not None:
            yield held, text, None
        held, text = piece, text + piece
    if held is not None:
        yield held, text, _raw(stream.generation) if stream.generation else None


async def _asteps(stream: TextStream) -> AsyncIterator[tuple[str, str, dict[str, Any] | None]]:
    """``_steps`` for ``async for``."""
    text, held = "", None
    async for piece in stream:
        if held is not None:
            yield held, text, None
        held, text = piece, text + piece
    if held is not None:
        yield held, text, _raw(stream.generation) if stream.generation else None


async def _one(response: ChatResponse) -> AsyncIterator[ChatResponse]:
    yield response


def _said(text: str) -> ChatMessage:
    return ChatMessage(role=MessageRole.ASSISTANT, content=text)


class MemoryLLM(FunctionCallingLLM):
    """A chat LLM whose answers come from a MemoRAG memory (``engine.chat``).

    Construction is cheap: ``MemoryLLM(engine=MemoRAG(...).memorize(...))``. Generation
    options can be overridden per call with ``max_tokens=``, ``stop=`` and ``temperature=``.
    Function calling (``chat_with_tools``, ``structured_predict``, ``as_structured_llm``,
    agents) works by constrained decoding: tool calls are valid JSON for the tool's schema by
    construction.
    """

    context_window: int = Field(default=8192, gt=0, description="Tokens the model can read.")
    num_output: int = Field(default=256, gt=0, description="Default new tokens per answer.")
    model_name: str = Field(default="memorag", description="Name reported in metadata.")
    temperature: float = Field(default=0.0, ge=0.0, description="Sampling temperature.")

    _engine: RetrievalEngine | None = PrivateAttr(default=None)

    def __init__(self, *, engine: RetrievalEngine | None = None, **kwargs: Any) -> None:
        fields = type(self).model_fields
        known = {*fields, *(f.alias for f in fields.values() if f.alias)}
        refuse_unknown("MemoryLLM", kwargs, known, _HINTS)
        super().__init__(**kwargs)
        self._engine = engine

    # -- pickling and copies: the engine is never dropped (shared_core/engine_ref.py) ---------

    def __getstate__(self) -> dict[str, Any]:
        """LlamaIndex drops attributes that fail to pickle; the engine fails loudly instead
        (a saved ``MemoRAG`` pickles as a reference to its save directory)."""
        check_picklable(self._engine, "MemoryLLM")
        return super().__getstate__()

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)  # LlamaIndex re-runs __init__ on the fields alone
        private = state.get("__pydantic_private__") or {}
        self._engine = private.get("_engine")

    def __deepcopy__(self, memo: dict[int, Any] | None = None) -> MemoryLLM:
        """A copy around the same engine (its weights and memory are shared, not cloned)."""
        return super().__deepcopy__(shared_engine_memo(memo, self._engine))

    @classmethod
    def class_name(cls) -> str:
        return "MemoryLLM"

    @property
    def engine(self) -> RetrievalEngine:
        """The engine answering; a clear error if none was given."""
        if self._engine is None:
            raise RuntimeError(
                "MemoryLLM has no engine: create it as MemoryLLM(engine=MemoRAG(...)) with an "
                "engine that has memorized your text"
            )
        return self._engine

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(
            context_window=self.context_window,
            num_output=self.num_output,
            is_chat_model=True,
            is_function_calling_model=True,
            model_name=self.model_name,
        )

    def _options(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        return chat_options(
            max_tokens=kwargs.get("max_tokens"),
            stop=kwargs.get("stop"),
            temperature=kwargs.get("temperature"),
            default_max_tokens=self.num_output,
            default_temperature=self.temperature,
        )

    @staticmethod
    def _user(prompt: str) -> list[ChatTurn]:
        return [ChatTurn(role="user", content=prompt)]

    # -- completion ---------------------------------------------------------------------------

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        generation = self.engine.chat(self._user(prompt), **self._options(kwargs))
        return CompletionResponse(text=generation.text, raw=_raw(generation))

    @llm_completion_callback()
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        stream = self.engine.stream_chat(self._user(prompt), **self._options(kwargs))
        return (
            CompletionResponse(text=text, delta=delta, raw=raw)
            for delta, text, raw in _steps(stream)
        )

    @llm_completion_callback()
    async def acomplete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponse:
        generation = await asyncio.to_thread(
            self.engine.chat, self._user(prompt), **self._options(kwargs)
        )
        return CompletionResponse(text=generation.text, raw=_raw(generation))

    @llm_completion_callback()
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        stream = self.engine.astream_chat(self._user(prompt), **self._options(kwargs))
        return (
            CompletionResponse(text=text, delta=delta, raw=raw)
            async for delta, text, raw in _asteps(stream)
        )

    # -- chat ---------------------------------------------------------------------------------

    # -- function calling ---------------------------------------------------------------------

    def _prepare_chat_with_tools(
        self,
        tools: Sequence[BaseTool],
        user_msg: str | ChatMessage | None = None,
        chat_history: list[ChatMessage] | None = None,
        verbose: bool = False,
        allow_parallel_tool_calls: bool = False,
        tool_required: bool = False,
        tool_choice: str | dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        messages = list(chat_history or [])
        if user_msg is not None:
            messages.append(
                user_msg if isinstance(user_msg, ChatMessage) else ChatMessage(content=user_msg)
            )
        return {
            "messages": messages,
            "tools": [_tool_spec(t) for t in tools],
            "tool_choice": _tool_choice(tool_choice, tool_required),
            **kwargs,
        }

    def get_tool_calls_from_response(
        self, response: ChatResponse, error_on_no_tool_call: bool = True, **kwargs: Any
    ) -> list[ToolSelection]:
        calls = response.message.additional_kwargs.get("tool_calls") or []
        if not calls and error_on_no_tool_call:
            raise InputError(f"the reply called no tool: {response.message.content!r}")
        return [
            ToolSelection(tool_id=c["id"], tool_name=c["name"], tool_kwargs=c["arguments"])
            for c in calls
        ]

    def _tool_reply(
        self, messages: Sequence[ChatMessage], kwargs: dict[str, Any]
    ) -> ChatResponse | None:
        tools = kwargs.get("tools")
        if not tools:
            return None
        last = messages[-1].role if messages else None
        reply = self.engine.chat_tools(
            to_chat_turns(messages),
            tools,
            kwargs.get("tool_choice", "auto"),
            after_tool_result=last in (MessageRole.TOOL, MessageRole.FUNCTION),
        )
        return _called(reply) if reply is not None else None

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        called = self._tool_reply(messages, kwargs)
        if called is not None:
            return called
        generation = self.engine.chat(to_chat_turns(messages), **self._options(kwargs))
        return ChatResponse(
            message=_said(generation.text),
            raw=_raw(generation),
        )

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        called = self._tool_reply(messages, kwargs)
        if called is not None:
            return iter([called])
        stream = self.engine.stream_chat(to_chat_turns(messages), **self._options(kwargs))
        return (
            ChatResponse(message=_said(text), delta=delta, raw=raw)
            for delta, text, raw in _steps(stream)
        )

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        called = await asyncio.to_thread(self._tool_reply, messages, kwargs)
        if called is not None:
            return called
        generation = await asyncio.to_thread(
            self.engine.chat, to_chat_turns(messages), **self._options(kwargs)
        )
        return ChatResponse(
            message=_said(generation.text),
            raw=_raw(generation),
        )

    @llm_chat_callback()
    async def astream_chat(
        self, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> ChatResponseAsyncGen:
        called = await asyncio.to_thread(self._tool_reply, messages, kwargs)
        if called is not None:
            return _one(called)
        stream = self.engine.astream_chat(to_chat_turns(messages), **self._options(kwargs))
        return (
            ChatResponse(message=_said(text), delta=delta, raw=raw)
            async for delta, text, raw in _asteps(stream)
        )
