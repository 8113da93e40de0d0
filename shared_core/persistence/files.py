"""File primitives: sha256, fsync, JSON written atomically and read with a size cap."""

from __future__ import annotations

import hashlib
import json
import os
import threading
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


def file_mode(folder: Path) -> int:
    """The mode a new file gets here under the process umask (``0o666 & ~umask``), read from a
    probe file so no process-wide umask is changed."""
    probe = folder / f".mode-probe-{os.getpid()}-{threading.get_ident()}"
    fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
    try:
        return os.fstat(fd).st_mode & 0o777
    finally:
        os.close(fd)
        probe.unlink()


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
    return parse_json(read_capped(path, max_bytes), path)


def read_capped(
    path: Path, max_bytes: int, *, error: type[Exception] = PersistenceError, label: str = ""
) -> bytes:
    """The bytes of ``path``, read no further than the cap; a file that cannot be read or is
    over ``max_bytes`` raises ``error`` naming it (after ``label``, e.g. a CLI option)."""
    try:
        with path.open("rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as exc:
        raise error(f"{label}{path} cannot be read: {exc}") from None
    if len(data) > max_bytes:
        raise error(f"{label}{path} is over the {max_bytes:,}-byte cap")
    return data


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def describe_difference(saved: object, here: object) -> str:
    """How two values differ, readably: for lists the lengths, a short hash of each and the
    first position where they differ (``"39 token ids"`` on both sides says nothing)."""
    if isinstance(saved, list) and isinstance(here, list):

        def digest(items: list[Any]) -> str:
            return hashlib.sha256(json.dumps(items).encode()).hexdigest()[:10]

        first = next(
            (i for i, (a, b) in enumerate(zip(saved, here, strict=False)) if a != b),
            min(len(saved), len(here)),
        )
        at = (
            f"first difference at position {first}: {short(saved[first])} vs {short(here[first])}"
            if first < min(len(saved), len(here))
            else f"one is a prefix of the other (they differ from position {first} on)"
        )
        return (
            f"differs: the saved memory has {len(saved)} ids (sha256 {digest(saved)}), this one "
            f"{len(here)} (sha256 {digest(here)}); {at}"
        )
    return f"is {short(saved)} in the saved memory but {short(here)} here"
