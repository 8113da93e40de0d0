"""The engine side of a chat model reached through a client (an OpenAI-compatible server, a
LangChain or LlamaIndex model): prompt checks, stop strings applied here, failures named.
A subclass only says how to ask its client and how to read the answer."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from shared_core.errors import GeneratorError
from shared_core.inputs import check_query
from shared_core.models.llm_failures import generator_failure
from shared_core.models.stop_text import cut_at_stop, stream_until_stop
from shared_core.types import ChatTurn, Generation, GenerationOptions

#: OpenAI-style APIs take at most this many stop strings; all of them are applied here too.
_SENT_STOPS = 4


@dataclass(frozen=True)
class ClientReply:
    """A whole reply as the client gave it (token counts where it reports them)."""

    text: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str = "stop"


class ClientChatGenerator(ABC):
    """A ``TextGenerator`` over a client: ``generate`` and ``stream`` written once.

    ``max_tokens_param`` is the keyword the client takes per call for the reply length
    (``None`` leaves the client's own setting).
    """

    def __init__(self, name: str, *, max_tokens_param: str | None = "max_tokens") -> None:
        self.name = name
        self.max_tokens_param = max_tokens_param

    #: Whether the client takes stop strings per call (the first few are sent; all are applied
    #: here either way).
    sends_stop: bool = True

    @abstractmethod
    def _messages(self, prompt: str, history: Sequence[ChatTurn]) -> list[Any]:
        """``history`` then ``prompt``, in the client's own message types."""

    @abstractmethod
    def _reply(self, messages: list[Any], options: dict[str, Any]) -> ClientReply:
        """Send ``messages`` with the call's keyword ``options``; the whole reply."""

    @abstractmethod
    def _pieces(self, messages: list[Any], options: dict[str, Any]) -> Iterable[str | None]:
        """Send ``messages`` with the call's keyword ``options``; the reply's text pieces
        (empty ones and ``None`` are skipped)."""

    def _errors(self) -> tuple[type[BaseException], ...]:
        """The exceptions of the client that mean the model failed."""
        return (Exception,)  # the model's own errors, whatever its provider raises

    def _failure(self, exc: BaseException) -> GeneratorError:
        """A ``GeneratorError`` naming the model (and the endpoint, for OpenAI clients)."""
        return generator_failure(exc, self.name)

    def _call_options(self, options: GenerationOptions) -> dict[str, Any]:
        """Keyword options for one call: the reply length under ``max_tokens_param`` and, where
        the client ``sends_stop``, the first stop strings the API takes."""
        call: dict[str, Any] = {}
        if self.max_tokens_param:
            call[self.max_tokens_param] = options.max_new_tokens
        stops = [s for s in options.stop if s][:_SENT_STOPS]
        if self.sends_stop and stops:
            call["stop"] = stops
        return call

    def _request(
        self, prompt: str, history: Sequence[ChatTurn], options: dict[str, Any]
    ) -> tuple[list[Any], dict[str, Any], tuple[str, ...]]:
        """The messages, the call's options and the stop strings of one checked request."""
        checked = GenerationOptions(**options)
        messages = self._messages(check_query(prompt), history)
        return messages, self._call_options(checked), checked.stop

    def generate(
        self, prompt: str, *, history: Sequence[ChatTurn] = (), **options: Any
    ) -> Generation:
        """The whole reply; ``options`` are ``GenerationOptions`` fields."""
        messages, call, stop = self._request(prompt, history, options)
        try:
            reply = self._reply(messages, call)
        except self._errors() as exc:
            raise self._failure(exc) from exc
        text, stopped = cut_at_stop(reply.text, stop)
        prompt_tokens, completion_tokens = reply.prompt_tokens, reply.completion_tokens
        return Generation(
            text=text,
            prompt_tokens=int(len(prompt.split()) if prompt_tokens is None else prompt_tokens),
            completion_tokens=int(
                len(text.split()) if completion_tokens is None else completion_tokens
            ),
            finish_reason="length" if reply.finish_reason == "length" and not stopped else "stop",
        )

    def stream(
        self, prompt: str, *, history: Sequence[ChatTurn] = (), **options: Any
    ) -> Iterator[str]:
        """The reply's pieces as the client sends them, cut at the first stop string."""
        messages, call, stop = self._request(prompt, history, options)
        yield from stream_until_stop(self._guarded(messages, call), stop)

    def _guarded(self, messages: list[Any], options: dict[str, Any]) -> Iterator[str]:
        try:
            for piece in self._pieces(messages, options):
                if piece:
                    yield piece
        except self._errors() as exc:
            raise self._failure(exc) from exc


__all__ = ["ClientChatGenerator", "ClientReply"]
