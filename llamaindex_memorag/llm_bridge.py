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
from shared_core.inputs import check_query
from shared_core.models.llm_failures import generator_failure
from shared_core.models.stop_text import cut_at_stop, stream_until_stop
from shared_core.types import ChatTurn, Generation

__all__ = ["LLMGenerator", "memorag_with_llama_llm"]

_ROLES = {
    "system": MessageRole.SYSTEM,
    "user": MessageRole.USER,
    "assistant": MessageRole.ASSISTANT,
}


class LLMGenerator:
    """A ``TextGenerator`` over a LlamaIndex LLM.

    ``max_tokens_param`` is the keyword the LLM takes per call for the reply length
    (``"max_tokens"`` for OpenAI / OpenAILike; ``None`` leaves the LLM's own setting).
    """

    def __init__(self, llm: LLM, *, max_tokens_param: str | None = "max_tokens") -> None:
        if not isinstance(llm, LLM):
            raise InputError(f"llm must be a LlamaIndex LLM, got {type(llm)!r}")
        self.llm = llm
        self.max_tokens_param = max_tokens_param
        self.name = f"LlamaIndex {type(llm).__name__} ({llm.metadata.model_name})"

    def _call(
        self, prompt: str, history: Sequence[ChatTurn], max_new_tokens: int
    ) -> tuple[list[ChatMessage], dict[str, Any]]:
        check_query(prompt)
        messages = [ChatMessage(role=_ROLES[t.role], content=t.content) for t in history]
        messages.append(ChatMessage(role=MessageRole.USER, content=prompt))
        options = {self.max_tokens_param: max_new_tokens} if self.max_tokens_param else {}
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
        messages, options = self._call(prompt, history, max_new_tokens)
        try:
            reply = self.llm.chat(messages, **options)
        except Exception as exc:  # the LLM's own errors, whatever its provider raises
            raise generator_failure(exc, self.name) from exc
        text, _ = cut_at_stop(reply.message.content or "", stop)
        return Generation(
            text=text,
            prompt_tokens=sum(len((m.content or "").split()) for m in messages),
            completion_tokens=len(text.split()),
            finish_reason="stop",
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
        messages, options = self._call(prompt, history, max_new_tokens)
        yield from stream_until_stop(self._pieces(messages, options), stop)

    def _pieces(self, messages: list[ChatMessage], options: dict[str, Any]) -> Iterator[str]:
        try:
            for response in self.llm.stream_chat(messages, **options):
                if response.delta:
                    yield response.delta
        except Exception as exc:
            raise generator_failure(exc, self.name) from exc


def memorag_with_llama_llm(llm: LLM, **memorag_kwargs: Any) -> Any:
    """A ``MemoRAG`` engine whose gist memory, clues and answers run on ``llm``."""
    from shared_core.llm_roles import memorag_with_llm

    return memorag_with_llm(LLMGenerator(llm), **memorag_kwargs)
