"""Token-by-token decoding over a KV cache, with streaming text and stop sequences.

Used by every memory back-end and by the plain generator: greedy by default (deterministic),
temperature sampling with a fixed seed when asked. An optional ``TokenConstraint`` masks the
logits at each step (copy-from-text clues).
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import Any, Protocol

import torch

from shared_core.types import Generation


class TokenConstraint(Protocol):
    """Restricts which token a decoder may emit next."""

    def allowed(self) -> Sequence[int] | None:
        """Token ids allowed next (``None``: any)."""
        ...

    def advance(self, token: int) -> None:
        """Record the token the decoder emitted."""
        ...


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


class Decoder:
    """One decoding run; iterate it for text pieces, then read ``generation``."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        prompt_ids: Sequence[int],
        *,
        cache: Any,
        start_position: int,
        max_new_tokens: int,
        stop: Sequence[str] = (),
        temperature: float = 0.0,
        seed: int = 0,
        stop_ids: set[int] | None = None,
        constraint: TokenConstraint | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.prompt_ids = list(prompt_ids)
        self.cache = cache
        self.position = start_position
        self.max_new_tokens = max_new_tokens
        self.stop = [s for s in stop if s]
        self.temperature = temperature
        self.generator = torch.Generator().manual_seed(seed)
        self.stop_ids = stop_ids if stop_ids is not None else eos_ids(model, tokenizer)
        self.constraint = constraint
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

    def __iter__(self) -> Generator[str, None, Generation]:
        """Yield the reply's text pieces; the generator returns the finished ``generation``."""
        if self.max_new_tokens <= 0:
            return self.generation
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
                logits = self._step([token])
        if len(self.text) > emitted:
            yield self.text[emitted:]
        return self.generation

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


class ConstrainedGeneration:
    """Mixin for generators whose ``_decoder(prompt, history, max_new_tokens, stop,
    temperature, constraint)`` builds a ``Decoder``: adds constrained decoding."""

    _stop_ids: set[int]

    @property
    def end_ids(self) -> set[int]:
        """Token ids that end a reply."""
        return set(self._stop_ids)

    def generate_constrained(
        self,
        prompt: str,
        constraint: TokenConstraint,
        *,
        history: Sequence[Any] = (),
        max_new_tokens: int = 256,
    ) -> Generation:
        """Greedy reply to ``prompt`` whose every token ``constraint`` allows."""
        run = self._decoder(prompt, history, max_new_tokens, (), 0.0, constraint)  # type: ignore[attr-defined]
        return run.run()
