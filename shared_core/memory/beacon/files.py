"""Saving and loading a beacon state: tensors as safetensors, bookkeeping as JSON."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from shared_core.errors import PersistenceError
from shared_core.memory.beacon.state import BeaconState

TENSORS = "beacon.safetensors"


def state_tensors(state: BeaconState) -> dict[str, torch.Tensor]:
    """``bk.i``/``bv.i`` (retained beacons) and ``tk.i``/``tv.i`` (raw tail) per layer."""
    out: dict[str, torch.Tensor] = {}
    for prefix, kvs in (("b", state.beacon_kv), ("t", state.tail_kv)):
        for i, (k, v) in enumerate(kvs):
            out[f"{prefix}k.{i}"] = k.detach().cpu().contiguous()
            out[f"{prefix}v.{i}"] = v.detach().cpu().contiguous()
    return out


def state_fields(state: BeaconState) -> dict[str, Any]:
    """The state's counters and flags (JSON)."""
    return {
        "ratio": state.ratio,
        "window": state.window,
        "window_start": state.window_start,
        "consumed": state.consumed,
        "remainder": state.remainder,
        "closed_last": state.closed_last,
        "tail_flags": [int(f) for f in state.tail_flags],
        "beacon_sizes": list(state.beacon_sizes),
        "n_beacons": state.n_beacons,
    }


def _int(where: Path, fields: Mapping[str, Any], key: str, lo: int = 0) -> int:
    value = fields.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value < 1 << 40:
        raise PersistenceError(f"{where}: beacon state {key} must be an int >= {lo}, got {value!r}")
    return value


def read_state(
    folder: Path,
    fields: Mapping[str, Any],
    *,
    layers: int,
    kv_heads: int,
    head_dim: int,
    device: torch.device,
    dtype: torch.dtype,
) -> BeaconState:
    """Rebuild a state, checking the header and every count before reading tensor data."""
    from safetensors import safe_open

    from shared_core.persistence import check_safetensors_header

    where = folder / "manifest.json"
    if not isinstance(fields, Mapping):
        raise PersistenceError(f"{where}: the beacon state must be an object")
    ratio, window = _int(where, fields, "ratio", 1), _int(where, fields, "window", 1)
    start, consumed = _int(where, fields, "window_start"), _int(where, fields, "consumed")
    remainder, n_beacons = _int(where, fields, "remainder"), _int(where, fields, "n_beacons")
    flags, sizes = fields.get("tail_flags"), fields.get("beacon_sizes")
    if not isinstance(flags, list) or any(f not in (0, 1) or isinstance(f, bool) for f in flags):
        raise PersistenceError(f"{where}: tail_flags must be a list of 0/1")
    if not isinstance(sizes, list) or any(
        isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in sizes
    ):
        raise PersistenceError(f"{where}: beacon_sizes must be a list of non-negative ints")
    raw_in_tail = len(flags) - sum(flags)
    if (
        window % ratio
        or start % window
        or consumed - start != raw_in_tail
        or remainder >= ratio
        or n_beacons != (start // window) * (window // ratio)
        or sum(sizes) != n_beacons + sum(flags)
    ):
        raise PersistenceError(f"{where}: the beacon state's counters do not add up")
    path = folder / TENSORS
    header = check_safetensors_header(path)
    expected = {}
    for prefix, n in (("b", n_beacons), ("t", len(flags))):
        if n:
            for i in range(layers):
                for kind in "kv":
                    expected[f"{prefix}{kind}.{i}"] = [1, kv_heads, n, head_dim]
    names = set(header) - {"__metadata__"}
    if names != set(expected):
        raise PersistenceError(f"{path}: tensors {sorted(names)[:6]} do not match the state")
    for name, shape in expected.items():
        info = header[name]
        if info.get("shape") != shape or info.get("dtype") not in ("F32", "F16", "BF16"):
            raise PersistenceError(f"{path}: {name} is {info.get('shape')}, expected {shape}")
    with safe_open(str(path), framework="pt") as f:

        def load(prefix: str, n: int) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
            if not n:
                return ()
            return tuple(
                tuple(
                    f.get_tensor(f"{prefix}{kind}.{i}").to(device=device, dtype=dtype)
                    for kind in "kv"
                )  # type: ignore[misc]
                for i in range(layers)
            )

        beacon_kv, tail_kv = load("b", n_beacons), load("t", len(flags))
    return BeaconState(
        ratio=ratio,
        window=window,
        beacon_kv=beacon_kv,
        tail_kv=tail_kv,
        tail_flags=tuple(bool(f) for f in flags),
        window_start=start,
        consumed=consumed,
        remainder=remainder,
        beacon_sizes=tuple(sizes),
        closed_last=bool(fields.get("closed_last", False)),
    )
