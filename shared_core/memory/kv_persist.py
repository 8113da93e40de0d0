"""Saving and loading a compressed KV memory: tensors as safetensors, a checked manifest."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from shared_core.errors import (
    IncompatibleMemoryError,
    NoMemoryError,
    PersistenceError,
)
from shared_core.memory.entry_map import TokenMap
from shared_core.memory.kv_files import state_metadata
from shared_core.memory.kv_segments import check_segments, entry_slice, plan_ends, write_segments
from shared_core.memory.kv_state import KVState
from shared_core.models.loading import layer_devices
from shared_core.persistence.files import short
from shared_core.persistence.safetensors_checks import write_tensors

TENSORS_FILE = "memory.safetensors"


#: What a saved memory must share with this one to be loaded (the revision may differ).
_MATCHING = (
    "model",
    "model_fingerprint",
    "tokenizer_fingerprint",
    "beacon_ratio",
    "layers",
    "prefix_ids",
    "suffix_ids",
)


def _layout(header: Mapping[str, Any]) -> tuple[Any, ...]:
    """What every tensor file of one memory shares: the key dtype, heads and head size."""
    shape = header["k.0"]["shape"]
    return (header["k.0"]["dtype"], shape[1], shape[3])


class KVPersistence:
    """The saving half of ``CompressedKVMemory``: its tensors as safetensors, its state as a
    manifest section checked against them on load."""

    backend: str
    model: Any
    window: int
    scorer: Any
    compress: str
    max_positions: int
    prefix_ids: list[int]
    suffix_ids: list[int]
    _state: Any
    _lineage: str
    _write_lock: Any
    #: Where the last save or load cut the memory's entries into segments (kv_segments.py).
    _segment_ends: tuple[int, ...] = ()

    def write_files(self, folder: Path) -> dict[str, Any]:
        state = self._state
        if state is None:
            raise NoMemoryError("nothing to save: this memory is empty")
        # Reliability (issue 25): the entries every later add keeps go into content-addressed
        # segments shared with the live snapshot (hard links), so an add writes what it added.
        body_end = max(state.entries - len(self.suffix_ids), 0)
        ends = plan_ends(self._segment_ends, body_end)
        segments = write_segments(
            folder, state, ends, lambda path, tensors: write_tensors(path, tensors)
        )
        self._segment_ends = tuple(ends)
        tensors = entry_slice(state, body_end, state.entries)
        if state.origins is not None and state.token_map is not None:
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
            "segments": segments,
        }
        # Reliability: the state fields also go into the tensor file (covered by its sha256),
        # so a manifest edited alone (window, next_position, documents ...) is refused.
        write_tensors(folder / TENSORS_FILE, tensors, metadata=state_metadata(section))
        return section

    def read_files(self, folder: Path, section: Mapping[str, Any]) -> None:
        from safetensors import safe_open

        from shared_core.memory.base import check_identity, check_memory_fields
        from shared_core.memory.kv_files import check_kv_layout, check_kv_state, check_positions
        from shared_core.persistence import check_safetensors_header

        where = folder / "manifest.json"
        # A memory that never compressed anything (every position kept) holds the same
        # tensors under any ratio or compress mode: those settings were never used, so a
        # pipeline with other ones (upstream's beacon_ratio=4, the default 32) may load it and
        # applies its own to later add() calls.
        unused = section.get("entries") == section.get("next_position") is not None
        keys = tuple(k for k in _MATCHING if not (unused and k == "beacon_ratio"))
        check_identity(where, section, self.backend, self.identity(), keys)
        if section.get("window") != self.window:
            # Reliability: later add() calls read with this memory's window; a save read with
            # another one would silently change how the rest of the text is read.
            raise IncompatibleMemoryError(
                f"{where}: window is {short(section.get('window'))} in the saved memory but "
                f"{self.window} here; load it with window={short(section.get('window'))} (the "
                "window later add() calls read with)"
            )
        if section.get("compress", "always") != self.compress and not unused:
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
        path = folder / TENSORS_FILE
        header = check_safetensors_header(path)
        cfg = self.model.config
        n_layers = int(cfg.num_hidden_layers)
        entries = numbers["entries"]
        kv_heads = getattr(cfg, "num_key_value_heads", None)
        segments = check_segments(where, section)
        in_segments = sum(count for _, count in segments)
        check_kv_layout(
            path,
            header,
            layers=n_layers,
            entries=entries - in_segments,
            kv_heads=kv_heads if isinstance(kv_heads, int) else None,
            note=f" (its {entries:,} entries minus {in_segments:,} in segments)"
            if in_segments
            else "",
        )
        check_kv_state(
            where, path, section, header, frame=(len(self.prefix_ids), len(self.suffix_ids))
        )
        has_origins = "o.0" in header
        parts: list[tuple[Path, int]] = [(folder / name, count) for name, count in segments]
        for part, count in parts:
            part_header = check_safetensors_header(part)
            check_kv_layout(
                part,
                part_header,
                layers=n_layers,
                entries=count,
                kv_heads=kv_heads if isinstance(kv_heads, int) else None,
                token_map=False,
            )
            if ("o.0" in part_header) != has_origins or _layout(part_header) != _layout(header):
                raise PersistenceError(
                    f"{part}: its dtype, heads, head size or origins differ from {path.name}'s"
                )
        devices = layer_devices(self.model)
        layer_parts: list[list[list[torch.Tensor]]] = [[[], [], [], []] for _ in range(n_layers)]
        token_map = None
        for part, _ in [*parts, (path, 0)]:
            with safe_open(str(part), framework="pt") as f:
                for i in range(n_layers):
                    names = ("k", "v", "p", "o") if has_origins else ("k", "v", "p")
                    for slot, kind in enumerate(names):
                        layer_parts[i][slot].append(f.get_tensor(f"{kind}.{i}"))
        keys = [torch.cat(lp[0], dim=-2).to(devices[i]) for i, lp in enumerate(layer_parts)]
        values = [torch.cat(lp[1], dim=-2).to(devices[i]) for i, lp in enumerate(layer_parts)]
        positions = [torch.cat(lp[2], dim=-1) for lp in layer_parts]
        origins = [torch.cat(lp[3], dim=-1) for lp in layer_parts] if has_origins else []
        del layer_parts
        with safe_open(str(path), framework="pt") as f:
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
        state = KVState(
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
            ends, total = [], 0
            for _, count in segments:
                total += count
                ends.append(total)
            self._segment_ends = tuple(ends)
