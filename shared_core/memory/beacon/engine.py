"""Runs input through the beacon model, window step by window step, state to state."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from shared_core.memory.beacon.model import BeaconForCausalLM
from shared_core.memory.beacon.state import BeaconState, ChunkPlan, advance, plan_chunk

LogitsWanted = Literal["last", "raw", "none"]


@dataclass(frozen=True)
class StepTrace:
    """What one window step fed (for tests and debugging)."""

    entries: tuple[int, ...]
    window_flags: tuple[bool, ...]  # flags of the whole open window, this chunk included
    mem_size: int
    beacon_size: int
    closes_window: bool
    window_start_after: int
    consumed_after: int
    remainder_after: int


class BeaconEngine:
    """Feeds raw token ids into a ``BeaconState`` with a ``BeaconForCausalLM``."""

    def __init__(self, model: BeaconForCausalLM) -> None:
        self.model = model
        self.config = model.config

    def empty(self, ratio: int | None = None) -> BeaconState:
        """A state with nothing read, compressing at ``ratio`` (default: the config's)."""
        cfg = self.config if ratio is None else self.config.with_ratio(ratio)
        return BeaconState(ratio=cfg.ratio, window=cfg.beacon_window)

    @torch.inference_mode()
    def feed(
        self,
        state: BeaconState,
        ids: Sequence[int],
        *,
        logits: LogitsWanted = "last",
        trace: list[StepTrace] | None = None,
        progress: Callable[[int], Any] | None = None,
    ) -> tuple[BeaconState, torch.Tensor | None]:
        """Read ``ids``; return the new state and the last step's logits.

        ``logits="raw"`` gives ``[1, k, vocab]`` for the raw tokens of the last step (what
        upstream returns), ``"last"`` ``[vocab]`` for the last raw token, ``"none"`` nothing.
        """
        pending = list(ids)
        out: torch.Tensor | None = None
        while pending:
            plan = plan_chunk(state, pending, self.config.beacon_token_id)
            pending = pending[len(plan.raw) :]
            last = not pending
            rows = None
            if last and logits != "none":
                raw_rows = plan.raw_rows
                rows = torch.tensor(raw_rows if logits == "raw" else raw_rows[-1:])
            state, step_logits = self._step(state, plan, rows, trace)
            if step_logits is not None:
                out = step_logits if logits == "raw" else step_logits[0, -1]
            if progress is not None:
                progress(len(plan.raw))
        return state, out

    def _step(
        self,
        state: BeaconState,
        plan: ChunkPlan,
        rows: torch.Tensor | None,
        trace: list[StepTrace] | None,
    ) -> tuple[BeaconState, torch.Tensor | None]:
        device = self.model.device
        ids = torch.tensor([plan.entries], dtype=torch.long, device=device)
        beacons = None
        if plan.n_beacons:
            beacons = torch.tensor(
                [i for i, f in enumerate(plan.flags) if f], dtype=torch.long, device=device
            )
        mem_size = state.entries
        out = self.model.step(ids, beacons, state.past(), logit_rows=rows)
        new = advance(state, plan, out.kv)
        if trace is not None:
            trace.append(
                StepTrace(
                    entries=plan.entries,
                    window_flags=state.tail_flags + plan.flags,
                    mem_size=mem_size,
                    beacon_size=plan.n_beacons,
                    closes_window=plan.closes_window,
                    window_start_after=new.window_start,
                    consumed_after=new.consumed,
                    remainder_after=new.remainder,
                )
            )
        return new, out.logits

    @torch.inference_mode()
    def native(self, ids: Sequence[int], *, output_hidden_states: bool = False) -> Any:
        """The base model with no beacons and no memory: logits of every position."""
        tensor = torch.tensor([list(ids)], dtype=torch.long, device=self.model.device)
        return self.model.step(
            tensor,
            None,
            None,
            logit_rows=torch.arange(len(ids)),
            output_hidden_states=output_hidden_states,
        )
