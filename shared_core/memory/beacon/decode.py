"""Decoding on a beacon state: each prompt runs on its own fork, so the memory never changes.

``BeaconDecoder`` reuses the engine's shared ``Decoder`` (stop sequences, streaming text,
constraints) and only replaces the model step: tokens go through the beacon machinery, so
generated tokens continue the open window and get beacons like any other input.
``BeaconGenerator`` answers with no memory (a fresh state), the way the MemoRAG memory models
also serve as the generator.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from shared_core.errors import LimitError
from shared_core.inputs import check_query
from shared_core.memory.beacon.engine import BeaconEngine
from shared_core.memory.beacon.state import BeaconState, peak_entries
from shared_core.models.chat_format import ChatFormat
from shared_core.models.decoding import ConstrainedGeneration, Decoder, RunRequest


class BeaconDecoder(Decoder):
    """A ``Decoder`` whose steps feed a private copy of a ``BeaconState``."""

    def __init__(
        self,
        engine: BeaconEngine,
        tokenizer: Any,
        prompt_ids: Sequence[int],
        state: BeaconState,
        request: RunRequest,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            engine.model, tokenizer, prompt_ids, request, cache=None, start_position=0, **kwargs
        )
        self.engine = engine
        self.state = state

    def _step(self, ids: Sequence[int]) -> torch.Tensor:
        self.state, logits = self.engine.feed(self.state, ids, logits="last")
        assert logits is not None
        return logits.float()


def check_room(
    state: BeaconState, n_prompt: int, max_new_tokens: int, max_positions: int, name: str
) -> None:
    """Refuse a prompt whose window steps would run past the model's positions."""
    peak = peak_entries(state, n_prompt + max_new_tokens)
    if peak > max_positions:
        raise LimitError(
            f"the prompt is {n_prompt:,} tokens and asks for {max_new_tokens:,} more; with the "
            f"memory's {state.entries:,} entries that needs {peak:,} of {name}'s "
            f"{max_positions:,} positions; shorten the prompt/history or lower max_new_tokens"
        )


class BeaconGenerator(ConstrainedGeneration):
    """A ``TextGenerator`` on the beacon model with no memory (long prompts still compress)."""

    def __init__(
        self,
        engine: BeaconEngine,
        tokenizer: Any,
        *,
        name: str,
        ratio: int,
        stop_ids: set[int],
        max_new_tokens_cap: int = 4096,
    ) -> None:
        self.engine, self.tokenizer, self.name, self.ratio = engine, tokenizer, name, ratio
        self.format = ChatFormat(tokenizer)
        self.max_new_tokens_cap = max_new_tokens_cap
        self._stop_ids = stop_ids

    def _open_run(self, request: RunRequest) -> BeaconDecoder:
        self.check(request)
        ids = self.format.plain(request.history, request.prompt)
        return self.continuing(self.engine.empty(self.ratio), ids, request)

    def check(self, request: RunRequest) -> None:
        """Refuse an empty prompt or a ``max_new_tokens`` over the cap (0 is allowed)."""
        check_query(request.prompt)
        max_new_tokens, cap = request.options.max_new_tokens, self.max_new_tokens_cap
        if max_new_tokens > cap:
            raise LimitError(f"max_new_tokens={max_new_tokens} is outside 0..{cap}")

    def continuing(
        self, state: BeaconState, ids: Sequence[int], request: RunRequest
    ) -> BeaconDecoder:
        """A run for ``request`` that feeds ``ids`` into a private copy of ``state``."""
        positions = self.engine.config.max_position_embeddings
        check_room(state, len(ids), request.options.max_new_tokens, positions, self.name)
        return BeaconDecoder(
            self.engine, self.tokenizer, ids, state, request, stop_ids=self._stop_ids
        )

    def count_tokens(self, text: str) -> int:
        return len(self.format.encode(text))
