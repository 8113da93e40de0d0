"""What a compressed KV memory holds (an immutable state) and the fork caches prompts run on."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from shared_core.memory.entry_map import TokenMap
from shared_core.memory.positions import PositionMode


@dataclass(frozen=True)
class KVState:
    """An immutable snapshot of what the memory holds (tensors are never written in place)."""

    keys: tuple[torch.Tensor, ...]  # per layer [1, heads, entries, head_dim]
    values: tuple[torch.Tensor, ...]
    positions: tuple[torch.Tensor, ...]  # per layer [heads, entries] (int64)
    mode: PositionMode
    text_tokens: int  # text tokens read (excludes the frame)
    next_position: int  # rotary position of the first token after the memory
    windows: int
    documents: tuple[dict[str, Any], ...]
    text_sha256: str
    seconds: float
    # Where entries came from (see entry_map.py): per layer [heads, entries] text-token index
    # (-1: frame), and per text token its document and char; None for memories saved without.
    origins: tuple[torch.Tensor, ...] | None = None
    token_map: TokenMap | None = None

    @property
    def entries(self) -> int:
        return int(self.keys[0].shape[-2]) if self.keys else 0


def open_origins(
    base: KVState | None, positions: Sequence[torch.Tensor], cut: int
) -> list[torch.Tensor] | None:
    """Entry origins of a working cache: the prefix's (all frame) or ``base``'s minus its suffix."""
    if base is None:
        return [torch.full_like(p, -1) for p in positions]
    if base.origins is None:
        return None
    return [o[:, : o.shape[-1] - cut] for o in base.origins]


def joined_map(base: KVState | None, new: TokenMap | None) -> TokenMap | None:
    if new is None or (base is not None and base.token_map is None):
        return None
    return new if base is None else base.token_map.extend(new)


def cache_of(
    keys: Sequence[torch.Tensor], values: Sequence[torch.Tensor], *, room: int = 0
) -> DynamicCache:
    """A cache whose layers start from ``keys``/``values`` without writing them.

    With ``room`` > 0 each layer copies the memory once into a buffer with space for ``room``
    more entries, so decoding appends in place instead of re-copying the memory every token.
    """
    cache = DynamicCache()
    for k, v in zip(keys, values, strict=True):
        layer = ForkLayer(k, v, room) if room > 0 else DynamicLayer()
        if room <= 0:
            layer.lazy_initialization(k, v)
            layer.keys, layer.values = k, v
        cache.layers.append(layer)
    return cache


class ForkLayer(DynamicLayer):
    """A cache layer over a memory's tensors that grows inside its own preallocated buffer."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, room: int) -> None:
        super().__init__()
        self.lazy_initialization(keys, values)
        self.keys, self.values = keys, values
        self._room = room
        self._buffers: tuple[torch.Tensor, torch.Tensor] | None = None

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        used, extra = self.keys.shape[-2], key_states.shape[-2]
        if self._buffers is None or used + extra > self._buffers[0].shape[-2]:
            size = used + extra + self._room
            k_buf = self.keys.new_empty((*self.keys.shape[:-2], size, self.keys.shape[-1]))
            v_buf = self.values.new_empty((*self.values.shape[:-2], size, self.values.shape[-1]))
            k_buf[..., :used, :] = self.keys
            v_buf[..., :used, :] = self.values
            self._buffers = (k_buf, v_buf)
        k_buf, v_buf = self._buffers
        k_buf[..., used : used + extra, :] = key_states
        v_buf[..., used : used + extra, :] = value_states
        self.keys, self.values = k_buf[..., : used + extra, :], v_buf[..., : used + extra, :]
        return self.keys, self.values
