"""Any LlamaIndex ``LLM`` as the engine's ``TextGenerator``, so it can write the gist memory,
the clues and the answers (``MemoRAGRetriever.from_defaults(documents=..., llm=OpenAILike(...))``).

Only types are translated: engine turns -> LlamaIndex ``ChatMessage``s, the reply -> a
``Generation``. Stop strings are applied here. Failures become ``GeneratorError`` naming the
model (and the endpoint, for OpenAI clients).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.llms import LLM

from shared_core.errors import InputError
from shared_core.models.client_generator import ClientChatGenerator, ClientReply
from shared_core.types import ChatTurn

__all__ = ["LLMGenerator", "memorag_with_llama_llm"]

_ROLES = {
    "system": MessageRole.SYSTEM,
    "user": MessageRole.USER,
    "assistant": MessageRole.ASSISTANT,
}


class LLMGenerator(ClientChatGenerator):
    """A ``TextGenerator`` over a LlamaIndex LLM.

    ``max_tokens_param`` is the keyword the LLM takes per call for the reply length
    (``"max_tokens"`` for OpenAI / OpenAILike; ``None`` leaves the LLM's own setting).
    """

    #: LlamaIndex LLMs take no stop strings per call: all of them are applied here.
    sends_stop = False

    def __init__(self, llm: LLM, *, max_tokens_param: str | None = "max_tokens") -> None:
        if not isinstance(llm, LLM):
            raise InputError(f"llm must be a LlamaIndex LLM, got {type(llm)!r}")
        self.llm = llm
        name = f"LlamaIndex {type(llm).__name__} ({llm.metadata.model_name})"
        super().__init__(name, max_tokens_param=max_tokens_param)

    def _messages(self, prompt: str, history: Sequence[ChatTurn]) -> list[ChatMessage]:
        messages = [ChatMessage(role=_ROLES[t.role], content=t.content) for t in history]
        return [*messages, ChatMessage(role=MessageRole.USER, content=prompt)]

    def _reply(self, messages: list[Any], options: dict[str, Any]) -> ClientReply:
        reply = self.llm.chat(messages, **options)
        prompt_words = sum(len((m.content or "").split()) for m in messages)
        return ClientReply(text=reply.message.content or "", prompt_tokens=prompt_words)

    def _pieces(self, messages: list[Any], options: dict[str, Any]) -> Iterator[str | None]:
        return (response.delta for response in self.llm.stream_chat(messages, **options))


def memorag_with_llama_llm(llm: LLM, **memorag_kwargs: Any) -> Any:
    """A ``MemoRAG`` engine whose gist memory, clues and answers run on ``llm``."""
    from shared_core.llm_roles import memorag_with_llm

    return memorag_with_llm(LLMGenerator(llm), **memorag_kwargs)
