"""The engine side of a chat model reached through a client (a LangChain or LlamaIndex model):
prompt checks, stop strings applied here, failures named. A bridge only translates types."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from shared_core.inputs import check_query
from shared_core.models.llm_failures import generator_failure
from shared_core.models.stop_text import cut_at_stop, stream_until_stop
from shared_core.types import ChatTurn, Generation


@dataclass(frozen=True)
class ClientReply:
    """A whole reply as the client gave it (token counts where it reports them)."""

    text: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str = "stop"


class ClientChatGenerator(ABC):
    """A ``TextGenerator`` over a client: subclasses say how to ask and how to read."""

    name: str

    @abstractmethod
    def _ask(self, prompt: str, history: Sequence[ChatTurn], max_new_tokens: int) -> Any:
        """The client's request for ``prompt`` after ``history`` (its own message types)."""

    @abstractmethod
    def _reply(self, request: Any, stop: Sequence[str]) -> ClientReply:
        """Send ``request``; the whole reply."""

    @abstractmethod
    def _pieces(self, request: Any, stop: Sequence[str]) -> Iterator[str]:
        """Send ``request``; the reply's text pieces."""

    def generate(
        self,
        prompt: str,
        *,
        history: Sequence[ChatTurn] = (),
        max_new_tokens: int = 256,
        stop: Sequence[str] = (),
        temperature: float = 0.0,
    ) -> Generation:
        request = self._ask(check_query(prompt), history, max_new_tokens)
        try:
            reply = self._reply(request, stop)
        except Exception as exc:  # the model's own errors, whatever its provider raises
            raise generator_failure(exc, self.name) from exc
        text, stopped = cut_at_stop(reply.text, stop)
        return Generation(
            text=text,
            prompt_tokens=reply.prompt_tokens
            if reply.prompt_tokens is not None
            else len(prompt.split()),
            completion_tokens=reply.completion_tokens
            if reply.completion_tokens is not None
            else len(text.split()),
            finish_reason="length" if reply.finish_reason == "length" and not stopped else "stop",
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
        request = self._ask(check_query(prompt), history, max_new_tokens)
        yield from stream_until_stop(self._guarded(request, stop), stop)

    def _guarded(self, request: Any, stop: Sequence[str]) -> Iterator[str]:
        try:
            yield from self._pieces(request, stop)
        except Exception as exc:
            raise generator_failure(exc, self.name) from exc


__all__ = ["ClientChatGenerator", "ClientReply"]
