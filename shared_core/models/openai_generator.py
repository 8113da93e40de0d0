"""A ``TextGenerator`` behind any OpenAI-compatible chat endpoint (OpenAI, vLLM, TGI, Ollama,
``transformers serve``), through the ``openai`` client (extra ``[openai]``).

It can fill every text role of the engine: the answer generator (``MemoRAG(generator=...)``),
the gist memory's writer (``GistMemory(generator)``: the memory back-end for models whose KV
cache you cannot reach) and, through that memory, the clue writer. A server that is down, too
slow or answers with an error raises ``GeneratorError`` naming the endpoint and the model.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from shared_core.errors import GeneratorError, InputError, LimitError
from shared_core.extras import import_extra
from shared_core.models.client_generator import ClientChatGenerator, ClientReply
from shared_core.models.deadline import DeadlinePassed, call_within, iterate_within
from shared_core.types import ChatTurn, GenerationOptions

#: Characters a whole reply may hold per ``max_new_tokens`` (tokens are rarely over 16).
MAX_CHARS_PER_TOKEN = 32


class OpenAIGenerator(ClientChatGenerator):
    """Chat completions from ``model`` at ``base_url`` (default: the OpenAI API).

    Args:
        model: The model name the server knows (for ``transformers serve``, the model path).
        base_url: The API root, e.g. ``"http://127.0.0.1:8000/v1"``; ``None`` = ``$OPENAI_BASE_URL``
            or the OpenAI API.
        api_key: ``None`` = ``$OPENAI_API_KEY``, else ``"EMPTY"`` (local servers ignore it).
        timeout: Seconds one call may take in all (connect, retries, the whole answer, a stream
            to its last piece) before it fails with ``GeneratorError``.
        max_retries: Retries on connection errors, timeouts, 429 and 5xx (the client backs off),
            all within ``timeout``.
        system_prompt: An optional system message sent before every conversation.
        max_new_tokens_cap: The largest ``max_new_tokens`` a caller may ask for.
        extra_body: Extra JSON fields for every request (server-specific sampling options).
        max_reply_bytes: The most bytes one HTTP reply may hold (a flood is cut off there).

    Whatever the server sends, a stream ends after ``max_new_tokens`` pieces (one piece is at
    least one token) and a whole reply is cut at ``max_new_tokens * MAX_CHARS_PER_TOKEN``
    characters; a malformed or wrongly shaped reply is a ``GeneratorError`` naming the endpoint.
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 2,
        system_prompt: str | None = None,
        max_new_tokens_cap: int = 4096,
        extra_body: Mapping[str, Any] | None = None,
        name: str | None = None,
        max_reply_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        if not isinstance(model, str) or not model.strip():
            raise InputError("OpenAIGenerator needs a model name, e.g. model='gpt-4o-mini'")
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, (int, float))
            or not 0 < timeout < math.inf
        ):
            raise InputError(f"timeout must be a number of seconds > 0, got {timeout!r}")
        for label, value, low in (
            ("max_retries", max_retries, 0),
            ("max_new_tokens_cap", max_new_tokens_cap, 1),
            ("max_reply_bytes", max_reply_bytes, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise InputError(f"{label} must be an int >= {low}, got {value!r}")
        if system_prompt is not None and not isinstance(system_prompt, str):
            raise InputError(f"system_prompt must be a str, got {type(system_prompt).__name__}")
        openai = import_extra(
            "openai", feature="OpenAIGenerator", needs="the openai client", extra="openai"
        )
        from shared_core.models.http_cap import capped_client  # httpx comes with openai

        self.model = model
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.system_prompt = system_prompt
        self.max_new_tokens_cap = max_new_tokens_cap
        self.max_reply_bytes = max_reply_bytes
        self.extra_body = dict(extra_body or {})
        self._openai = openai
        self._client = openai.OpenAI(
            base_url=base_url,
            api_key=api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY",
            timeout=self.timeout,
            max_retries=max_retries,
            http_client=capped_client(max_reply_bytes, self.timeout),
        )
        self.base_url = str(self._client.base_url).rstrip("/")
        super().__init__(name or f"{model} @ {self.base_url}")

    # -- requests ------------------------------------------------------------------------------

    def _messages(self, prompt: str, history: Sequence[ChatTurn]) -> list[dict[str, str]]:
        messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        for turn in history:
            if not isinstance(turn, ChatTurn):
                raise InputError(f"history must hold ChatTurn objects, got {type(turn).__name__}")
            messages.append({"role": turn.role, "content": turn.content})
        messages.append({"role": "user", "content": prompt})
        return messages

    def _call_options(self, options: GenerationOptions) -> dict[str, Any]:
        max_new_tokens, cap = options.max_new_tokens, self.max_new_tokens_cap
        if not 1 <= max_new_tokens <= cap:
            raise LimitError(f"max_new_tokens={max_new_tokens} is outside 1..{cap}")
        call = {"model": self.model, "temperature": float(options.temperature)}
        call.update(super()._call_options(options))
        if self.extra_body:
            call["extra_body"] = self.extra_body
        return call

    def _failure(self, exc: BaseException) -> GeneratorError:
        """A ``GeneratorError`` naming the endpoint, the model and what went wrong."""
        from shared_core.models.http_cap import ReplyTooLarge

        where = f"{self.base_url} (model {self.model!r})"
        openai = self._openai
        cause = exc.__cause__ if isinstance(exc.__cause__, ReplyTooLarge) else exc
        if isinstance(exc, DeadlinePassed):
            what = (
                f"did not answer within {self.timeout:g} s (timeout= bounds the whole call, "
                "a slow stream or a trickled body included)"
            )
        elif isinstance(cause, ReplyTooLarge):
            what = f"sent a reply over max_reply_bytes={self.max_reply_bytes:,}"
        elif isinstance(exc, openai.APITimeoutError):
            what = f"did not answer within {self.timeout:g} s (after {self.max_retries} retries)"
        elif isinstance(exc, openai.APIConnectionError):
            what = f"cannot be reached (is the server running?): {exc.__cause__ or exc}"
        elif isinstance(exc, openai.APIStatusError):
            what = f"answered HTTP {exc.status_code}: {exc.message}"
        elif isinstance(exc, (ValueError, TypeError, AttributeError, KeyError, IndexError)):
            what = f"sent a malformed reply ({type(exc).__name__}: {str(exc)[:200]})"
        else:
            what = f"failed mid-answer: {type(exc).__name__}: {exc}"
        return GeneratorError(f"the OpenAI-compatible endpoint {where} {what}")

    def _errors(self) -> tuple[type[BaseException], ...]:
        import httpx

        # Malformed JSON or SSE (ValueError) and replies of the wrong shape are the server's
        # failure too: named, never leaked.
        return (
            self._openai.OpenAIError,
            httpx.HTTPError,
            DeadlinePassed,
            ValueError,
            TypeError,
            AttributeError,
            KeyError,
            IndexError,
        )

    def _reply(self, messages: list[Any], options: dict[str, Any]) -> ClientReply:
        create = self._client.chat.completions.create
        response = call_within(lambda: create(messages=messages, **options), self.timeout)
        choices = response.choices
        if not isinstance(choices, list) or not choices:
            raise GeneratorError(f"the endpoint {self.base_url} returned no choices")
        choice, usage = choices[0], response.usage
        text = choice.message.content or ""
        if not isinstance(text, str):
            raise TypeError(f"message.content is a {type(text).__name__}, not text")
        limit = options.get("max_tokens")
        finish = str(choice.finish_reason or "stop")
        if isinstance(limit, int) and len(text) > limit * MAX_CHARS_PER_TOKEN:
            text, finish = text[: limit * MAX_CHARS_PER_TOKEN], "length"
        return ClientReply(
            text=text,
            prompt_tokens=_count(usage.prompt_tokens) if usage else None,
            completion_tokens=_count(usage.completion_tokens) if usage else None,
            finish_reason=finish,
        )

    def _pieces(self, messages: list[Any], options: dict[str, Any]) -> Iterator[str | None]:
        limit = options.get("max_tokens")
        pieces = iterate_within(lambda: self._events(messages, options), self.timeout)
        try:
            for n, piece in enumerate(pieces, start=1):
                yield piece
                if isinstance(limit, int) and n >= limit:
                    return  # the token limit, whatever the server goes on sending
        finally:
            pieces.close()

    def _events(self, messages: list[Any], options: dict[str, Any]) -> Iterator[str]:
        create = self._client.chat.completions.create
        with create(messages=messages, **options, stream=True) as events:
            for event in events:
                if event.choices:
                    piece = event.choices[0].delta.content
                    if piece is not None and not isinstance(piece, str):
                        raise TypeError(f"delta.content is a {type(piece).__name__}, not text")
                    if piece:
                        yield piece


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


__all__ = ["OpenAIGenerator"]
