"""Token-by-token decoding over a KV cache, with streaming text and stop sequences.

Used by every memory back-end and by the plain generator: greedy by default (deterministic),
temperature sampling with a fixed seed when asked. An optional ``TokenConstraint`` masks the
logits at each step (copy-from-text clues).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from tqdm.auto import tqdm

from shared_core.inputs import check_max_new_tokens, check_query
from shared_core.types import ChatTurn, Generation, GenerationOptions, GenerationRun


class TokenConstraint(Protocol):
    """Restricts which token a decoder may emit next."""

    def allowed(self) -> Sequence[int] | None:
        """Token ids allowed next (``None``: any)."""
        ...

    def advance(self, token: int) -> None:
        """Record the token the decoder emitted."""
        ...


@dataclass(frozen=True)
class RunRequest:
    """One reply to decode: ``prompt`` after ``history``, decoded with ``options``, under
    ``constraint`` where one is given (only generators that ``supports_copying`` get one)."""

    prompt: str
    history: tuple[ChatTurn, ...] = ()
    options: GenerationOptions = field(default_factory=GenerationOptions)
    constraint: TokenConstraint | None = None


def eos_ids(model: Any, tokenizer: Any) -> set[int]:
    """Every token id that ends a reply for this model."""
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), model.config, tokenizer):
        value = getattr(source, "eos_token_id", None)
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(v for v in value if isinstance(v, int))
    for token in ("<|im_end|>", "<|eot_id|>", "<|end|>", "</s>", "<end_of_turn>"):
        tid = tokenizer.convert_tokens_to_ids(token) if token in tokenizer.get_vocab() else None
        if isinstance(tid, int):
            ids.add(tid)
    return ids


#: A reply still being written after this many seconds shows a progress bar (tokens so far, of
#: the most allowed), the memorize bar's style; shorter replies show nothing.
PROGRESS_DELAY_S = 5.0


#: A reply whose last tokens are one run of 4..96 tokens repeated back to back is stuck in a
#: loop: decoding stops there. A short run must come 4 times (under 8 tokens) or 3 (under 16),
#: a sentence-long one twice. Small models fall into such loops under greedy decoding (the
#: embedded SmolLM2 repeating a sentence of the book: benchmark experiment ``loop-check-book``)
#: and would otherwise write them to ``max_new_tokens``.
_LOOP_RUNS = (4, 96)


def _repeats_needed(run: int) -> int:
    return 4 if run < 8 else 3 if run < 16 else 2


def looping(tokens: Sequence[int]) -> bool:
    """Whether ``tokens`` end with one run repeated back to back (see ``_LOOP_RUNS``)."""
    n = len(tokens)
    shortest, longest = _LOOP_RUNS
    for run in range(shortest, min(longest, n // 2) + 1):
        repeats = _repeats_needed(run)
        if n < run * repeats:
            continue
        tail = list(tokens[n - run :])
        if all(list(tokens[n - (i + 1) * run : n - i * run]) == tail for i in range(1, repeats)):
            return True
    return False


class Decoder:
    """One decoding run; iterate it for text pieces, then read ``generation``.

    ``show_progress=False`` hides the progress bar that a reply slower than
    ``PROGRESS_DELAY_S`` shows (clue writing, summaries and answers on a CPU can take minutes).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        prompt_ids: Sequence[int],
        request: RunRequest,
        *,
        cache: Any,
        start_position: int,
        seed: int = 0,
        stop_ids: set[int] | None = None,
        show_progress: bool | None = None,
    ) -> None:
        self.show_progress = show_progress
        self.model = model
        self.tokenizer = tokenizer
        self.prompt_ids = list(prompt_ids)
        self.cache = cache
        self.position = start_position
        options = request.options
        self.max_new_tokens = options.max_new_tokens
        self.stop = [s for s in options.stop if s]
        self.temperature = options.temperature
        self.generator = torch.Generator().manual_seed(seed)
        self.stop_ids = stop_ids if stop_ids is not None else eos_ids(model, tokenizer)
        self.constraint = request.constraint
        self.text = ""
        self.tokens: list[int] = []
        self.finish_reason = "length"

    @property
    def generation(self) -> Generation:
        return Generation(
            text=self.text,
            prompt_tokens=len(self.prompt_ids),
            completion_tokens=len(self.tokens),
            finish_reason=self.finish_reason,  # type: ignore[arg-type]
        )

    def _step(self, ids: Sequence[int]) -> torch.Tensor:
        device = self.model.device
        input_ids = torch.tensor([list(ids)], dtype=torch.long, device=device)
        positions = torch.arange(self.position, self.position + len(ids), device=device)[None]
        out = self.model(
            input_ids=input_ids,
            position_ids=positions,
            cache=self.cache,
            use_cache=True,
            logits_to_keep=1,
        )
        self.position += len(ids)
        return out.logits[0, -1].float()

    def _pick(self, logits: torch.Tensor) -> int:
        if self.constraint is not None:
            allowed = self.constraint.allowed()
            if allowed is not None:
                index = torch.as_tensor(list(allowed), dtype=torch.long, device=logits.device)
                masked = torch.full_like(logits, float("-inf"))
                masked[index] = logits[index]
                logits = masked
        if self.temperature <= 0:
            return int(torch.argmax(logits))
        probs = torch.softmax(logits / self.temperature, dim=-1).cpu()
        return int(torch.multinomial(probs, 1, generator=self.generator))

    def __iter__(self) -> Iterator[str]:
        if self.max_new_tokens <= 0:
            return
        bar = tqdm(
            total=self.max_new_tokens,
            unit="tok",
            desc="generate",
            delay=PROGRESS_DELAY_S,
            leave=False,
            disable=self.show_progress is False,
        )
        try:
            yield from self._decode(bar)
        finally:
            bar.close()

    def _decode(self, bar: Any) -> Iterator[str]:
        emitted = 0
        with torch.inference_mode():
            logits = self._step(self.prompt_ids)
            while len(self.tokens) < self.max_new_tokens:
                token = self._pick(logits)
                if self.constraint is not None:
                    self.constraint.advance(token)
                if token in self.stop_ids:
                    self.finish_reason = "stop"
                    break
                self.tokens.append(token)
                bar.update(1)
                full = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
                cut = self._stop_at(full)
                if cut is not None:
                    self.text = full[:cut]
                    self.finish_reason = "stop"
                    break
                self.text = full
                safe = len(full) - self._held_back(full)
                if full.endswith("\ufffd"):
                    safe = min(safe, len(full) - 1)
                if safe > emitted:
                    yield full[emitted:safe]
                    emitted = safe
                if len(self.tokens) >= self.max_new_tokens:
                    break
                if self.constraint is None and looping(self.tokens):
                    # a degenerate loop: more would only repeat (a constrained reply ends by
                    # its constraint: a structured reply's grammar must be allowed to close)
                    self.finish_reason = "stop"
                    break
                logits = self._step([token])
        if len(self.text) > emitted:
            yield self.text[emitted:]

    def run(self) -> Generation:
        for _ in self:
            pass
        return self.generation

    def _stop_at(self, text: str) -> int | None:
        hits = [text.find(s) for s in self.stop if s in text]
        return min(hits) if hits else None

    def _held_back(self, text: str) -> int:
        """Characters at the end of ``text`` that could be the start of a stop sequence."""
        longest = 0
        for s in self.stop:
            for n in range(min(len(s) - 1, len(text)), 0, -1):
                if text.endswith(s[:n]):
                    longest = max(longest, n)
                    break
        return longest


@runtime_checkable
class CopyingGenerator(Protocol):
    """A generator that decodes under a ``TokenConstraint`` (copy-from-text clues)."""

    supports_copying: bool

    @property
    def end_ids(self) -> set[int]: ...

    def generate_constrained(
        self,
        prompt: str,
        constraint: TokenConstraint,
        *,
        history: Sequence[ChatTurn] = (),
        max_new_tokens: int = 256,
    ) -> Generation: ...


class GeneratorBase(ABC):
    """``generate`` and ``stream`` written once, over ``start``: what every local generator and
    memory back-end implements is how to open one decoding run."""

    def start(
        self,
        prompt: str,
        *,
        history: Sequence[ChatTurn] = (),
        options: GenerationOptions | None = None,
    ) -> GenerationRun:
        """A run for ``prompt``: iterate it for pieces; ``.generation`` then counts tokens."""
        return self._open_run(RunRequest(prompt, tuple(history), options or GenerationOptions()))

    def generate(
        self, prompt: str, *, history: Sequence[ChatTurn] = (), **options: Any
    ) -> Generation:
        """The whole reply; ``options`` are ``GenerationOptions`` fields."""
        run = self.start(prompt, history=history, options=GenerationOptions(**options))
        for _ in run:
            pass
        return run.generation

    def stream(
        self, prompt: str, *, history: Sequence[ChatTurn] = (), **options: Any
    ) -> Iterator[str]:
        """The reply piece by piece; ``options`` are ``GenerationOptions`` fields."""
        yield from self.start(prompt, history=history, options=GenerationOptions(**options))

    @abstractmethod
    def _open_run(self, request: RunRequest) -> GenerationRun:
        """Open one decoding run for ``request``."""


class ConstrainedGeneration(GeneratorBase):
    """A generator that can decode under a ``TokenConstraint`` (copy-from-text clues)."""

    _stop_ids: set[int]
    #: Wrappers that cannot decode under a constraint say False.
    supports_copying: bool = True

    @property
    def end_ids(self) -> set[int]:
        """Token ids that end a reply."""
        return set(self._stop_ids)

    def generate_constrained(
        self,
        prompt: str,
        constraint: TokenConstraint,
        *,
        history: Sequence[ChatTurn] = (),
        max_new_tokens: int = 256,
    ) -> Generation:
        """Greedy reply to ``prompt`` whose every token ``constraint`` allows."""
        options = GenerationOptions(max_new_tokens=max_new_tokens)
        run = self._open_run(RunRequest(prompt, tuple(history), options, constraint))
        for _ in run:
            pass
        return run.generation


class ModelDecoding(ConstrainedGeneration):
    """A ``ConstrainedGeneration`` that decodes on its own causal LM (``model``, ``tokenizer``)
    with the shared ``Decoder``."""

    model: Any
    tokenizer: Any
    max_new_tokens_cap: int
    #: ``False``: no progress bar even for slow replies (the memory back-ends' option).
    show_progress: bool | None = None

    def _checked(self, request: RunRequest) -> int:
        """Check ``request``'s prompt and ``max_new_tokens`` (``1..max_new_tokens_cap``)."""
        check_query(request.prompt)
        return check_max_new_tokens(request.options.max_new_tokens, self.max_new_tokens_cap)

    def _decoder(
        self, ids: Sequence[int], request: RunRequest, *, cache: Any, start_position: int
    ) -> Decoder:
        """A ``Decoder`` for ``request`` that feeds ``ids`` into ``cache`` at ``start_position``."""
        return Decoder(
            self.model,
            self.tokenizer,
            ids,
            request,
            cache=cache,
            start_position=start_position,
            stop_ids=self._stop_ids,
            show_progress=self.show_progress,
        )
