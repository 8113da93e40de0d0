"""The compressed KV memory's tensor layout on disk, checked against the manifest."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from shared_core.errors import PersistenceError
from shared_core.persistence.safetensors_checks import FLOAT_DTYPES


def check_kv_layout(
    path: Path,
    header: Mapping[str, Any],
    *,
    layers: int,
    entries: int,
    kv_heads: int | None = None,
    token_map: bool = True,
    note: str = "",
) -> None:
    """Check a KV-memory header holds ``k.i``/``v.i`` ``[1, heads, entries, dim]`` (float) and
    ``p.i`` ``[heads, entries]`` (int64) for each of ``layers`` layers, optionally the entry
    origins ``o.i`` (int64, like ``p.i``) with the token map ``t.doc``/``t.char`` (int32,
    checked on read; not in a segment file: ``token_map=False``), and nothing else."""
    names = set(header) - {"__metadata__"}
    with_origins = "o.0" in names
    kinds = "kvpo" if with_origins else "kvp"
    expected = {f"{t}.{i}" for i in range(layers) for t in kinds}
    if with_origins and token_map:
        expected |= {"t.doc", "t.char"}
    if names != expected:
        extra = sorted(names - expected)[:3]
        missing = sorted(expected - names)[:3]
        raise PersistenceError(
            f"{path}: tensor names do not match a {layers}-layer memory "
            f"(unexpected {extra}, missing {missing})"
        )
    for i in range(layers):
        k, v, p = header[f"k.{i}"], header[f"v.{i}"], header[f"p.{i}"]
        heads = k["shape"][1] if len(k["shape"]) == 4 else -1
        for name, info in ((f"k.{i}", k), (f"v.{i}", v)):
            shape = info["shape"]
            if info["dtype"] not in FLOAT_DTYPES or len(shape) != 4 or shape[0] != 1:
                raise PersistenceError(f"{path}: tensor {name} is not a float [1, heads, n, dim]")
            if shape[1] != heads or shape[2] != entries:
                raise PersistenceError(
                    f"{path}: tensor {name} has shape {shape}, not {heads} heads x {entries} "
                    f"entries as the manifest says{note}"
                )
        if p["dtype"] != "I64" or p["shape"] != [heads, entries]:
            raise PersistenceError(
                f"{path}: tensor p.{i} must be int64 [{heads}, {entries}], not "
                f"{p['dtype']} {p['shape']}"
            )
        if with_origins and (
            header[f"o.{i}"]["dtype"] != "I64" or header[f"o.{i}"]["shape"] != [heads, entries]
        ):
            raise PersistenceError(f"{path}: tensor o.{i} must be int64 [{heads}, {entries}]")
        if kv_heads is not None and heads != kv_heads:
            raise PersistenceError(
                f"{path}: layer {i} holds {heads} KV heads; the model has {kv_heads}"
            )


#: The safetensors metadata key holding the state fields the manifest repeats.
STATE_KEY = "memorag_state"
#: Manifest fields of a KV memory that are also written into its (hashed) tensor file.
STATE_FIELDS = (
    "window",
    "beacon_ratio",
    "position_mode",
    "text_tokens",
    "next_position",
    "windows",
    "entries",
    "text_sha256",
    "documents_sha256",
    "segments",
)


def documents_digest(documents: Sequence[Mapping[str, Any]]) -> str:
    """sha256 of the memory's document records (ids, chars, metadata keys)."""
    return hashlib.sha256(json.dumps(list(documents), sort_keys=True).encode()).hexdigest()


def state_metadata(section: Mapping[str, Any]) -> dict[str, str]:
    """The safetensors ``__metadata__`` of a KV memory: its state fields, as one JSON string."""
    fields = {k: section.get(k) for k in STATE_FIELDS if k != "documents_sha256"}
    fields["documents_sha256"] = documents_digest(section["documents"])
    return {STATE_KEY: json.dumps(fields, sort_keys=True)}


def check_kv_state(
    where: Path,
    path: Path,
    section: Mapping[str, Any],
    header: Mapping[str, Any],
    *,
    frame: tuple[int, int],
) -> None:
    """Check a KV memory's manifest fields against each other and against its tensor file.

    ``frame`` is (prefix, suffix) token counts. The numbers must add up (absolute positions:
    ``next_position = prefix + text_tokens + suffix``; compact: ``next_position = entries``;
    ``ceil(text_tokens / beacon_ratio) <= entries - frame <= text_tokens``;
    ``windows >= ceil(text_tokens / window)``), and every state field must equal the copy
    written into the tensor file's metadata (covered by its sha256), so editing the manifest
    alone is refused, naming the field.
    """
    prefix, suffix = frame
    tokens, entries = section["text_tokens"], section["entries"]
    nxt, windows = section["next_position"], section["windows"]
    ratio, window = section["beacon_ratio"], section.get("window")
    if not (isinstance(window, int) and not isinstance(window, bool) and window >= 1):
        raise PersistenceError(f"{where}: window must be a positive int, got {window!r}")
    expected_next = entries if section["position_mode"] == "compact" else prefix + tokens + suffix
    if nxt != expected_next:
        raise PersistenceError(
            f"{where}: next_position is {nxt}, but a {section['position_mode']} memory of "
            f"{tokens} text tokens and {entries} entries ends at {expected_next}"
        )
    kept = entries - prefix - suffix
    if not math.ceil(tokens / ratio) <= kept <= tokens:
        raise PersistenceError(
            f"{where}: text_tokens is {tokens}, but {entries} entries (minus a {prefix + suffix}"
            f"-token frame) cannot hold {tokens} tokens at beacon_ratio {ratio}"
        )
    if not math.ceil(tokens / window) <= windows <= max(tokens, 1):
        raise PersistenceError(
            f"{where}: windows is {windows}, but {tokens} text tokens read with window {window} "
            f"take at least {math.ceil(tokens / window)}"
        )
    raw = (header.get("__metadata__") or {}).get(STATE_KEY)
    if raw is None:
        return  # a save from before the state was copied into the tensor file
    try:
        stored = json.loads(raw)
    except ValueError:
        stored = None
    if not isinstance(stored, dict):
        raise PersistenceError(f"{path}: the {STATE_KEY} metadata is not a JSON object")
    mine = dict(section)
    mine["documents_sha256"] = documents_digest(section["documents"])
    for key in STATE_FIELDS:
        if stored.get(key) != mine.get(key):
            shown = "chars or ids" if key == "documents_sha256" else repr(mine.get(key))
            field = "documents" if key == "documents_sha256" else key
            raise PersistenceError(
                f"{where}: {field} ({shown}) does not match the memory tensors in {path.name} "
                f"(they were written with {stored.get(key)!r}): the manifest was edited"
            )


def check_positions(path: Path, positions: Sequence[Any], next_position: int, suffix: int) -> None:
    """Every kept entry's position lies before ``next_position`` (the last one on it - 1 when
    the memory ends with a suffix)."""
    for i, p in enumerate(positions):
        if p.numel() == 0:
            continue
        low, high = int(p.min()), int(p.max())
        if low < 0 or high >= next_position or (suffix and high != next_position - 1):
            raise PersistenceError(
                f"{path}: tensor p.{i} holds positions {low}..{high}, which do not end at "
                f"next_position - 1 = {next_position - 1} as the manifest says"
            )
