"""Answer generation over retrieved passages: the last step of the data flow.

``LocalGenerator`` runs any HF causal LM with no memory (by default it shares the memory
model's weights, so there is no second copy); ``CallableGenerator`` wraps an upstream-style
object with ``.generate(prompt, max_new_tokens) -> list[str]`` (e.g. an API client).
"""

from __future__ import annotations

from collections.abc import Generator, Iterator, Sequence
from typing import Any

from transformers import DynamicCache

from shared_core.errors import InputError, LimitError
from shared_core.models.chat_format import ChatFormat
from shared_core.models.decoding import (
    Decoder,
    GeneratorBase,
    ModelDecoding,
    RunRequest,
    eos_ids,
)
from shared_core.types import (
    ChatTurn,
    Generation,
    GenerationOptions,
    GenerationRun,
    Passage,
    ScoredPassage,
    TextGenerator,
)


class LocalGenerator(ModelDecoding):
    """A ``TextGenerator`` over a local causal LM, with a fresh cache per call."""

    def __init__(
        self, model: Any, tokenizer: Any, *, name: str | None = None, max_new_tokens_cap: int = 4096
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.name = name or str(getattr(model.config, "name_or_path", "") or "model")
        self.format = ChatFormat(tokenizer)
        self.max_positions = int(getattr(model.config, "max_position_embeddings", 0) or 1 << 30)
        self.max_new_tokens_cap = max_new_tokens_cap
        self._stop_ids = eos_ids(model, tokenizer)

    def _open_run(self, request: RunRequest) -> Decoder:
        max_new_tokens = self._checked(request)
        ids = self.format.plain(request.history, request.prompt)
        if len(ids) + max_new_tokens > self.max_positions:
            raise LimitError(
                f"the prompt is {len(ids):,} tokens plus {max_new_tokens:,} to generate, over "
                f"{self.name}'s {self.max_positions:,} positions; retrieve fewer passages"
            )
        return self._decoder(ids, request, cache=DynamicCache(), start_position=0)

    def count_tokens(self, text: str) -> int:
        return len(self.format.encode(text))


class FinishedRun:
    """A reply that arrives whole: one piece, then its generation."""

    def __init__(self, generation: Generation) -> None:
        self.generation = generation

    def __iter__(self) -> Iterator[str]:
        if self.generation.text:
            yield self.generation.text


class CallableGenerator(GeneratorBase):
    """Adapts an object with ``.generate(prompt, max_new_tokens=...)`` (upstream's
    ``customized_gen_model``, returning ``str`` or ``[str]``) to ``TextGenerator``.

    Token counts are whitespace words: the client does not report tokens."""

    def __init__(self, client: Any) -> None:
        if not callable(getattr(client, "generate", None)):
            raise InputError("customized_gen_model needs .generate(prompt, max_new_tokens)")
        self.client = client

    def _open_run(self, request: RunRequest) -> FinishedRun:
        prompt, history, options = request.prompt, request.history, request.options
        text = prompt
        if history:
            turns = "\n".join(f"{t.role}: {t.content}" for t in history)
            text = f"{turns}\nuser: {prompt}"
        out = self.client.generate(text, max_new_tokens=options.max_new_tokens)
        reply = str(out[0] if isinstance(out, (list, tuple)) else out)
        for s in options.stop:
            if s and s in reply:
                reply = reply[: reply.index(s)]
        return FinishedRun(
            Generation(
                text=reply, prompt_tokens=len(text.split()), completion_tokens=len(reply.split())
            )
        )


class _ForeignRun:
    """A run over a generator that only has ``stream``. Its counts are the ``Generation`` the
    stream returns, if it returns one; otherwise whitespace words (it reports no tokens)."""

    def __init__(self, pieces: Iterator[str], prompt: str, options: GenerationOptions) -> None:
        self._pieces, self._prompt, self._options = pieces, prompt, options
        self._text: list[str] = []
        self._reported: Generation | None = None

    def __iter__(self) -> Iterator[str]:
        result = yield from self._collect()
        if isinstance(result, Generation):
            self._reported = result

    def _collect(self) -> Generator[str, None, object]:
        pieces = self._pieces
        while True:
            try:
                piece = next(pieces)
            except StopIteration as stop:
                return stop.value
            self._text.append(piece)
            yield piece

    @property
    def generation(self) -> Generation:
        if self._reported is not None:
            return self._reported
        text = "".join(self._text)
        words = len(text.split())
        return Generation(
            text=text,
            prompt_tokens=len(self._prompt.split()),
            completion_tokens=words,
            finish_reason="length" if words >= self._options.max_new_tokens else "stop",
        )


def run_of(
    generator: TextGenerator,
    prompt: str,
    *,
    history: Sequence[ChatTurn] = (),
    options: GenerationOptions | None = None,
) -> GenerationRun:
    """A ``GenerationRun`` from any ``TextGenerator`` (real token counts where it has them)."""
    options = options or GenerationOptions()
    if isinstance(generator, GeneratorBase):
        return generator.start(prompt, history=history, options=options)
    pieces = generator.stream(prompt, history=tuple(history), **options.as_kwargs())
    return _ForeignRun(iter(pieces), prompt, options)


def as_generator(obj: Any) -> TextGenerator:
    """A ``TextGenerator`` from either protocol."""
    if isinstance(obj, TextGenerator):
        return obj
    return CallableGenerator(obj)


def format_passages(passages: Sequence[ScoredPassage | Passage], *, max_chars: int = 2400) -> str:
    """Number passages ``[1] ...`` for a prompt, each cut to ``max_chars``."""
    blocks = []
    for i, item in enumerate(passages, start=1):
        passage = item.passage if isinstance(item, ScoredPassage) else item
        text = " ".join(passage.text.split())
        if len(text) > max_chars:
            text = text[:max_chars].rsplit(" ", 1)[0] + " ..."
        blocks.append(f"[{i}] {text}")
    return "\n\n".join(blocks)
