"""The compressed KV memory's tensor layout on disk, checked against the manifest."""

from __future__ import annotations

from collections.abc import Mapping
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
) -> None:
    """Check a KV-memory header holds ``k.i``/``v.i`` ``[1, heads, entries, dim]`` (float) and
    ``p.i`` ``[heads, entries]`` (int64) for each of ``layers`` layers, optionally the entry
    origins ``o.i`` (int64, like ``p.i``) with the token map ``t.doc``/``t.char`` (int32,
    checked on read), and nothing else."""
    names = set(header) - {"__metadata__"}
    with_origins = "o.0" in names
    kinds = "kvpo" if with_origins else "kvp"
    expected = {f"{t}.{i}" for i in range(layers) for t in kinds}
    if with_origins:
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
                    "entries as the manifest says"
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
