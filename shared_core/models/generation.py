"""Answer generation over retrieved passages: the last step of the data flow.

``LocalGenerator`` runs any HF causal LM with no memory (by default it shares the memory
model's weights, so there is no second copy); ``CallableGenerator`` wraps an upstream-style
object with ``.generate(prompt, max_new_tokens) -> list[str]`` (e.g. an API client).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from transformers import DynamicCache

from shared_core.errors import InputError, LimitError
from shared_core.inputs import check_query
from shared_core.models.chat_format import ChatFormat
from shared_core.models.decoding import ConstrainedGeneration, Decoder, TokenConstraint, eos_ids
from shared_core.types import ChatTurn, Generation, Passage, ScoredPassage, TextGenerator


class LocalGenerator(ConstrainedGeneration):
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

    def _decoder(
        self,
        prompt: str,
        history: Sequence[ChatTurn],
        max_new_tokens: int,
        stop: Sequence[str],
        temperature: float,
        constraint: TokenConstraint | None = None,
    ) -> Decoder:
        check_query(prompt)
        if not 0 <= max_new_tokens <= self.max_new_tokens_cap:
            cap = self.max_new_tokens_cap
            raise LimitError(f"max_new_tokens={max_new_tokens} is outside 0..{cap}")
        ids = self.format.plain(history, prompt)
        if len(ids) + max_new_tokens > self.max_positions:
            raise LimitError(
                f"the prompt is {len(ids):,} tokens plus {max_new_tokens:,} to generate, over "
                f"{self.name}'s {self.max_positions:,} positions; retrieve fewer passages"
            )
        return Decoder(
            self.model,
            self.tokenizer,
            ids,
            cache=DynamicCache(),
            start_position=0,
            max_new_tokens=max_new_tokens,
            stop=stop,
            temperature=temperature,
            stop_ids=self._stop_ids,
            constraint=constraint,
        )

    def generate(
        self,
        prompt: str,
        *,
        history: Sequence[ChatTurn] = (),
        max_new_tokens: int = 256,
        stop: Sequence[str] = (),
        temperature: float = 0.0,
    ) -> Generation:
        return self._decoder(prompt, history, max_new_tokens, stop, temperature).run()

    def stream(
        self,
        prompt: str,
        *,
        history: Sequence[ChatTurn] = (),
        max_new_tokens: int = 256,
        stop: Sequence[str] = (),
        temperature: float = 0.0,
    ) -> Iterator[str]:
        return (yield from self._decoder(prompt, history, max_new_tokens, stop, temperature))

    def count_tokens(self, text: str) -> int:
        return len(self.format.encode(text))


class CallableGenerator:
    """Adapts an object with ``.generate(prompt, max_new_tokens=...)`` (upstream's
    ``customized_gen_model``, returning ``str`` or ``[str]``) to ``TextGenerator``."""

    def __init__(self, client: Any) -> None:
        if not callable(getattr(client, "generate", None)):
            raise InputError("customized_gen_model needs .generate(prompt, max_new_tokens)")
        self.client = client

    def generate(
        self,
        prompt: str,
        *,
        history: Sequence[ChatTurn] = (),
        max_new_tokens: int = 256,
        stop: Sequence[str] = (),
        temperature: float = 0.0,
    ) -> Generation:
        text = prompt
        if history:
            turns = "\n".join(f"{t.role}: {t.content}" for t in history)
            text = f"{turns}\nuser: {prompt}"
        out = self.client.generate(text, max_new_tokens=max_new_tokens)
        reply = out[0] if isinstance(out, (list, tuple)) else out
        reply = str(reply)
        for s in stop:
            if s and s in reply:
                reply = reply[: reply.index(s)]
        return Generation(
            text=reply, prompt_tokens=len(text.split()), completion_tokens=len(reply.split())
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
        generation = self.generate(
            prompt, history=history, max_new_tokens=max_new_tokens, stop=stop
        )
        yield generation.text
        return generation


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
