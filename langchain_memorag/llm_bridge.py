"""Any LangChain ``BaseChatModel`` as the engine's ``TextGenerator``, so it can write the gist
memory, the clues and the answers (``MemoRAGRetriever.from_texts(texts, llm=ChatOpenAI(...))``).

Only types are translated: engine turns -> LangChain messages, the reply -> a ``Generation``.
Failures become ``GeneratorError`` naming the model (and the endpoint, for OpenAI clients).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from shared_core.errors import InputError
from shared_core.inputs import check_query
from shared_core.models.llm_failures import generator_failure
from shared_core.models.stop_text import cut_at_stop, stream_until_stop
from shared_core.types import ChatTurn, Generation

__all__ = ["ChatModelGenerator", "memorag_with_chat_model"]

#: Stop strings handed to the model (OpenAI-style APIs take at most 4); all are applied here.
_MODEL_STOPS = 4


def _message(turn: ChatTurn) -> BaseMessage:
    if turn.role == "system":
        return SystemMessage(turn.content)
    if turn.role == "assistant":
        return AIMessage(turn.content)
    return HumanMessage(turn.content)


class ChatModelGenerator:
    """A ``TextGenerator`` over a LangChain chat model.

    ``max_tokens_param`` is the keyword the model takes per call for the reply length
    (``"max_tokens"`` for ChatOpenAI / ChatAnthropic; ``None`` leaves the model's own setting).
    Configure sampling (``temperature=0`` for clue writing) on the model itself.
    """

    def __init__(self, chat_model: BaseChatModel, *, max_tokens_param: str | None = "max_tokens"):
        if not isinstance(chat_model, BaseChatModel):
            raise InputError(f"llm must be a LangChain BaseChatModel, got {type(chat_model)!r}")
        self.chat_model = chat_model
        self.max_tokens_param = max_tokens_param
        self.name = f"LangChain {type(chat_model).__name__}"

    def _call(
        self, prompt: str, history: Sequence[ChatTurn], max_new_tokens: int, stop: Sequence[str]
    ) -> tuple[list[BaseMessage], dict[str, Any]]:
        check_query(prompt)
        messages = [*(_message(t) for t in history), HumanMessage(prompt)]
        options: dict[str, Any] = {}
        stops = [s for s in stop if s][:_MODEL_STOPS]
        if stops:
            options["stop"] = stops
        if self.max_tokens_param:
            options[self.max_tokens_param] = max_new_tokens
        return messages, options

    def generate(
        self,
        prompt: str,
        *,
        history: Sequence[ChatTurn] = (),
        max_new_tokens: int = 256,
        stop: Sequence[str] = (),
        temperature: float = 0.0,
    ) -> Generation:
        messages, options = self._call(prompt, history, max_new_tokens, stop)
        try:
            reply = self.chat_model.invoke(messages, **options)
        except Exception as exc:  # the model's own errors, whatever its provider raises
            raise generator_failure(exc, self.name) from exc
        text, stopped = cut_at_stop(reply.text, stop)
        usage = reply.usage_metadata if isinstance(reply, AIMessage) else None
        finish = str(reply.response_metadata.get("finish_reason") or "stop")
        return Generation(
            text=text,
            prompt_tokens=usage["input_tokens"] if usage else len(prompt.split()),
            completion_tokens=usage["output_tokens"] if usage else len(text.split()),
            finish_reason="length" if finish == "length" and not stopped else "stop",
        )

    def stream(
        self,
        prompt: str,
        *,
        history: Sequence[ChatTurn] = (),
        max_new_tokens: int = 256,
        stop: Sequence[str] = (),
        temperature: float = 0.0,
    ) -> Iterator[str]:
        messages, options = self._call(prompt, history, max_new_tokens, stop)
        yield from stream_until_stop(self._pieces(messages, options), stop)

    def _pieces(self, messages: list[BaseMessage], options: dict[str, Any]) -> Iterator[str]:
        try:
            for chunk in self.chat_model.stream(messages, **options):
                if chunk.text:
                    yield chunk.text
        except Exception as exc:
            raise generator_failure(exc, self.name) from exc


def memorag_with_chat_model(llm: BaseChatModel, **memorag_kwargs: Any) -> Any:
    """A ``MemoRAG`` engine whose gist memory, clues and answers run on ``llm``."""
    from shared_core.llm_roles import memorag_with_llm

    return memorag_with_llm(ChatModelGenerator(llm), **memorag_kwargs)
