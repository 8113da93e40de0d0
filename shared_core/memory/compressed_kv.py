"""Compressed KV memory: a training-free stand-in for Activation Beacon, for any HF causal LM.

The text is prefilled window by window into one KV cache. After each window only
``ceil(window / beacon_ratio)`` of its entries are kept per layer and KV head, chosen by a
query-agnostic scorer; the window's other entries are dropped before the next window, so peak
memory is the kept cache plus one window. ``beacon_ratio=1`` keeps everything (full KV).

Positions: ``absolute`` keeps every entry at its true text position; ``compact`` renumbers kept
entries densely, re-rotating their keys, so a model trained on N positions reads about
``N * beacon_ratio`` tokens. ``auto`` picks absolute while the text fits, else compact.

Prompts never change the memory: each one runs on a *fork* of the cache whose layers point at
the kept tensors; transformers' cache grows by concatenation (new tensors), so the memory's
tensors are never written and rollback is free. That also makes one memory safe to share
between threads.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from shared_core.errors import (
    IncompatibleMemoryError,
    InputError,
    LimitError,
    NoMemoryError,
    PersistenceError,
)
from shared_core.inputs import ContextInput, as_documents, check_max_new_tokens, check_query
from shared_core.memory.attention_probe import (
    NULL_QUERY,
    EntryAttention,
    entry_mass,
    question_rows,
)
from shared_core.memory.base import Memory, MemoryStats
from shared_core.memory.entry_map import TokenMap, build_token_map
from shared_core.memory.kv_files import state_metadata
from shared_core.memory.positions import PositionMode, rerotate, rope_inv_freq
from shared_core.memory.scorers import Scorer, get_scorer, select
from shared_core.models.chat_format import ChatFormat, frame_texts
from shared_core.models.decoding import ConstrainedGeneration, Decoder, TokenConstraint, eos_ids
from shared_core.models.generation import LocalGenerator
from shared_core.models.loading import (
    LoadedLM,
    load_causal_lm,
    model_fingerprint,
    tokenizer_fingerprint,
)
from shared_core.persistence.files import describe_difference, short
from shared_core.types import ChatTurn, GenerationOptions

_TENSORS = "memory.safetensors"
_MIN_WINDOW = 256


@dataclass(frozen=True)
class _State:
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


class CompressedKVMemory(ConstrainedGeneration, Memory):
    """A global memory kept as a compressed KV cache of one causal LM."""

    backend = "compressed_kv"

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        name: str | None = None,
        revision: str = "local",
        beacon_ratio: int = 4,
        window: int = 2048,
        scorer: str | Scorer = "key_norm",
        position_mode: str = "auto",
        intro: str | None = None,
        ack: str | None = None,
        reserve_tokens: int = 512,
        max_chars: int | None = 4_000_000,
        max_documents: int | None = 10_000,
        max_new_tokens_cap: int = 4096,
        show_progress: bool | None = None,
        compress: str = "always",
    ) -> None:
        if compress not in ("always", "when_needed"):
            raise InputError(f"compress must be 'always' or 'when_needed', got {compress!r}")
        if isinstance(beacon_ratio, bool) or not isinstance(beacon_ratio, int) or beacon_ratio < 1:
            raise InputError(f"beacon_ratio must be an int >= 1, got {beacon_ratio!r}")
        if isinstance(window, bool) or not isinstance(window, int) or window < 16:
            raise InputError(f"window must be an int >= 16, got {window!r}")
        if position_mode not in ("auto", "absolute", "compact"):
            raise InputError(f"position_mode must be auto, absolute or compact: {position_mode!r}")
        self.model = model
        self.tokenizer = tokenizer
        self.name = name or str(getattr(model.config, "name_or_path", "") or "model")
        self.revision = revision
        self.beacon_ratio = beacon_ratio
        # "when_needed": keep every entry while the text fits the model's positions (absolute
        # mode), compress at beacon_ratio only once it does not (docs/heads.md: the retrieval
        # heads lose much of their signal under key-norm compression).
        self.compress = compress
        self.window = window
        self.scorer = get_scorer(scorer)
        self.position_mode = position_mode
        self.reserve_tokens = reserve_tokens
        self.max_chars = max_chars
        self.max_documents = max_documents
        self.max_new_tokens_cap = max_new_tokens_cap
        self.show_progress = show_progress
        intro, ack = frame_texts(intro, ack)
        self.intro, self.ack = intro, ack
        self.format = ChatFormat(tokenizer)
        self.prefix_ids, self.suffix_ids = self.format.frame(intro, ack)
        self.max_positions = int(getattr(model.config, "max_position_embeddings", 0) or 1 << 30)
        self._inv_freq = rope_inv_freq(model)
        self._stop_ids = eos_ids(model, tokenizer)
        self._state: _State | None = None
        self._lineage = uuid.uuid4().hex
        self._write_lock = threading.Lock()
        self._null_mass: dict[tuple[Any, ...], torch.Tensor] = {}
        cfg = model.config
        n_kv = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
        self._group = int(cfg.num_attention_heads) // int(n_kv)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | None = None,
        *,
        cache_dir: str | None = None,
        access_token: str | None = None,
        device: str | None = "auto",
        dtype: Any = None,
        load_in_4bit: bool = False,
        **kwargs: Any,
    ) -> CompressedKVMemory:
        """Load a model by hub id or path (``None`` = the embedded SmolLM2) and wrap it."""
        lm: LoadedLM = load_causal_lm(
            name_or_path,
            cache_dir=cache_dir,
            access_token=access_token,
            device=device,
            dtype=dtype,
            load_in_4bit=load_in_4bit,
        )
        return cls(lm.model, lm.tokenizer, name=lm.name, revision=lm.revision, **kwargs)

    # -- capacity ---------------------------------------------------------------------------
    def _compact_peak(self, kept_before: int, tokens: int, window: int) -> tuple[int, int]:
        """(largest position used while reading, entries kept after) in compact mode."""
        kept, peak = kept_before, kept_before
        for start in range(0, tokens, window):
            n = min(window, tokens - start)
            peak = max(peak, kept + n)
            kept += math.ceil(n / self.beacon_ratio)
        return peak, kept

    def _plan(self, base: _State | None, new_tokens: int) -> tuple[PositionMode, int]:
        """Choose the position mode and window for reading ``new_tokens`` more; refuse if over."""
        n_max = self.max_positions
        frame = len(self.prefix_ids) + len(self.suffix_ids)
        text_total = (base.text_tokens if base else 0) + new_tokens
        fits_absolute = (base is None or base.mode == "absolute") and (
            len(self.prefix_ids) + text_total + len(self.suffix_ids) + self.reserve_tokens <= n_max
        )
        if self.position_mode in ("auto", "absolute") and fits_absolute:
            return "absolute", self.window
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
        window = self.window
        while window >= min(_MIN_WINDOW, self.window):
            peak, kept = self._compact_peak(kept_before, new_tokens, window)
            if peak <= n_max and kept + len(self.suffix_ids) + self.reserve_tokens <= n_max:
                return "compact", window
            window //= 2
        room = n_max - frame - self.reserve_tokens - min(_MIN_WINDOW, self.window)
        hint = (
            f"raise beacon_ratio to about {math.ceil(text_total / room)} or more"
            if room > 0
            else "the model's positions leave no room after the frame and reserve_tokens"
        )
        raise LimitError(
            f"the text is {text_total:,} tokens; at beacon_ratio {self.beacon_ratio} "
            f"{self.name}'s {n_max:,} positions hold about {self.capacity_tokens():,}: {hint}, "
            "or split the text into several memories"
        )

    def capacity_tokens(self) -> int:
        """About how many text tokens fit at the current settings (compact if allowed)."""
        n_max, frame = self.max_positions, len(self.prefix_ids) + len(self.suffix_ids)
        absolute = max(0, n_max - frame - self.reserve_tokens)
        if self.position_mode == "absolute" or self._inv_freq is None:
            return absolute
        window = min(_MIN_WINDOW, self.window)
        by_window = (n_max - len(self.prefix_ids) - window) * self.beacon_ratio + window
        by_end = (n_max - frame - self.reserve_tokens) * self.beacon_ratio
        return max(absolute, min(by_window, by_end))

    # -- reading ----------------------------------------------------------------------------
    @property
    def is_empty(self) -> bool:
        return self._state is None

    @property
    def lineage(self) -> str:
        return self._lineage

    def memorize(self, context: ContextInput, *, show_progress: bool | None = None) -> MemoryStats:
        docs = as_documents(context, max_documents=self.max_documents, max_chars=self.max_chars)
        with self._write_lock:
            state = self._read(None, docs, show_progress)
            self._state, self._lineage = state, uuid.uuid4().hex
        return self.stats()

    def add(self, context: ContextInput, *, show_progress: bool | None = None) -> MemoryStats:
        # Reliability: numbering, the duplicate check and the read all happen under the write
        # lock, so two concurrent add() calls cannot both build on the same state (one lost).
        with self._write_lock:
            base = self._state
            start = len(base.documents) if base is not None else 0
            docs = as_documents(
                context,
                start_index=start,
                max_documents=self.max_documents,
                max_chars=self.max_chars,
            )
            known = {d["doc_id"] for d in base.documents} if base is not None else set()
            for doc in docs:
                if doc.doc_id in known:
                    raise InputError(f"document {doc.doc_id!r} is already in the memory")
            state = self._read(base, docs, show_progress)
            if base is None:  # add() on an empty memory is memorize(): a new lineage
                self._lineage = uuid.uuid4().hex
            self._state = state
        return self.stats()

    def _read(self, base: _State | None, docs: Sequence[Any], show: bool | None) -> _State:
        started = time.perf_counter()
        joined = "\n\n".join(d.text for d in docs)
        if base is not None:
            joined = "\n\n" + joined
        ids = self.format.encode(joined)
        doc_spans, at = [], 2 if base is not None else 0
        for d in docs:
            doc_spans.append((at, at + len(d.text)))
            at += len(d.text) + 2
        first_doc = len(base.documents) if base is not None else 0
        new_map = build_token_map(self.tokenizer, joined, ids, doc_spans, first_doc)
        if not ids:
            raise InputError("the text encodes to no tokens")
        mode, window = self._plan(base, len(ids))
        if base is not None and base.mode == "absolute" and mode == "compact":
            base = self._to_compact(base)
        cache, positions, next_pos = self._open(base)
        origins = _open_origins(base, positions, len(self.suffix_ids))
        text_start = base.text_tokens if base else 0
        n_windows = math.ceil(len(ids) / window)
        show = self.show_progress if show is None else show
        bar = tqdm(
            total=len(ids),
            unit="tok",
            desc="memorize",
            disable=not (show if show is not None else n_windows >= 8),
            leave=False,
        )
        with torch.inference_mode():
            for start in range(0, len(ids), window):
                chunk = ids[start : start + window]
                next_pos = self._read_window(
                    cache, positions, chunk, next_pos, mode, origins, text_start + start
                )
                bar.update(len(chunk))
            bar.close()
            next_pos = self._append_raw(cache, positions, self.suffix_ids, next_pos, mode, origins)
        digest = hashlib.sha256(bytes.fromhex(base.text_sha256) if base else b"")
        digest.update(joined.encode("utf-8"))
        records = tuple(
            {"doc_id": d.doc_id, "chars": len(d.text), "metadata_keys": sorted(d.metadata)}
            for d in docs
        )
        return _State(
            keys=tuple(layer.keys for layer in cache.layers),
            values=tuple(layer.values for layer in cache.layers),
            positions=tuple(positions),
            mode=mode,
            text_tokens=(base.text_tokens if base else 0) + len(ids),
            next_position=next_pos,
            windows=(base.windows if base else 0) + n_windows,
            documents=(base.documents if base else ()) + records,
            text_sha256=digest.hexdigest(),
            seconds=(base.seconds if base else 0.0) + time.perf_counter() - started,
            origins=tuple(origins) if origins is not None and new_map is not None else None,
            token_map=_joined_map(base, new_map),
        )

    def _open(self, base: _State | None) -> tuple[DynamicCache, list[torch.Tensor], int]:
        """A working cache: the frame prefix for a new memory, or ``base`` minus its suffix."""
        if base is None:
            cache = DynamicCache()
            positions: list[torch.Tensor] = []
            with torch.inference_mode():
                next_pos = self._append_raw(cache, positions, self.prefix_ids, 0, "absolute")
            return cache, positions, next_pos
        cut = len(self.suffix_ids)
        keys = [k[..., : k.shape[-2] - cut, :] for k in base.keys]
        values = [v[..., : v.shape[-2] - cut, :] for v in base.values]
        positions = [p[:, : p.shape[-1] - cut] for p in base.positions]
        next_pos = base.next_position - cut
        return _cache_of(keys, values), positions, next_pos

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

    def _append_raw(
        self,
        cache: DynamicCache,
        positions: list[torch.Tensor],
        ids: Sequence[int],
        next_pos: int,
        mode: PositionMode,
        origins: list[torch.Tensor] | None = None,
    ) -> int:
        """Read ``ids`` and keep all their entries (the frame)."""
        if not ids:
            return next_pos
        pos = self._forward(cache, ids, next_pos).cpu()
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
        return next_pos + len(ids)

    def _read_window(
        self,
        cache: DynamicCache,
        positions: list[torch.Tensor],
        ids: Sequence[int],
        next_pos: int,
        mode: PositionMode,
        origins: list[torch.Tensor] | None = None,
        text_start: int = 0,
    ) -> int:
        """Prefill one window on top of the kept cache, then keep 1/ratio of its entries."""
        before = cache.layers[0].keys.shape[-2]
        pos = self._forward(cache, ids, next_pos).cpu()
        n = len(ids)
        lossless = self.beacon_ratio == 1 or (self.compress == "when_needed" and mode == "absolute")
        keep = n if lossless else math.ceil(n / self.beacon_ratio)
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
        return next_pos + (keep if mode == "compact" else n)

    def _to_compact(self, state: _State) -> _State:
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

    # -- prompting --------------------------------------------------------------------------
    def _open_run(
        self,
        prompt: str,
        history: tuple[ChatTurn, ...],
        options: GenerationOptions,
        constraint: TokenConstraint | None,
    ) -> Decoder:
        state = self._state
        if state is None:
            raise NoMemoryError("this memory is empty: call memorize(text) or load(dir) first")
        check_query(prompt)
        max_new_tokens = options.max_new_tokens
        check_max_new_tokens(max_new_tokens, self.max_new_tokens_cap)
        ids = self.format.continuation(self.intro, self.ack, history, prompt)
        room = self.max_positions - state.next_position
        if len(ids) >= room:
            # Reliability: the prompt alone is too long (e.g. a 50,000-character query): say
            # so, rather than suggest a max_new_tokens the caller may never have set.
            raise LimitError(
                f"the prompt (query, history and instructions) is {len(ids):,} tokens, but the "
                f"memory leaves {room:,} of {self.name}'s {self.max_positions:,} positions; "
                "shorten the prompt/history (the query or the earlier turns)"
            )
        if len(ids) + max_new_tokens > room:
            raise LimitError(
                f"the prompt is {len(ids):,} tokens and asks for {max_new_tokens:,} more, but the "
                f"memory leaves {room:,} of {self.name}'s {self.max_positions:,} positions; "
                "shorten the prompt/history or lower max_new_tokens"
            )
        return Decoder(
            self.model,
            self.tokenizer,
            ids,
            cache=_cache_of(state.keys, state.values, room=len(ids) + max_new_tokens + 1),
            start_position=state.next_position,
            options=options,
            stop_ids=self._stop_ids,
            constraint=constraint,
        )

    def answer_generator(self) -> LocalGenerator:
        """A plain generator over the same weights (no memory, no second copy)."""
        return LocalGenerator(self.model, self.tokenizer, name=self.name)

    # -- attention onto entries (memory-native retrieval) --------------------------------------
    def entry_attention(self, query: str, heads: Sequence[tuple[int, int]]) -> EntryAttention:
        """Calibrated attention of ``heads`` ((layer, query head)) from ``query`` onto each entry.

        One pass of the query (framed as ``generate`` frames prompts) over a fork of the cache,
        minus the same pass for the content-free question ``"N/A"`` (cached per memory state).
        Refused for a memory saved without entry origins.
        """
        state = self._state
        if state is None:
            raise NoMemoryError("this memory is empty: call memorize(text) or load(dir) first")
        if state.origins is None or state.token_map is None:
            raise IncompatibleMemoryError(
                "this memory keeps no entry origins (saved by an older version or read with a "
                "tokenizer without offsets): memorize the text again to rank by attention"
            )
        check_query(query)
        key = (id(state), tuple(heads))
        null = self._null_mass.get(key)
        if null is None:
            null = self._query_mass(state, NULL_QUERY, query, heads)
            self._null_mass = {key: null}
        mass = self._query_mass(state, query, NULL_QUERY, heads) - null
        origins = torch.stack([state.origins[layer][h // self._group] for layer, h in heads])
        return EntryAttention(tuple(heads), mass, origins, state.token_map)

    def _query_mass(
        self, state: _State, query: str, other: str, heads: Sequence[tuple[int, int]]
    ) -> torch.Tensor:
        ids = self.format.continuation(self.intro, self.ack, (), query)
        rows = question_rows(ids, self.format.continuation(self.intro, self.ack, (), other))
        if state.next_position + len(ids) > self.max_positions:
            raise LimitError(
                f"the query is {len(ids):,} tokens; the memory leaves "
                f"{self.max_positions - state.next_position:,} positions"
            )
        cache = _cache_of(state.keys, state.values)
        return entry_mass(self.model, cache, ids, state.next_position, rows, heads, state.entries)

    # -- introspection ----------------------------------------------------------------------
    def stats(self) -> MemoryStats:
        state = self._state
        extra = {"model": self.name, "scorer": self.scorer.name}
        if state is None:
            return MemoryStats(
                backend=self.backend,
                beacon_ratio=self.beacon_ratio,
                window=self.window,
                capacity_tokens=self.capacity_tokens(),
                extra=extra,
            )
        per_entry = sum(
            k.shape[1] * k.shape[-1] * k.element_size()
            + v.shape[1] * v.shape[-1] * v.element_size()
            for k, v in zip(state.keys, state.values, strict=True)
        )
        frame = len(self.prefix_ids) + len(self.suffix_ids)
        return MemoryStats(
            backend=self.backend,
            tokens_read=state.text_tokens,
            documents=len(state.documents),
            windows=state.windows,
            kv_entries=state.entries,
            memory_bytes=per_entry * state.entries,
            full_kv_bytes=per_entry * (state.text_tokens + frame),
            beacon_ratio=self.beacon_ratio,
            window=self.window,
            position_mode=state.mode,
            capacity_tokens=self.capacity_tokens(),
            seconds=state.seconds,
            extra={**extra, "positions used": f"{state.next_position:,} of {self.max_positions:,}"},
        )

    @property
    def documents(self) -> tuple[dict[str, Any], ...]:
        return self._state.documents if self._state else ()

    # -- persistence ------------------------------------------------------------------------
    def identity(self) -> dict[str, Any]:
        """What a saved memory must match to be loaded into this one."""
        cfg = self.model.config
        return {
            "model": self.name,
            "model_revision": self.revision,
            "model_fingerprint": model_fingerprint(self.model),
            "tokenizer_fingerprint": tokenizer_fingerprint(self.tokenizer),
            "beacon_ratio": self.beacon_ratio,
            "layers": int(cfg.num_hidden_layers),
            "prefix_ids": list(self.prefix_ids),
            "suffix_ids": list(self.suffix_ids),
        }

    def write_files(self, folder: Path) -> dict[str, Any]:
        from safetensors.torch import save_file

        state = self._state
        if state is None:
            raise NoMemoryError("nothing to save: this memory is empty")
        tensors: dict[str, torch.Tensor] = {}
        for i, (k, v, p) in enumerate(zip(state.keys, state.values, state.positions, strict=True)):
            tensors[f"k.{i}"] = k.detach().cpu().contiguous()
            tensors[f"v.{i}"] = v.detach().cpu().contiguous()
            tensors[f"p.{i}"] = p.detach().cpu().contiguous()
        if state.origins is not None and state.token_map is not None:
            for i, o in enumerate(state.origins):
                tensors[f"o.{i}"] = o.contiguous()
            tensors.update(state.token_map.tensors())
        section = {
            "backend": self.backend,
            **self.identity(),
            "window": self.window,
            "scorer": self.scorer.name,
            "compress": self.compress,
            "position_mode": state.mode,
            "text_tokens": state.text_tokens,
            "next_position": state.next_position,
            "windows": state.windows,
            "entries": state.entries,
            "documents": list(state.documents),
            "text_sha256": state.text_sha256,
            "seconds": state.seconds,
            "dtype": str(state.keys[0].dtype).removeprefix("torch."),
            "lineage": self._lineage,
        }
        # Reliability: the state fields also go into the tensor file (covered by its sha256),
        # so a manifest edited alone (window, next_position, documents ...) is refused.
        save_file(tensors, str(folder / _TENSORS), metadata=state_metadata(section))
        return section

    def read_files(self, folder: Path, section: Mapping[str, Any]) -> None:
        from safetensors import safe_open

        from shared_core.memory.base import check_memory_fields
        from shared_core.memory.kv_files import check_kv_layout, check_kv_state, check_positions
        from shared_core.persistence import check_safetensors_header

        where = folder / "manifest.json"
        if section.get("backend") != self.backend:
            raise IncompatibleMemoryError(
                f"{where}: the memory was written by back-end {section.get('backend')!r}, "
                f"not {self.backend!r}"
            )
        mine = self.identity()
        for key in (
            "model",
            "model_fingerprint",
            "tokenizer_fingerprint",
            "beacon_ratio",
            "layers",
            "prefix_ids",
            "suffix_ids",
        ):
            if section.get(key) != mine[key]:
                raise IncompatibleMemoryError(
                    f"{where}: {key} {describe_difference(section.get(key), mine[key])}"
                    "; load it with the same model, tokenizer, beacon_ratio and prompts it was "
                    "written with"
                )
        if section.get("window") != self.window:
            # Reliability: later add() calls read with this memory's window; a save read with
            # another one would silently change how the rest of the text is read.
            raise IncompatibleMemoryError(
                f"{where}: window is {short(section.get('window'))} in the saved memory but "
                f"{self.window} here; load it with window={short(section.get('window'))} (the "
                "window later add() calls read with)"
            )
        if section.get("compress", "always") != self.compress:
            raise IncompatibleMemoryError(
                f"{where}: the memory was written with compress={section.get('compress')!r}, "
                f"this one uses {self.compress!r}; pass compress= as saved"
            )
        numbers = {
            k: section.get(k) for k in ("text_tokens", "next_position", "windows", "entries")
        }
        for key, value in numbers.items():
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 40:
                raise PersistenceError(f"{where}: {key} must be a non-negative int, got {value!r}")
        mode = section.get("position_mode")
        if mode not in ("absolute", "compact"):
            raise PersistenceError(f"{where}: position_mode {mode!r} is not absolute/compact")
        if numbers["next_position"] > self.max_positions:
            raise PersistenceError(f"{where}: next_position is past the model's positions")
        # Reliability: documents, seconds, ... and the tensor layout (names, rank, dtype, heads,
        # entries) are checked before a byte of tensor data is read; a lying file is refused.
        check_memory_fields(where, section)
        documents = section["documents"]
        path = folder / _TENSORS
        header = check_safetensors_header(path)
        cfg = self.model.config
        n_layers = int(cfg.num_hidden_layers)
        entries = numbers["entries"]
        kv_heads = getattr(cfg, "num_key_value_heads", None)
        check_kv_layout(
            path,
            header,
            layers=n_layers,
            entries=entries,
            kv_heads=kv_heads if isinstance(kv_heads, int) else None,
        )
        check_kv_state(
            where, path, section, header, frame=(len(self.prefix_ids), len(self.suffix_ids))
        )
        device = self.model.device
        keys, values, positions, origins = [], [], [], []
        has_origins = "o.0" in header
        token_map = None
        with safe_open(str(path), framework="pt") as f:
            for i in range(n_layers):
                keys.append(f.get_tensor(f"k.{i}").to(device))
                values.append(f.get_tensor(f"v.{i}").to(device))
                positions.append(f.get_tensor(f"p.{i}"))
                if has_origins:
                    origins.append(f.get_tensor(f"o.{i}"))
            if has_origins:
                token_map = TokenMap.from_tensors(
                    f.get_tensor("t.doc"),
                    f.get_tensor("t.char"),
                    tokens=numbers["text_tokens"],
                    docs=len(documents),
                    where=str(path),
                )
                for o in origins:
                    if int(o.min()) < -1 or int(o.max()) >= numbers["text_tokens"]:
                        raise PersistenceError(f"{path}: entry origins point outside the text")
        k0 = keys[0]
        if k0.ndim != 4 or k0.shape[0] != 1 or positions[0].shape != k0.shape[1:3]:
            raise PersistenceError(f"{path}: tensor shapes are not [1, heads, entries, dim]")
        check_positions(path, positions, numbers["next_position"], len(self.suffix_ids))
        state = _State(
            keys=tuple(keys),
            values=tuple(values),
            positions=tuple(positions),
            mode=mode,
            text_tokens=numbers["text_tokens"],
            next_position=numbers["next_position"],
            windows=numbers["windows"],
            documents=tuple(documents),
            text_sha256=str(section.get("text_sha256", "")),
            seconds=float(section.get("seconds") or 0.0),
            origins=tuple(origins) if has_origins else None,
            token_map=token_map,
        )
        with self._write_lock:
            self._state = state
            self._lineage = str(section.get("lineage") or uuid.uuid4().hex)


def _open_origins(
    base: _State | None, positions: Sequence[torch.Tensor], cut: int
) -> list[torch.Tensor] | None:
    """Entry origins of a working cache: the prefix's (all frame) or ``base``'s minus its suffix."""
    if base is None:
        return [torch.full_like(p, -1) for p in positions]
    if base.origins is None:
        return None
    return [o[:, : o.shape[-1] - cut] for o in base.origins]


def _joined_map(base: _State | None, new: TokenMap | None) -> TokenMap | None:
    if new is None or (base is not None and base.token_map is None):
        return None
    return new if base is None else base.token_map.extend(new)


def _cache_of(
    keys: Sequence[torch.Tensor], values: Sequence[torch.Tensor], *, room: int = 0
) -> DynamicCache:
    """A cache whose layers start from ``keys``/``values`` without writing them.

    With ``room`` > 0 each layer copies the memory once into a buffer with space for ``room``
    more entries, so decoding appends in place instead of re-copying the memory every token.
    """
    cache = DynamicCache()
    for k, v in zip(keys, values, strict=True):
        layer = _ForkLayer(k, v, room) if room > 0 else DynamicLayer()
        if room <= 0:
            layer.lazy_initialization(k, v)
            layer.keys, layer.values = k, v
        cache.layers.append(layer)
    return cache


class _ForkLayer(DynamicLayer):
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
