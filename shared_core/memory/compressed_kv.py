"""Compressed KV memory: a training-free stand-in for Activation Beacon, for any HF causal LM.

The text is prefilled window by window into one KV cache. After each window only
``ceil(window / beacon_ratio)`` of its entries are kept per layer and KV head, chosen by a
query-agnostic scorer; the window's other entries are dropped before the next window, so peak
memory is the kept cache plus one window. ``beacon_ratio=1`` keeps everything (full KV).

Positions: ``absolute`` keeps every entry at its true text position; ``compact`` renumbers kept
entries densely, re-rotating their keys, so a model trained on N positions reads about
``N * beacon_ratio`` tokens. ``auto`` picks absolute while the text fits, else compact.
With ``compress="when_needed"`` the ratio is the smallest (up to ``beacon_ratio``) that fits.

Prompts never change the memory: each one runs on a *fork* of the cache whose layers point at
the kept tensors; transformers' cache grows by concatenation (new tensors), so the memory's
tensors are never written and rollback is free. That also makes one memory safe to share
between threads.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence
from typing import Any

import torch

from shared_core.config import KVOptions
from shared_core.errors import (
    IncompatibleMemoryError,
    InputError,
    LimitError,
    NoMemoryError,
)
from shared_core.inputs import ContextInput, as_documents, check_query
from shared_core.memory.attention_probe import (
    NULL_QUERY,
    EntryAttention,
    check_heads,
    entry_mass,
    model_head_grid,
    question_rows,
)
from shared_core.memory.base import Memory, MemoryStats
from shared_core.memory.kv_persist import KVPersistence
from shared_core.memory.kv_prefill import KVPrefill, PrefillInputs
from shared_core.memory.kv_state import KVState, cache_of
from shared_core.memory.positions import rope_inv_freq
from shared_core.memory.probe_forward import Prior, direct_masses, supports_direct
from shared_core.memory.reading import new_documents
from shared_core.memory.scorers import get_scorer
from shared_core.models.chat_format import ChatFormat, frame_texts
from shared_core.models.decoding import Decoder, ModelDecoding, RunRequest, eos_ids
from shared_core.models.generation import LocalGenerator
from shared_core.models.loading import (
    LoadedLM,
    load_causal_lm,
    model_fingerprint,
    tokenizer_fingerprint,
)


class CompressedKVMemory(KVPersistence, ModelDecoding, Memory):
    """A global memory kept as a compressed KV cache of one causal LM; reading is its
    ``KVPrefill`` part, built from what it needs (``PrefillInputs``)."""

    backend = "compressed_kv"

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        name: str | None = None,
        revision: str = "local",
        intro: str | None = None,
        ack: str | None = None,
        options: KVOptions | None = None,
        **settings: Any,
    ) -> None:
        """``options``: built from a ``MemoRAGConfig`` (``config.kv_options()``); or
        ``settings``: the same names as ``MemoRAG(...)`` takes (``beacon_ratio``, ``window``,
        ``scorer``, ``compress``, ``reserve_tokens``, ...), with the same defaults and checks."""
        if options is None:
            options = KVOptions.from_settings(self.backend, **settings)
        elif settings:
            raise InputError(f"pass options= or settings, not both: {sorted(settings)}")
        self.options = options
        self.model = model
        self.tokenizer = tokenizer
        self.name = name or str(getattr(model.config, "name_or_path", "") or "model")
        self.revision = revision
        self.beacon_ratio = options.beacon_ratio
        # "when_needed": keep every entry while the text fits the model's positions (absolute
        # mode); past that, compress new text at the smallest ratio up to beacon_ratio that
        # fits the positions left (docs/heads.md: the retrieval heads lose much of their signal
        # under key-norm compression, so compress only as much as the positions require).
        self.compress = options.compress
        self.window = options.window
        self.scorer = get_scorer(options.scorer)
        self.position_mode = options.position_mode
        self.reserve_tokens = options.reserve_tokens
        self.max_chars = options.max_chars
        self.max_documents = options.max_documents
        self.max_new_tokens_cap = options.max_new_tokens_cap
        self.show_progress = options.show_progress
        intro, ack = frame_texts(intro, ack)
        self.intro, self.ack = intro, ack
        self.format = ChatFormat(tokenizer)
        self.prefix_ids, self.suffix_ids = self.format.frame(intro, ack)
        self.max_positions = int(getattr(model.config, "max_position_embeddings", 0) or 1 << 30)
        self._inv_freq = rope_inv_freq(model)
        self._stop_ids = eos_ids(model, tokenizer)
        self._state: KVState | None = None
        self._lineage = uuid.uuid4().hex
        self._write_lock = threading.Lock()
        # per head set: (the state it was made on, the "N/A" mass, the frame's keys/values)
        self._null_mass: dict[tuple[Any, ...], tuple[KVState, torch.Tensor, Any]] = {}
        cfg = model.config
        n_kv = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
        self._group = int(cfg.num_attention_heads) // int(n_kv)
        self._prefill = KVPrefill(
            PrefillInputs(
                model=model,
                tokenizer=tokenizer,
                encode=self.format.encode,
                name=self.name,
                options=options,
                scorer=self.scorer,
                max_positions=self.max_positions,
                prefix_ids=tuple(self.prefix_ids),
                suffix_ids=tuple(self.suffix_ids),
                inv_freq=self._inv_freq,
            )
        )

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
    def capacity_tokens(self) -> int:
        """About how many text tokens fit at the current settings (compact if allowed)."""
        return self._prefill.capacity_tokens()

    def _read(self, base: KVState | None, docs: Sequence[Any], show: bool | None) -> KVState:
        return self._prefill.read(base, docs, show)

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
            held = base.documents if base is not None else ()
            docs = new_documents(
                context, held, max_documents=self.max_documents, max_chars=self.max_chars
            )
            state = self._read(base, docs, show_progress)
            if base is None:  # add() on an empty memory is memorize(): a new lineage
                self._lineage = uuid.uuid4().hex
            self._state = state
        return self.stats()

    def _open_run(self, request: RunRequest) -> Decoder:
        state = self._state
        if state is None:
            raise NoMemoryError("this memory is empty: call memorize(text) or load(dir) first")
        max_new_tokens = self._checked(request)
        ids = self.format.continuation(self.intro, self.ack, request.history, request.prompt)
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
        cache = cache_of(state.keys, state.values, room=len(ids) + max_new_tokens + 1)
        return self._decoder(ids, request, cache=cache, start_position=state.next_position)

    def answer_generator(self) -> LocalGenerator:
        """A plain generator over the same weights (no memory, no second copy)."""
        return LocalGenerator(self.model, self.tokenizer, name=self.name)

    # -- attention onto entries (memory-native retrieval) --------------------------------------
    def entry_attention(self, query: str, heads: Sequence[tuple[int, int]]) -> EntryAttention:
        """Calibrated attention of ``heads`` ((layer, query head)) from ``query`` onto each entry.

        One pass of the query (framed as ``generate`` frames prompts) over the cache, minus the
        same pass for the content-free question ``"N/A"``. Cached per memory state and head set:
        the "N/A" mass and the frame tokens before the question (``probe_forward.Prior``); the
        first query runs with "N/A" in one batch. Refused for a memory saved without entry
        origins.
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
        heads = tuple(heads)
        cached = self._null_mass.get(heads)
        if cached is not None and cached[0] is state:
            _, null, prior = cached
            (mass,), _ = self._query_mass(state, [(query, NULL_QUERY)], heads, prior)
        else:  # the first query on this state: "N/A" runs with it (one batch where supported)
            (null, mass), prior = self._query_mass(
                state, [(NULL_QUERY, query), (query, NULL_QUERY)], heads, None
            )
            self._null_mass = {heads: (state, null, prior)}
        origins = torch.stack([state.origins[layer][h // self._group] for layer, h in heads])
        return EntryAttention(heads, mass - null, origins, state.token_map)

    def _query_mass(
        self,
        state: KVState,
        pairs: Sequence[tuple[str, str]],
        heads: tuple[tuple[int, int], ...],
        prior: Prior | None,
    ) -> tuple[list[torch.Tensor], Prior | None]:
        """Per ``(question, other)`` pair, the question's mass (its rows: where it differs from
        ``other``); and the shared frame's keys and values (``Prior``) for the next query."""
        seqs = []
        for query, other in pairs:
            ids = self.format.continuation(self.intro, self.ack, (), query)
            rows = question_rows(ids, self.format.continuation(self.intro, self.ack, (), other))
            if state.next_position + len(ids) > self.max_positions:
                raise LimitError(
                    f"the query is {len(ids):,} tokens; the memory leaves "
                    f"{self.max_positions - state.next_position:,} positions"
                )
            seqs.append((ids, rows))
        if supports_direct(self.model):
            check_heads(self.head_grid(), heads)
            start = state.next_position
            return direct_masses(self.model, state.keys, state.values, start, seqs, heads, prior)
        out = []
        for ids, rows in seqs:  # other architectures: the model's forward with hooks
            cache = cache_of(state.keys, state.values)
            out.append(
                entry_mass(self.model, cache, ids, state.next_position, rows, heads, state.entries)
            )
        return out, None

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
            extra={
                **extra,
                "positions used": f"{state.next_position:,} of {self.max_positions:,}",
                "tokens per entry": round(state.text_tokens / max(1, state.entries - frame), 2),
            },
        )

    @property
    def documents(self) -> tuple[dict[str, Any], ...]:
        return self._state.documents if self._state else ()

    def fingerprint(self) -> str:
        """The model's identity (``models.loading.model_fingerprint``): what head sets bind to."""
        return model_fingerprint(self.model)

    def head_grid(self) -> tuple[int, int]:
        """``(layers, query heads per layer)`` of the model."""
        return model_head_grid(self.model)

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
