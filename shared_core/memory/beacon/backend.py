"""``NativeBeaconMemory``: the MemoRAG memory models' Activation Beacon memory, natively.

The memory is ``prefix + text + suffix`` in the checkpoint's chat template (a memorize turn in
our own words, then a short acknowledgement), read window by window into a ``BeaconState``.
Prompts and their generated tokens continue the open window on a fork of that state, so the
memory never changes and concurrent prompts never see each other's tokens. The state before
the suffix is kept too, so ``add`` continues the text without re-reading it.
"""

from __future__ import annotations

import hashlib
import inspect
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared_core.config import OPTION_DEFAULTS
from shared_core.errors import IncompatibleMemoryError, InputError, LimitError, NoMemoryError
from shared_core.inputs import ContextInput, as_documents
from shared_core.memory.attention_probe import EntryAttention
from shared_core.memory.base import Memory, MemoryStats
from shared_core.memory.beacon.attention import (
    BeaconHeadProbe,
    read_token_map,
    text_token_map,
    write_token_map,
)
from shared_core.memory.beacon.config import check_ratio
from shared_core.memory.beacon.decode import BeaconDecoder, BeaconGenerator
from shared_core.memory.beacon.engine import BeaconEngine
from shared_core.memory.beacon.files import TENSORS, read_state, state_fields, state_tensors
from shared_core.memory.beacon.model import BeaconForCausalLM
from shared_core.memory.beacon.state import BeaconState, peak_entries
from shared_core.memory.entry_map import TokenMap
from shared_core.memory.reading import (
    document_records,
    joined_text,
    memorize_bar,
    new_documents,
    text_digest,
)
from shared_core.models.chat_format import ChatFormat, frame_texts
from shared_core.models.decoding import ConstrainedGeneration, RunRequest, eos_ids
from shared_core.models.loading import tokenizer_fingerprint
from shared_core.persistence.safetensors_checks import write_tensors


@dataclass(frozen=True)
class _Snapshot:
    """What the memory holds; replaced whole, never edited."""

    text: BeaconState  # after prefix + text: what ``add`` continues
    ready: BeaconState  # after the suffix: what prompts continue
    text_tokens: int
    documents: tuple[dict[str, Any], ...]
    text_sha256: str
    seconds: float
    token_map: TokenMap | None = None  # text token -> (document, char); None: not kept


class NativeBeaconMemory(ConstrainedGeneration, Memory):
    """Activation Beacon memory on our own implementation of the memorag-* checkpoints."""

    backend = "beacon"

    def __init__(
        self,
        model: BeaconForCausalLM,
        tokenizer: Any,
        *,
        name: str | None = None,
        revision: str = "local",
        beacon_ratio: int | None = None,
        intro: str | None = None,
        ack: str | None = None,
        max_chars: int | None = OPTION_DEFAULTS["max_chars"],
        max_documents: int | None = OPTION_DEFAULTS["max_documents"],
        max_new_tokens_cap: int = OPTION_DEFAULTS["max_new_tokens_cap"],
        show_progress: bool | None = OPTION_DEFAULTS["show_progress"],
    ) -> None:
        if not isinstance(model, BeaconForCausalLM):
            raise InputError(
                "NativeBeaconMemory needs a BeaconForCausalLM (see NativeBeaconMemory."
                "from_pretrained); use backend='compressed_kv' for other models"
            )
        cfg = model.config
        ratio = cfg.ratio if beacon_ratio is None else beacon_ratio
        check_ratio(ratio, cfg.beacon_window)
        self.lm = model
        self.engine = BeaconEngine(model)
        self.config = cfg.with_ratio(ratio)
        self.tokenizer = tokenizer
        self.name = name or "beacon"
        self.revision = revision
        self.beacon_ratio = ratio
        self.max_chars, self.max_documents = max_chars, max_documents
        self.max_new_tokens_cap = max_new_tokens_cap
        self.show_progress = show_progress
        self.intro, self.ack = frame_texts(intro, ack)
        self.format = ChatFormat(tokenizer)
        self.prefix_ids, self.suffix_ids = self.format.frame(self.intro, self.ack)
        self.max_positions = cfg.max_position_embeddings
        stop = eos_ids(model, tokenizer)
        if isinstance(cfg.eos_token_id, int):
            stop.add(cfg.eos_token_id)
        self._stop_ids = {i for i in stop if 0 <= i < cfg.vocab_size}
        self._snap: _Snapshot | None = None
        self._lineage = uuid.uuid4().hex
        self._write_lock = threading.Lock()
        self._probe = BeaconHeadProbe(
            model, self.format, (self.intro, self.ack), len(self.prefix_ids), self.max_positions
        )
        self._generator = BeaconGenerator(
            self.engine,
            tokenizer,
            name=self.name,
            ratio=ratio,
            stop_ids=self._stop_ids,
            max_new_tokens_cap=max_new_tokens_cap,
        )

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        *,
        beacon_ratio: int | None = None,
        tokenizer: Any = None,
        **kwargs: Any,
    ) -> NativeBeaconMemory:
        """Load a beacon checkpoint by hub id or local folder (safetensors, no remote code).

        ``kwargs``: how to load it (``weights.load_beacon_model``'s ``cache_dir``,
        ``access_token``, ``revision``, ``device``, ``dtype``, ``load_in_4bit``,
        ``enable_flash_attn``, ``device_map``), then this class's own arguments.
        """
        from shared_core.memory.beacon.weights import load_beacon_model

        loading = inspect.signature(load_beacon_model).parameters
        load = {key: kwargs.pop(key) for key in list(kwargs) if key in loading}
        model, folder, rev = load_beacon_model(name_or_path, beacon_ratio=beacon_ratio, **load)
        if tokenizer is None:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(str(folder))
        return cls(
            model,
            tokenizer,
            name=str(name_or_path),
            revision=rev,
            beacon_ratio=beacon_ratio,
            **kwargs,
        )

    # -- reading ----------------------------------------------------------------------------
    @property
    def is_empty(self) -> bool:
        return self._snap is None

    @property
    def lineage(self) -> str:
        return self._lineage

    @property
    def documents(self) -> tuple[dict[str, Any], ...]:
        return self._snap.documents if self._snap else ()

    def capacity_tokens(self) -> int:
        """``(max_position_embeddings - window) * ratio + window`` raw tokens."""
        return self.config.capacity_tokens()

    def memorize(self, context: ContextInput, *, show_progress: bool | None = None) -> MemoryStats:
        docs = as_documents(context, max_documents=self.max_documents, max_chars=self.max_chars)
        with self._write_lock:
            self._snap = self._read(None, docs, show_progress)
            self._lineage = uuid.uuid4().hex
        return self.stats()

    def add(self, context: ContextInput, *, show_progress: bool | None = None) -> MemoryStats:
        with self._write_lock:
            base = self._snap
            held = base.documents if base else ()
            docs = new_documents(
                context, held, max_documents=self.max_documents, max_chars=self.max_chars
            )
            snap = self._read(base, docs, show_progress)
            if base is None:
                self._lineage = uuid.uuid4().hex
            self._snap = snap
        return self.stats()

    def _read(self, base: _Snapshot | None, docs: Sequence[Any], show: bool | None) -> _Snapshot:
        started = time.perf_counter()
        joined = joined_text(docs, continuing=base is not None)
        ids = self.format.encode(joined)
        if not ids:
            raise InputError("the text encodes to no tokens")
        state = base.text if base else self.engine.empty(self.beacon_ratio)
        feed = ids if base else self.prefix_ids + ids
        text_total = (base.text_tokens if base else 0) + len(ids)
        peak = peak_entries(state, len(feed) + len(self.suffix_ids))
        if peak > self.max_positions:
            raise LimitError(
                f"the text is {text_total:,} tokens; with the frame it needs {peak:,} of "
                f"{self.name}'s {self.max_positions:,} positions; at beacon_ratio "
                f"{self.beacon_ratio} it holds about {self.capacity_tokens():,} tokens "
                "((max_position_embeddings - window) x ratio + window); raise beacon_ratio or "
                "split the text into several memories"
            )
        windows = len(feed) // self.config.beacon_window
        bar = memorize_bar(len(feed), windows, self.show_progress if show is None else show)
        text, _ = self.engine.feed(state, feed, logits="none", progress=bar.update)
        bar.close()
        ready, _ = self.engine.feed(text, self.suffix_ids, logits="none")
        return _Snapshot(
            text=text,
            ready=ready,
            text_tokens=text_total,
            documents=(base.documents if base else ()) + document_records(docs),
            text_sha256=text_digest(base.text_sha256 if base else None, joined),
            seconds=(base.seconds if base else 0.0) + time.perf_counter() - started,
            token_map=text_token_map(
                self.tokenizer,
                joined,
                ids,
                docs,
                base.token_map if base else None,
                len(base.documents) if base else 0,
                continued=base is not None,
            ),
        )

    # -- prompting --------------------------------------------------------------------------
    def _open_run(self, request: RunRequest) -> BeaconDecoder:
        snap = self._snap
        if snap is None:
            raise NoMemoryError("this memory is empty: call memorize(text) or load(dir) first")
        self._generator.check(request)
        ids = self.format.continuation(self.intro, self.ack, request.history, request.prompt)
        return self._generator.continuing(snap.ready, ids, request)

    def answer_generator(self) -> BeaconGenerator:
        """The beacon model with no memory (long prompts still compress)."""
        return self._generator

    # -- attention onto entries (memory-native retrieval; beacon/attention.py) -----------------
    def entry_attention(self, query: str, heads: Sequence[tuple[int, int]]) -> EntryAttention:
        """Calibrated attention of ``heads`` ((layer, query head)) from ``query`` onto each kept
        entry (beacons and the open window's raw entries), with each entry's text origin."""
        snap = self._snap
        if snap is None:
            raise NoMemoryError("this memory is empty: call memorize(text) or load(dir) first")
        return self._probe.entry_attention(
            snap.ready, snap.token_map, snap.text_tokens, query, heads
        )

    def head_grid(self) -> tuple[int, int]:
        """``(layers, query heads per layer)`` of the beacon model."""
        return self.config.num_layers, self.config.num_heads

    def fingerprint(self) -> str:
        """The weights' identity (config shape + a slice of the embeddings): what saves and
        head sets are bound to."""
        cfg = self.config
        h = hashlib.sha256(repr((cfg.model_type, cfg.hidden_size, cfg.num_layers)).encode())
        h.update(self.lm.model.embed_tokens.weight.detach()[:64].float().cpu().numpy().tobytes())
        return h.hexdigest()[:16]

    # -- introspection ----------------------------------------------------------------------
    def stats(self) -> MemoryStats:
        cfg = self.config
        common = {
            "backend": self.backend,
            "beacon_ratio": self.beacon_ratio,
            "window": cfg.beacon_window,
            "position_mode": "beacon",
            "capacity_tokens": self.capacity_tokens(),
        }
        snap = self._snap
        if snap is None:
            return MemoryStats(**common, extra={"model": self.name})
        ready = snap.ready
        per_entry = 2 * cfg.num_layers * cfg.num_kv_heads * cfg.head_dim * self.lm.dtype.itemsize
        return MemoryStats(
            **common,
            tokens_read=snap.text_tokens,
            documents=len(snap.documents),
            windows=ready.window_start // cfg.beacon_window + (1 if ready.n_tail else 0),
            kv_entries=ready.entries,
            memory_bytes=ready.nbytes(),
            full_kv_bytes=per_entry * ready.consumed,
            seconds=snap.seconds,
            extra={
                "model": self.name,
                "beacons kept": f"{ready.n_beacons:,} (+ {ready.n_tail:,} entries in the open "
                "window)",
                "positions used": f"{ready.entries:,} of {self.max_positions:,}",
            },
        )

    # -- persistence ------------------------------------------------------------------------
    def identity(self) -> dict[str, Any]:
        """What a saved memory must match to be loaded into this one."""
        cfg = self.config
        return {
            "model": self.name,
            "model_revision": self.revision,
            "model_fingerprint": self.fingerprint(),
            "tokenizer_fingerprint": tokenizer_fingerprint(self.tokenizer),
            "beacon_ratio": self.beacon_ratio,
            "window": cfg.beacon_window,
            "layers": cfg.num_layers,
            "prefix_ids": list(self.prefix_ids),
            "suffix_ids": list(self.suffix_ids),
        }

    def write_files(self, folder: Path) -> dict[str, Any]:
        snap = self._snap
        if snap is None:
            raise NoMemoryError("nothing to save: this memory is empty")
        write_tensors(folder / TENSORS, state_tensors(snap.text))
        return {
            "backend": self.backend,
            **self.identity(),
            "state": state_fields(snap.text),
            "text_tokens": snap.text_tokens,
            "documents": list(snap.documents),
            "text_sha256": snap.text_sha256,
            "seconds": snap.seconds,
            "dtype": str(self.lm.dtype).removeprefix("torch."),
            "lineage": self._lineage,
            **write_token_map(folder, snap.token_map),
        }

    def read_files(self, folder: Path, section: Mapping[str, Any]) -> None:
        from shared_core.errors import PersistenceError
        from shared_core.memory.base import check_identity, check_memory_fields

        where = folder / "manifest.json"
        mine = self.identity()
        keys = [key for key in mine if key != "model_revision"]
        check_identity(where, section, self.backend, mine, keys)
        check_memory_fields(where, section)
        tokens = section.get("text_tokens")
        if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
            raise PersistenceError(f"{where}: text_tokens must be a non-negative int")
        cfg = self.config
        text = read_state(
            folder,
            section.get("state"),  # type: ignore[arg-type]
            layers=cfg.num_layers,
            kv_heads=cfg.num_kv_heads,
            head_dim=cfg.head_dim,
            device=self.lm.device,
            dtype=self.lm.dtype,
        )
        if text.ratio != self.beacon_ratio or text.window != cfg.beacon_window:
            raise IncompatibleMemoryError(f"{where}: the saved state's ratio/window differ")
        token_map = read_token_map(
            folder, section, text_tokens=tokens, consumed=text.consumed, frame=len(self.prefix_ids)
        )
        ready, _ = self.engine.feed(text, self.suffix_ids, logits="none")
        snap = _Snapshot(
            text=text,
            ready=ready,
            text_tokens=tokens,
            documents=tuple(section["documents"]),
            text_sha256=str(section.get("text_sha256", "")),
            seconds=float(section.get("seconds") or 0.0),
            token_map=token_map,
        )
        with self._write_lock:
            self._snap = snap
            self._lineage = str(section.get("lineage") or uuid.uuid4().hex)
