"""The beacon memory's bookkeeping: immutable states, chunk plans, and what a step keeps.

A state holds, per layer, the K/V of the beacons of all closed windows and the *raw tail*
(the open window's raw tokens and beacons, in order, with their flags), keys before RoPE.
Input is consumed in chunks that end at the open window's end; a beacon follows every raw
token whose 1-based index in its window is a multiple of ``ratio``. When a chunk closes the
window, only its flagged entries (``window / ratio`` beacons) are kept. A step returns a *new*
state and never writes tensors in place, so a prompt forks a state for free and concurrent
prompts never see each other's tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

from shared_core.memory.beacon.model import KV


@dataclass(frozen=True)
class ChunkPlan:
    """One window step: the raw tokens it consumes and the entries it feeds."""

    raw: tuple[int, ...]
    entries: tuple[int, ...]  # raw ids with the beacon id interleaved
    flags: tuple[bool, ...]  # True where ``entries`` holds a beacon
    closes_window: bool
    remainder_after: int

    @property
    def n_beacons(self) -> int:
        return sum(self.flags)

    @property
    def raw_rows(self) -> list[int]:
        return [i for i, f in enumerate(self.flags) if not f]


@dataclass(frozen=True)
class BeaconState:
    """What the memory holds after some input; upstream's cursor names in comments."""

    ratio: int
    window: int
    beacon_kv: tuple[KV, ...] = ()  # per layer [1, kv_heads, n_beacons, head_dim]
    tail_kv: tuple[KV, ...] = ()  # per layer [1, kv_heads, n_tail, head_dim]
    tail_flags: tuple[bool, ...] = ()  # flags of the raw tail (1 = beacon)
    window_start: int = 0  # _start_idx: raw tokens before the open window
    consumed: int = 0  # _end_idx: raw tokens read so far
    remainder: int = 0  # _interleave_remainder: raw tokens since the last beacon
    beacon_sizes: tuple[int, ...] = ()  # _all_beacon_sizes: beacons inserted per step
    closed_last: bool = False  # _is_full_window

    @property
    def n_beacons(self) -> int:
        """Beacons retained from closed windows."""
        return int(self.beacon_kv[0][0].shape[-2]) if self.beacon_kv else 0

    @property
    def n_tail(self) -> int:
        return len(self.tail_flags)

    @property
    def entries(self) -> int:
        """Memory entries per layer and KV head (``M``, also the next position)."""
        return self.n_beacons + self.n_tail

    @property
    def steps(self) -> int:
        return len(self.beacon_sizes)

    @property
    def beacons_inserted(self) -> int:
        return sum(self.beacon_sizes)

    def past(self) -> list[KV] | None:
        """Per layer ``cat[beacons, raw tail]`` (what the next step attends to)."""
        if not self.beacon_kv and not self.tail_kv:
            return None
        if not self.tail_kv:
            return list(self.beacon_kv)
        if not self.beacon_kv:
            return list(self.tail_kv)
        return [
            (torch.cat([bk, tk], dim=-2), torch.cat([bv, tv], dim=-2))
            for (bk, bv), (tk, tv) in zip(self.beacon_kv, self.tail_kv, strict=True)
        ]

    def nbytes(self) -> int:
        return sum(
            t.numel() * t.element_size() for kv in (*self.beacon_kv, *self.tail_kv) for t in kv
        )


def plan_chunk(state: BeaconState, pending: Sequence[int], beacon_id: int) -> ChunkPlan:
    """The next step for ``pending`` raw ids: up to the open window's end."""
    room = state.window_start + state.window - state.consumed
    raw = tuple(pending[:room])
    entries: list[int] = []
    flags: list[bool] = []
    since = state.remainder
    for token in raw:
        entries.append(token)
        flags.append(False)
        since += 1
        if since == state.ratio:
            entries.append(beacon_id)
            flags.append(True)
            since = 0
    return ChunkPlan(
        raw=raw,
        entries=tuple(entries),
        flags=tuple(flags),
        closes_window=len(raw) == room,
        remainder_after=since,
    )


def advance(state: BeaconState, plan: ChunkPlan, kv: Sequence[KV]) -> BeaconState:
    """The state after ``plan`` ran and produced ``kv`` (per layer, its entries' K/V)."""
    if state.tail_kv:
        tail = [
            (torch.cat([tk, k], dim=-2), torch.cat([tv, v], dim=-2))
            for (tk, tv), (k, v) in zip(state.tail_kv, kv, strict=True)
        ]
    else:
        tail = list(kv)
    flags = state.tail_flags + plan.flags
    common = {
        "consumed": state.consumed + len(plan.raw),
        "remainder": plan.remainder_after,
        "beacon_sizes": (*state.beacon_sizes, plan.n_beacons),
        "closed_last": plan.closes_window,
    }
    if not plan.closes_window:
        return replace(state, tail_kv=tuple(tail), tail_flags=flags, **common)
    keep = torch.tensor([i for i, f in enumerate(flags) if f], dtype=torch.long)
    kept: list[KV] = []
    for i, (k, v) in enumerate(tail):
        index = keep.to(k.device)
        new_k, new_v = k.index_select(-2, index), v.index_select(-2, index)
        if state.beacon_kv:
            bk, bv = state.beacon_kv[i]
            new_k, new_v = torch.cat([bk, new_k], dim=-2), torch.cat([bv, new_v], dim=-2)
        kept.append((new_k, new_v))
    return replace(
        state,
        beacon_kv=tuple(kept),
        tail_kv=(),
        tail_flags=(),
        window_start=state.window_start + state.window,
        **common,
    )


def peak_entries(state: BeaconState, n_raw: int) -> int:
    """The largest ``M + T`` (positions used) while ``n_raw`` more raw tokens are read."""
    beacons, tail, start, consumed, rem = (
        state.n_beacons,
        state.n_tail,
        state.window_start,
        state.consumed,
        state.remainder,
    )
    peak = beacons + tail
    left = n_raw
    while left > 0:
        room = start + state.window - consumed
        n = min(left, room)
        added = n + (n + rem) // state.ratio
        peak = max(peak, beacons + tail + added)
        rem = (n + rem) % state.ratio
        left -= n
        consumed += n
        if n == room:
            beacons += state.window // state.ratio
            tail, start = 0, start + state.window
        else:
            tail += added
    return peak
