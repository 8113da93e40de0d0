"""A ``TextGenerator`` behind any OpenAI-compatible chat endpoint (OpenAI, vLLM, TGI, Ollama,
``transformers serve``), through the ``openai`` client (extra ``[openai]``).

It can fill every text role of the engine: the answer generator (``MemoRAG(generator=...)``),
the gist memory's writer (``GistMemory(generator)``: the memory back-end for models whose KV
cache you cannot reach) and, through that memory, the clue writer. A server that is down, too
slow or answers with an error raises ``GeneratorError`` naming the endpoint and the model.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from shared_core.errors import GeneratorError, InputError, LimitError
from shared_core.extras import import_extra
from shared_core.models.client_generator import ClientChatGenerator, ClientReply
from shared_core.types import ChatTurn, GenerationOptions


class OpenAIGenerator(ClientChatGenerator):
    """Chat completions from ``model`` at ``base_url`` (default: the OpenAI API).

    Args:
        model: The model name the server knows (for ``transformers serve``, the model path).
        base_url: The API root, e.g. ``"http://127.0.0.1:8000/v1"``; ``None`` = ``$OPENAI_BASE_URL``
            or the OpenAI API.
        api_key: ``None`` = ``$OPENAI_API_KEY``, else ``"EMPTY"`` (local servers ignore it).
        timeout: Seconds one request may take (connect + answer) before it counts as failed.
        max_retries: Retries on connection errors, timeouts, 429 and 5xx (the client backs off).
        system_prompt: An optional system message sent before every conversation.
        max_new_tokens_cap: The largest ``max_new_tokens`` a caller may ask for.
        extra_body: Extra JSON fields for every request (server-specific sampling options).
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
    ) -> None:
        if not isinstance(model, str) or not model.strip():
            raise InputError("OpenAIGenerator needs a model name, e.g. model='gpt-4o-mini'")
        if not timeout > 0:
            raise InputError(f"timeout must be > 0 seconds, got {timeout!r}")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise InputError(f"max_retries must be an int >= 0, got {max_retries!r}")
        openai = import_extra(
            "openai", feature="OpenAIGenerator", needs="the openai client", extra="openai"
        )
        self.model = model
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.system_prompt = system_prompt
        self.max_new_tokens_cap = max_new_tokens_cap
        self.extra_body = dict(extra_body or {})
        self._openai = openai
        self._client = openai.OpenAI(
            base_url=base_url,
            api_key=api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY",
            timeout=self.timeout,
            max_retries=max_retries,
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
        where = f"{self.base_url} (model {self.model!r})"
        openai = self._openai
        if isinstance(exc, openai.APITimeoutError):
            what = f"did not answer within {self.timeout:g} s (after {self.max_retries} retries)"
        elif isinstance(exc, openai.APIConnectionError):
            what = f"cannot be reached (is the server running?): {exc.__cause__ or exc}"
        elif isinstance(exc, openai.APIStatusError):
            what = f"answered HTTP {exc.status_code}: {exc.message}"
        else:
            what = f"failed mid-answer: {type(exc).__name__}: {exc}"
        return GeneratorError(f"the OpenAI-compatible endpoint {where} {what}")

    def _errors(self) -> tuple[type[BaseException], ...]:
        import httpx

        return (self._openai.OpenAIError, httpx.HTTPError)

    def _reply(self, messages: list[Any], options: dict[str, Any]) -> ClientReply:
        response = self._client.chat.completions.create(messages=messages, **options)
        if not response.choices:
            raise GeneratorError(f"the endpoint {self.base_url} returned no choices")
        choice, usage = response.choices[0], response.usage
        return ClientReply(
            text=choice.message.content or "",
            prompt_tokens=usage.prompt_tokens if usage else None,
            completion_tokens=usage.completion_tokens if usage else None,
            finish_reason=str(choice.finish_reason or "stop"),
        )

    def _pieces(self, messages: list[Any], options: dict[str, Any]) -> Iterator[str | None]:
        create = self._client.chat.completions.create
        with create(messages=messages, **options, stream=True) as events:
            for event in events:
                if event.choices:
                    yield event.choices[0].delta.content


__all__ = ["OpenAIGenerator"]
