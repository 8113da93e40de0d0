"""Reading text into a compressed KV memory: windowed prefill, per-window selection, positions.

``KVPrefill`` is a part of ``CompressedKVMemory``, not a mixin: it is built from a small frozen
``PrefillInputs`` (the model, its frame, the options) and reads nothing else of its host.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from transformers import DynamicCache

from shared_core.config import KVOptions
from shared_core.errors import (
    InputError,
    LimitError,
)
from shared_core.memory.entry_map import build_token_map
from shared_core.memory.kv_state import KVState, cache_of, joined_map, open_origins
from shared_core.memory.positions import PositionMode, rerotate
from shared_core.memory.reading import (
    document_records,
    document_spans,
    joined_text,
    memorize_bar,
    text_digest,
)
from shared_core.memory.scorers import Scorer, select

#: The smallest window compact positions fall back to.
MIN_WINDOW = 256


@dataclass
class _Reading:
    """A memory being read: the working cache, each layer's entry positions and origins
    (``None``: not kept), and the position the next token takes."""

    cache: DynamicCache
    positions: list[torch.Tensor]
    next_pos: int
    origins: list[torch.Tensor] | None = None


@dataclass(frozen=True)
class PrefillInputs:
    """Everything reading needs: the model and tokenizer, how text is encoded (``encode``: the
    chat format's), the frame's token ids, the options and the scorer they name."""

    model: Any
    tokenizer: Any
    encode: Callable[[str], list[int]]
    name: str
    options: KVOptions
    scorer: Scorer
    max_positions: int
    prefix_ids: tuple[int, ...]
    suffix_ids: tuple[int, ...]
    inv_freq: Any  # RoPE inverse frequencies, or None (no compact positions)


class KVPrefill:
    """The reading part of ``CompressedKVMemory``: prefill window by window, keep what the
    scorer selects, renumber positions when the text outgrows the model."""

    def __init__(self, inputs: PrefillInputs) -> None:
        self.inputs = inputs
        options = inputs.options
        self.model, self.tokenizer, self.name = inputs.model, inputs.tokenizer, inputs.name
        self.window, self.beacon_ratio = options.window, options.beacon_ratio
        self.position_mode, self.compress = options.position_mode, options.compress
        self.reserve_tokens, self.show_progress = options.reserve_tokens, options.show_progress
        self.scorer, self.max_positions = inputs.scorer, inputs.max_positions
        self.prefix_ids, self.suffix_ids = list(inputs.prefix_ids), list(inputs.suffix_ids)
        self._inv_freq = inputs.inv_freq

    def capacity_tokens(self) -> int:
        """About how many text tokens fit at these settings (compact if allowed)."""
        n_max, frame = self.max_positions, len(self.prefix_ids) + len(self.suffix_ids)
        absolute = max(0, n_max - frame - self.reserve_tokens)
        if self.position_mode == "absolute" or self._inv_freq is None:
            return absolute
        window = min(MIN_WINDOW, self.window)
        by_window = (n_max - len(self.prefix_ids) - window) * self.beacon_ratio + window
        by_end = (n_max - frame - self.reserve_tokens) * self.beacon_ratio
        return max(absolute, min(by_window, by_end))

    def _compact_peak(
        self, kept_before: int, tokens: int, window: int, ratio: int
    ) -> tuple[int, int]:
        """(largest position used while reading, entries kept after) in compact mode."""
        kept, peak = kept_before, kept_before
        for start in range(0, tokens, window):
            n = min(window, tokens - start)
            peak = max(peak, kept + n)
            kept += math.ceil(n / ratio)
        return peak, kept

    def _plan(self, base: KVState | None, new_tokens: int) -> tuple[PositionMode, int, int]:
        """Choose the position mode, window and compression ratio for reading ``new_tokens``
        more; refuse if they cannot fit.

        ``compress="always"`` keeps 1/``beacon_ratio`` of every window. ``"when_needed"`` keeps
        everything while the text fits the model's positions; past that it compresses the new
        text at the smallest ratio that fits the positions left, up to ``beacon_ratio``, so the
        ratio grows with the corpus."""
        n_max = self.max_positions
        frame = len(self.prefix_ids) + len(self.suffix_ids)
        text_total = (base.text_tokens if base else 0) + new_tokens
        fits_absolute = (base is None or base.mode == "absolute") and (
            len(self.prefix_ids) + text_total + len(self.suffix_ids) + self.reserve_tokens <= n_max
        )
        if self.position_mode in ("auto", "absolute") and fits_absolute:
            return (
                "absolute",
                self.window,
                1 if self.compress == "when_needed" else self.beacon_ratio,
            )
        if self.position_mode == "absolute":
            raise LimitError(
                f"the text is {text_total:,} tokens; with absolute positions {self.name} holds at "
                f"most {n_max - frame - self.reserve_tokens:,} (its {n_max:,} positions minus the "
                "frame and reserve); use position_mode='auto' or 'compact'"
            )
        if self._inv_freq is None:
            raise LimitError(
                f"the text is {text_total:,} tokens, over {self.name}'s {n_max:,} positions, and "
                "compact positions need a RoPE model"
            )
        kept_before = base.entries - len(self.suffix_ids) if base else len(self.prefix_ids)
        lowest = 1 if self.compress == "when_needed" else self.beacon_ratio
        for ratio in range(lowest, self.beacon_ratio + 1):
            window = self.window
            while window >= min(MIN_WINDOW, self.window):
                peak, kept = self._compact_peak(kept_before, new_tokens, window, ratio)
                if peak <= n_max and kept + len(self.suffix_ids) + self.reserve_tokens <= n_max:
                    return "compact", window, ratio
                window //= 2
        # The entries already kept stay as they are: only the new text can be compressed more.
        room = n_max - kept_before - len(self.suffix_ids) - self.reserve_tokens
        room -= min(MIN_WINDOW, self.window)
        hint = (
            f"raise beacon_ratio to about {math.ceil(new_tokens / room)} or more"
            if room > 0
            else "the positions left after the kept entries, the frame and reserve_tokens are "
            "too few"
        )
        raise LimitError(
            f"the text is {text_total:,} tokens; at beacon_ratio {self.beacon_ratio} "
            f"{self.name}'s {n_max:,} positions hold about {self.capacity_tokens():,}: {hint}, "
            "or split the text into several memories"
        )

    def read(self, base: KVState | None, docs: Sequence[Any], show: bool | None) -> KVState:
        """The state after reading ``docs`` on top of ``base`` (``None``: a new memory);
        ``base`` itself is never changed."""
        started = time.perf_counter()
        joined = joined_text(docs, continuing=base is not None)
        ids = self.inputs.encode(joined)
        doc_spans = document_spans(docs, continuing=base is not None)
        first_doc = len(base.documents) if base is not None else 0
        new_map = build_token_map(self.tokenizer, joined, ids, doc_spans, first_doc)
        if not ids:
            raise InputError("the text encodes to no tokens")
        mode, window, ratio = self._plan(base, len(ids))
        if base is not None and base.mode == "absolute" and mode == "compact":
            base = self.to_compact(base)
        work = self._open(base)
        work.origins = open_origins(base, work.positions, len(self.suffix_ids))
        text_start = base.text_tokens if base else 0
        n_windows = math.ceil(len(ids) / window)
        bar = memorize_bar(len(ids), n_windows, self.show_progress if show is None else show)
        with torch.inference_mode():
            for start in range(0, len(ids), window):
                chunk = ids[start : start + window]
                self._read_window(work, chunk, mode, ratio, text_start + start)
                bar.update(len(chunk))
            bar.close()
            self._append_raw(work, self.suffix_ids)
        origins = work.origins
        return KVState(
            keys=tuple(layer.keys for layer in work.cache.layers),
            values=tuple(layer.values for layer in work.cache.layers),
            positions=tuple(work.positions),
            mode=mode,
            text_tokens=(base.text_tokens if base else 0) + len(ids),
            next_position=work.next_pos,
            windows=(base.windows if base else 0) + n_windows,
            documents=(base.documents if base else ()) + document_records(docs),
            text_sha256=text_digest(base.text_sha256 if base else None, joined),
            seconds=(base.seconds if base else 0.0) + time.perf_counter() - started,
            origins=tuple(origins) if origins is not None and new_map is not None else None,
            token_map=joined_map(base, new_map),
        )

    def _open(self, base: KVState | None) -> _Reading:
        """A working cache: the frame prefix for a new memory, or ``base`` minus its suffix."""
        if base is None:
            work = _Reading(DynamicCache(), [], 0)
            with torch.inference_mode():
                self._append_raw(work, self.prefix_ids)
            return work
        cut = len(self.suffix_ids)
        keys = [k[..., : k.shape[-2] - cut, :] for k in base.keys]
        values = [v[..., : v.shape[-2] - cut, :] for v in base.values]
        positions = [p[:, : p.shape[-1] - cut] for p in base.positions]
        return _Reading(cache_of(keys, values), positions, base.next_position - cut)

    def _forward(self, cache: DynamicCache, ids: Sequence[int], first_pos: int) -> torch.Tensor:
        device = self.model.device
        pos = torch.arange(first_pos, first_pos + len(ids), device=device)
        self.model(
            input_ids=torch.tensor([list(ids)], device=device),
            position_ids=pos[None],
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        return pos

    def _append_raw(self, work: _Reading, ids: Sequence[int]) -> None:
        """Read ``ids`` and keep all their entries (the frame)."""
        if not ids:
            return
        cache, positions, origins = work.cache, work.positions, work.origins
        pos = self._forward(cache, ids, work.next_pos).cpu()
        heads = cache.layers[0].keys.shape[1]
        grid = pos.expand(heads, -1)
        for i in range(len(cache.layers)):
            positions_i = (
                positions[i] if i < len(positions) else torch.empty(heads, 0, dtype=torch.long)
            )
            merged = torch.cat([positions_i, grid], dim=-1)
            if i < len(positions):
                positions[i] = merged
            else:
                positions.append(merged)
            if origins is not None:
                frame = torch.full_like(grid, -1)
                if i < len(origins):
                    origins[i] = torch.cat([origins[i], frame], dim=-1)
                else:
                    origins.append(frame)
        work.next_pos += len(ids)

    def _read_window(
        self, work: _Reading, ids: Sequence[int], mode: PositionMode, ratio: int, text_start: int
    ) -> None:
        """Prefill one window on top of the kept cache, then keep 1/``ratio`` of its entries
        (``text_start``: the window's first token in the whole text, for the origins)."""
        cache, positions, origins, next_pos = (
            work.cache,
            work.positions,
            work.origins,
            work.next_pos,
        )
        before = cache.layers[0].keys.shape[-2]
        pos = self._forward(cache, ids, next_pos).cpu()
        n = len(ids)
        keep = math.ceil(n / ratio)
        for i, layer in enumerate(cache.layers):
            k_new = layer.keys[0, :, before:, :]
            v_new = layer.values[0, :, before:, :]
            heads = k_new.shape[0]
            if keep >= n:
                index = torch.arange(n).expand(heads, -1)
            else:
                index = select(self.scorer.score(k_new, v_new), keep).cpu()
            gather = index.to(k_new.device)[..., None].expand(-1, -1, k_new.shape[-1])
            k_sel = torch.gather(k_new, 1, gather)
            v_sel = torch.gather(v_new, 1, gather)
            p_sel = pos[index]
            if mode == "compact" and keep < n:
                dense = torch.arange(next_pos, next_pos + keep).expand(heads, -1)
                k_sel = rerotate(k_sel, (dense - p_sel).to(k_sel.device), self._inv_freq)
                p_sel = dense.clone()
            layer.keys = torch.cat([layer.keys[..., :before, :], k_sel[None]], dim=-2)
            layer.values = torch.cat([layer.values[..., :before, :], v_sel[None]], dim=-2)
            positions[i] = torch.cat([positions[i], p_sel], dim=-1)
            if origins is not None:
                origins[i] = torch.cat([origins[i], index + text_start], dim=-1)
        work.next_pos = next_pos + (keep if mode == "compact" else n)

    def to_compact(self, state: KVState) -> KVState:
        """Renumber an absolute-position memory densely (used when ``add`` outgrows it)."""
        if self._inv_freq is None:
            raise LimitError("compact positions need a RoPE model")
        keys, positions = [], []
        for k, p in zip(state.keys, state.positions, strict=True):
            dense = torch.arange(p.shape[-1]).expand_as(p)
            keys.append(rerotate(k[0], (dense - p).to(k.device), self._inv_freq)[None])
            positions.append(dense.clone())
        return replace(
            state,
            keys=tuple(keys),
            positions=tuple(positions),
            mode="compact",
            next_position=state.entries,
        )
