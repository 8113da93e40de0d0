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
from shared_core.models.client_generator import ClientChatGenerator, ClientReply
from shared_core.types import ChatTurn

__all__ = ["ChatModelGenerator", "memorag_with_chat_model"]


def _message(turn: ChatTurn) -> BaseMessage:
    if turn.role == "system":
        return SystemMessage(turn.content)
    if turn.role == "assistant":
        return AIMessage(turn.content)
    return HumanMessage(turn.content)


class ChatModelGenerator(ClientChatGenerator):
    """A ``TextGenerator`` over a LangChain chat model.

    ``max_tokens_param`` is the keyword the model takes per call for the reply length
    (``"max_tokens"`` for ChatOpenAI / ChatAnthropic; ``None`` leaves the model's own setting).
    Configure sampling (``temperature=0`` for clue writing) on the model itself.
    """

    def __init__(self, chat_model: BaseChatModel, *, max_tokens_param: str | None = "max_tokens"):
        if not isinstance(chat_model, BaseChatModel):
            raise InputError(f"llm must be a LangChain BaseChatModel, got {type(chat_model)!r}")
        self.chat_model = chat_model
        super().__init__(
            f"LangChain {type(chat_model).__name__}", max_tokens_param=max_tokens_param
        )

    def _messages(self, prompt: str, history: Sequence[ChatTurn]) -> list[BaseMessage]:
        return [*(_message(t) for t in history), HumanMessage(prompt)]

    def _reply(self, messages: list[Any], options: dict[str, Any]) -> ClientReply:
        reply = self.chat_model.invoke(messages, **options)
        usage = reply.usage_metadata if isinstance(reply, AIMessage) else None
        return ClientReply(
            text=reply.text,
            prompt_tokens=usage["input_tokens"] if usage else None,
            completion_tokens=usage["output_tokens"] if usage else None,
            finish_reason=str(reply.response_metadata.get("finish_reason") or "stop"),
        )

    def _pieces(self, messages: list[Any], options: dict[str, Any]) -> Iterator[str]:
        return (chunk.text for chunk in self.chat_model.stream(messages, **options))


def memorag_with_chat_model(llm: BaseChatModel, **memorag_kwargs: Any) -> Any:
    """A ``MemoRAG`` engine whose gist memory, clues and answers run on ``llm``."""
    from shared_core.llm_roles import memorag_with_llm

    return memorag_with_llm(ChatModelGenerator(llm), **memorag_kwargs)
