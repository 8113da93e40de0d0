"""File primitives: sha256, fsync, JSON written atomically and read with a size cap."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from shared_core.errors import PersistenceError

_MAX_JSON_BYTES = 64 * 1024 * 1024


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path: Path) -> None:
    for item in path.iterdir():
        if item.is_file():
            with item.open("rb") as f:
                os.fsync(f.fileno())
    fsync_dir(path)


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False, sort_keys=True), "utf-8")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def parse_json(data: bytes, where: Path | str) -> Any:
    """Parse JSON bytes; anything malformed (NaN, 5000-digit ints, deep nesting) is named."""
    try:
        return json.loads(data.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise PersistenceError(f"{where} is not valid JSON (truncated or corrupt): {exc}") from None
    except RecursionError:
        raise PersistenceError(f"{where} is not valid JSON: nested too deeply") from None


def read_json(path: Path, *, max_bytes: int = _MAX_JSON_BYTES) -> Any:
    """Read a JSON file with a size cap; errors name the file."""
    if path.is_symlink():
        raise PersistenceError(f"{path} is a symbolic link: refused")
    if not path.is_file():
        raise PersistenceError(f"{path} is missing")
    try:
        with path.open("rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as exc:
        raise PersistenceError(f"{path} cannot be read: {exc}") from None
    if len(data) > max_bytes:
        raise PersistenceError(f"{path} is over the {max_bytes:,}-byte cap for a JSON file")
    return parse_json(data, path)


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
