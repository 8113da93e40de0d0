"""Safetensors headers checked before any tensor is allocated."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

from shared_core.errors import PersistenceError
from shared_core.persistence.files import is_int, parse_json, short, write_new

_WIDTHS = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
}
FLOAT_DTYPES = frozenset({"F32", "F16", "BF16", "F64"})


def check_safetensors_header(path: Path, *, max_header: int = 16 * 1024 * 1024) -> dict[str, Any]:
    """Parse a safetensors header and check it describes the file exactly.

    Every tensor needs a known dtype, a list of non-negative int dims and int offsets whose
    span is exactly ``prod(shape) * width``; together the tensors must tile the data section
    with no gap, overlap or trailing byte (what the safetensors reader itself demands). Any
    lie is a ``PersistenceError`` naming the file and the tensor, raised before a byte of
    tensor data is read.
    """
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                raise PersistenceError(f"{path} is too short to be a safetensors file")
            (n,) = struct.unpack("<Q", raw)
            if n > min(max_header, size - 8):
                raise PersistenceError(f"{path} declares a {n:,}-byte header; the file is {size:,}")
            data = f.read(n)
    except OSError as exc:
        raise PersistenceError(f"{path} cannot be read: {exc}") from None
    header = parse_json(data, f"{path} (safetensors header)")
    if not isinstance(header, dict):
        raise PersistenceError(f"{path} has a corrupt safetensors header (not an object)")
    if "__metadata__" in header and not (
        isinstance(header["__metadata__"], dict)
        and all(isinstance(v, str) for v in header["__metadata__"].values())
    ):
        raise PersistenceError(f"{path}: the safetensors __metadata__ must map names to strings")
    data_len = size - 8 - n
    spans = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        ok = isinstance(info, dict) and set(info) == {"dtype", "shape", "data_offsets"}
        if ok:
            dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
            ok = (
                isinstance(dtype, str)
                and dtype in _WIDTHS
                and isinstance(shape, list)
                and all(is_int(d) and d >= 0 for d in shape)
                and isinstance(offsets, list)
                and len(offsets) == 2
                and all(is_int(o) for o in offsets)
            )
        if ok:
            start, end = offsets
            count = 1
            for dim in shape:
                count *= dim
            ok = 0 <= start <= end <= data_len and end - start == count * _WIDTHS[dtype]
        if not ok:
            raise PersistenceError(f"{path}: tensor {short(name)} has a shape or offsets that lie")
        spans.append((start, end, name))
    position = 0
    for start, end, name in sorted(spans):
        if start != position:
            raise PersistenceError(
                f"{path}: tensor {short(name)} starts at byte {start:,}, expected {position:,} "
                "(tensors overlap or leave a gap)"
            )
        position = end
    if position != data_len:
        raise PersistenceError(
            f"{path}: the tensors cover {position:,} of {data_len:,} data bytes (truncated or "
            "padded)"
        )
    return header


def write_tensors(
    path: Path, tensors: dict[str, Any], metadata: dict[str, str] | None = None
) -> int:
    """Write torch ``tensors`` as a new safetensors file (``write_new``: never through a link,
    mode 0o666 minus the umask); returns its size in bytes."""
    from safetensors.torch import save

    data = save(tensors, metadata=metadata)
    write_new(path, data)
    return len(data)
