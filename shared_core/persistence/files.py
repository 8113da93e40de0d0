"""File primitives: sha256, fsync, JSON written atomically and read with a size cap."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import stat
import uuid
from pathlib import Path
from typing import Any

from shared_core.errors import PersistenceError

_MAX_JSON_BYTES = 64 * 1024 * 1024


#: Flags of every read: never through a link, never blocking on a FIFO.
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
#: Flags of every file the library creates: a new name (``O_EXCL``: a planted file or link of
#: that name is an error, never written through), never following a link.
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def open_regular(
    path: Path, *, error: type[Exception] = PersistenceError, label: str = "", follow: bool = False
) -> int:
    """A read-only descriptor of ``path`` if it is a regular file (not a FIFO, device, folder
    or, unless ``follow`` (a file the user named), a link): opened without blocking, then
    checked."""
    try:
        fd = os.open(path, _READ_FLAGS & ~os.O_NOFOLLOW if follow else _READ_FLAGS)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise error(f"{label}{path} is a symbolic link: refused") from None
        raise error(f"{label}{path} cannot be read: {exc.strerror or exc}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file (a FIFO or device?)"
        raise error(f"{label}{path} is {kind}: refused")
    os.set_blocking(fd, True)
    return fd


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with os.fdopen(open_regular(path), "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    """Make a regular file durable (a link, FIFO or device is refused)."""
    fd = open_regular(path)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path: Path) -> None:
    """Make every file of ``path`` (a folder of plain files only) and the folder durable."""
    for item in path.iterdir():
        fsync_file(item)
    fsync_dir(path)


def write_new(path: Path, data: bytes) -> None:
    """Create ``path`` and write ``data``, with mode ``0o666`` minus the umask. The name must
    be new: an existing file or a planted symbolic link there is refused, never written
    through or truncated. A full disk or a file-size limit (``EFBIG``) raises
    ``PersistenceError`` naming the file."""
    try:
        fd = os.open(path, _CREATE_FLAGS, 0o666)
    except FileExistsError:
        raise PersistenceError(f"{path} already exists (planted?): refused") from None
    except OSError as exc:
        raise PersistenceError(f"cannot create {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise PersistenceError(f"cannot write {path}: {exc.strerror or exc}") from None


def replace_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, through a new temporary file renamed over it:
    a link at ``path`` is replaced (the rename swaps the name), never written through."""
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex}")
    write_new(tmp, data)
    try:
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise PersistenceError(f"cannot write {path}: {exc.strerror or exc}") from None


def json_bytes(data: Any) -> bytes:
    return json.dumps(data, indent=1, ensure_ascii=False, sort_keys=True).encode("utf-8")


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as a new JSON file (see ``write_new``)."""
    write_new(path, json_bytes(data))


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
    if not path.is_symlink() and not path.exists():
        raise PersistenceError(f"{path} is missing")
    return parse_json(read_capped(path, max_bytes), path)


def read_capped(
    path: Path,
    max_bytes: int,
    *,
    error: type[Exception] = PersistenceError,
    label: str = "",
    follow: bool = False,
) -> bytes:
    """The bytes of ``path``, read no further than the cap; a file that cannot be read or is
    over ``max_bytes`` raises ``error`` naming it (after ``label``, e.g. a CLI option). A link,
    FIFO or device (``/dev/zero``) is refused before a byte is read; a file over the cap is
    refused from its size, and never more than ``max_bytes + 1`` bytes are read."""
    fd = open_regular(path, error=error, label=label, follow=follow)
    with os.fdopen(fd, "rb") as f:
        size = os.fstat(fd).st_size
        if size > max_bytes:
            raise error(f"{label}{path} is {size:,} bytes, over the {max_bytes:,}-byte cap")
        try:
            data = f.read(max_bytes + 1)
        except OSError as exc:
            raise error(f"{label}{path} cannot be read: {exc.strerror or exc}") from None
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
