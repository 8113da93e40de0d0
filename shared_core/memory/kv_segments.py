"""A compressed KV memory's entries on disk as content-addressed segments, so that an ``add``
writes what it added, not the whole memory.

An ``add`` keeps every entry before the memory's suffix and appends after it, so the entries
``[0, entries - suffix)`` (the body) are cut into segments ``kv-<sha256>.safetensors``, each
named by the digest of its tensors; the suffix and the token map go into the small
``memory.safetensors`` with the state fields. A new snapshot hard-links the segments the live
one already holds (same name: same content; every load still checks every file's sha256) and
writes only the new ones. Segments merge like a binary counter (the last two when the older
one is no longer than the newer), so a memory built by ``n`` adds has ``O(log n)`` files.
Saves from before segments (everything in ``memory.safetensors``) load unchanged.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from shared_core.errors import PersistenceError
from shared_core.memory.kv_state import KVState
from shared_core.persistence.save_dir import link_from_live

_NAME = re.compile(r"^kv-[0-9a-f]{32}\.safetensors$")


def plan_ends(previous: Sequence[int], body_end: int) -> list[int]:
    """Segment end offsets covering ``[0, body_end)``: the earlier cut points that still fit,
    then ``body_end``, with the last two merged while the older is no longer than the newer."""
    ends = [e for e in previous if 0 < e < body_end]
    if body_end > 0:
        ends.append(body_end)
    while len(ends) >= 2:
        before = ends[-3] if len(ends) >= 3 else 0
        if ends[-2] - before > ends[-1] - ends[-2]:
            break
        del ends[-2]
    return ends


def entry_slice(state: KVState, start: int, end: int) -> dict[str, torch.Tensor]:
    """The tensors of entries ``[start, end)`` of every layer (keys, values, positions and,
    where kept, origins), contiguous on the CPU."""
    out: dict[str, torch.Tensor] = {}
    for i, (k, v, p) in enumerate(zip(state.keys, state.values, state.positions, strict=True)):
        out[f"k.{i}"] = k[..., start:end, :].detach().cpu().contiguous()
        out[f"v.{i}"] = v[..., start:end, :].detach().cpu().contiguous()
        out[f"p.{i}"] = p[:, start:end].detach().cpu().contiguous()
    if state.origins is not None and state.token_map is not None:
        for i, o in enumerate(state.origins):
            out[f"o.{i}"] = o[:, start:end].contiguous()
    return out


def segment_name(tensors: Mapping[str, torch.Tensor]) -> str:
    """``kv-<digest>.safetensors``: the sha256 of the tensors' names, dtypes, shapes and bytes."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name]
        digest.update(f"{name}|{t.dtype}|{list(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return f"kv-{digest.hexdigest()[:32]}.safetensors"


def write_segments(
    folder: Path, state: KVState, ends: Sequence[int], write: Any
) -> list[dict[str, Any]]:
    """Write (or hard-link from the live snapshot) one file per segment; their manifest
    records. ``write(path, tensors)`` writes a new tensor file."""
    records, start = [], 0
    for end in ends:
        tensors = entry_slice(state, start, end)
        name = segment_name(tensors)
        if not link_from_live(folder, name):
            write(folder / name, tensors)
        records.append({"file": name, "entries": end - start})
        start = end
    return records


def check_segments(where: Path, section: Mapping[str, Any]) -> list[tuple[str, int]]:
    """The ``segments`` field of a manifest section: ``[(file, entries), ...]`` (none for a
    save from before segments), every name a segment name, every count positive, the sum
    within ``entries``."""
    raw = section.get("segments", [])
    if not isinstance(raw, list):
        raise PersistenceError(f"{where}: segments must be a list")
    out = []
    for rec in raw:
        name = rec.get("file") if isinstance(rec, dict) else None
        count = rec.get("entries") if isinstance(rec, dict) else None
        if not isinstance(name, str) or not _NAME.match(name):
            raise PersistenceError(f"{where}: segment file {name!r} is not a segment name")
        if isinstance(count, bool) or not isinstance(count, int) or count <= 0:
            raise PersistenceError(f"{where}: segment {name} needs a positive int entries")
        out.append((name, count))
    if sum(c for _, c in out) > section["entries"]:
        raise PersistenceError(f"{where}: the segments hold more entries than the memory")
    return out


__all__ = ["check_segments", "entry_slice", "plan_ends", "segment_name", "write_segments"]
