"""Crash-safe save directories: safetensors + JSON only, never pickle.

A save directory holds committed snapshots ``snap-<hex>/`` and a ``CURRENT`` file naming the
live one. A save writes a new snapshot beside the old one, fsyncs it, then atomically replaces
``CURRENT``; a crash at any point leaves either the previous snapshot or the new one live,
never a mix. Every file of a snapshot is listed with its size and sha256 in ``manifest.json``
and checked before anything is loaded from it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import struct
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from shared_core.errors import IncompatibleMemoryError, InputError, PersistenceError

FORMAT = "memorag"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
_POINTER = "CURRENT"
_SNAPSHOT = re.compile(r"^snap-[0-9a-f]{32}$")
_FILE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_MAX_JSON_BYTES = 64 * 1024 * 1024


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    for item in path.iterdir():
        if item.is_file():
            with item.open("rb") as f:
                os.fsync(f.fileno())
    _fsync_dir(path)


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False, sort_keys=True), "utf-8")


def read_json(path: Path) -> Any:
    """Read a JSON file with a size cap; errors name the file."""
    if not path.is_file():
        raise PersistenceError(f"{path} is missing")
    size = path.stat().st_size
    if size > _MAX_JSON_BYTES:
        raise PersistenceError(f"{path} is {size:,} bytes, over the {_MAX_JSON_BYTES:,} cap")
    try:
        return json.loads(path.read_text("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PersistenceError(f"{path} is not valid JSON (truncated or corrupt): {exc}") from None


class SaveDir:
    """One save directory: read the live snapshot, or stage and commit a new one."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    # -- reading ----------------------------------------------------------------------------
    def current(self) -> Path | None:
        """The live snapshot folder, or ``None`` if nothing was ever committed here."""
        pointer = self.root / _POINTER
        if not pointer.is_file():
            return None
        name = pointer.read_text("utf-8", errors="replace").strip()
        if not _SNAPSHOT.match(name):
            raise PersistenceError(f"{pointer} names {name[:80]!r}, not a snapshot of this format")
        snap = self.root / name
        if not snap.is_dir():
            raise PersistenceError(f"{pointer} names {name}, which is missing from {self.root}")
        return snap

    def require(self) -> tuple[Path, dict[str, Any]]:
        """The live snapshot and its verified manifest; clear errors when there is none."""
        if not self.root.exists():
            raise PersistenceError(f"{self.root} does not exist")
        if not self.root.is_dir():
            raise PersistenceError(f"{self.root} is not a directory")
        snap = self.current()
        if snap is None:
            raise PersistenceError(f"{self.root} holds no saved memory (no {_POINTER} file)")
        manifest = read_manifest(snap)
        verify_files(snap, manifest)
        return snap, manifest

    # -- writing ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def stage(self, *, lineage: str, overwrite: bool = False) -> Iterator[Path]:
        """Yield an empty staging folder; on success it becomes the live snapshot.

        ``lineage`` identifies the memory being saved: re-saving the same memory (after
        ``add``) replaces its snapshot; a different memory needs ``overwrite=True``.
        """
        self._check_target(lineage, overwrite)
        self.root.mkdir(parents=True, exist_ok=True)
        with self._lock():
            self._clean_leftovers()
            name = f"snap-{uuid.uuid4().hex}"
            staging = self.root / f".staging-{name}"
            staging.mkdir()
            try:
                yield staging
                if not (staging / MANIFEST).is_file():
                    raise PersistenceError("internal: a snapshot was staged without a manifest")
                _fsync_tree(staging)
                final = self.root / name
                staging.rename(final)
                old = self.current()
                tmp = self.root / f".{_POINTER}.tmp"
                tmp.write_text(name, "utf-8")
                with tmp.open("rb") as f:
                    os.fsync(f.fileno())
                tmp.replace(self.root / _POINTER)
                _fsync_dir(self.root)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            if old is not None and old.name != name:
                shutil.rmtree(old, ignore_errors=True)

    def _check_target(self, lineage: str, overwrite: bool) -> None:
        if not self.root.exists():
            return
        if not self.root.is_dir():
            raise InputError(f"save directory {self.root} is a file")
        try:
            snap = self.current()
        except PersistenceError:
            snap = None
        if snap is None:
            ours = {p.name for p in self.root.iterdir() if not p.name.startswith(".")}
            ours -= {_POINTER}
            ours = {n for n in ours if not _SNAPSHOT.match(n)}
            if ours and not overwrite:
                raise InputError(
                    f"save directory {self.root} is not empty and holds no memory "
                    f"({sorted(ours)[:3]}...); pick an empty directory or pass overwrite=True"
                )
            return
        try:
            existing = read_json(snap / MANIFEST).get("lineage")
        except PersistenceError:
            existing = None
        if existing != lineage and not overwrite:
            raise InputError(
                f"save directory {self.root} already holds another memory; "
                "pass overwrite=True (CLI: --overwrite) to replace it"
            )

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        with (self.root / ".lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _clean_leftovers(self) -> None:
        live = None
        with contextlib.suppress(PersistenceError):
            live = self.current()
        for item in self.root.iterdir():
            stale_stage = item.name.startswith(".staging-snap-")
            orphan = _SNAPSHOT.match(item.name) and (live is None or item != live)
            if item.is_dir() and (stale_stage or orphan):
                shutil.rmtree(item, ignore_errors=True)


def file_record(path: Path) -> dict[str, Any]:
    return {"bytes": path.stat().st_size, "sha256": sha256_file(path)}


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    """Write ``manifest.json`` with a record (size, sha256) of every other file in ``folder``."""
    files = {
        p.name: file_record(p)
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name != MANIFEST
    }
    write_json(
        folder / MANIFEST,
        {**manifest, "format": FORMAT, "format_version": FORMAT_VERSION, "files": files},
    )


def read_manifest(folder: Path) -> dict[str, Any]:
    manifest = read_json(folder / MANIFEST)
    where = folder / MANIFEST
    if not isinstance(manifest, dict):
        raise PersistenceError(f"{where} must hold a JSON object")
    if manifest.get("format") != FORMAT:
        raise IncompatibleMemoryError(f"{where} is not a {FORMAT} manifest")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise IncompatibleMemoryError(
            f"{where} has format_version {version!r}; this library reads {FORMAT_VERSION}"
        )
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise PersistenceError(f"{where}: 'files' must be an object")
    for name, rec in files.items():
        if not isinstance(name, str) or not _FILE_NAME.match(name):
            raise PersistenceError(f"{where}: file name {str(name)[:80]!r} is not allowed")
        if not (
            isinstance(rec, dict)
            and isinstance(rec.get("bytes"), int)
            and isinstance(rec.get("sha256"), str)
        ):
            raise PersistenceError(f"{where}: the record of {name} needs int bytes and sha256")
    return manifest


def verify_files(folder: Path, manifest: Mapping[str, Any]) -> None:
    """Check every listed file's size and sha256 against the manifest."""
    for name, rec in manifest["files"].items():
        path = folder / name
        if not path.is_file():
            raise PersistenceError(f"{path} is missing (listed in the manifest)")
        size = path.stat().st_size
        if size != rec["bytes"]:
            raise PersistenceError(
                f"{path} is {size:,} bytes, the manifest says {rec['bytes']:,} (truncated?)"
            )
        if sha256_file(path) != rec["sha256"]:
            raise PersistenceError(f"{path} does not match its sha256 in the manifest")


def check_safetensors_header(path: Path, *, max_header: int = 16 * 1024 * 1024) -> dict[str, Any]:
    """Parse a safetensors header and check every tensor lies inside the file."""
    size = path.stat().st_size
    with path.open("rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise PersistenceError(f"{path} is too short to be a safetensors file")
        (n,) = struct.unpack("<Q", raw)
        if n > min(max_header, size - 8):
            raise PersistenceError(f"{path} declares a {n:,}-byte header; the file is {size:,}")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise PersistenceError(f"{path} has a corrupt safetensors header") from None
    if not isinstance(header, dict):
        raise PersistenceError(f"{path} has a corrupt safetensors header")
    widths = {
        "F32": 4,
        "F16": 2,
        "BF16": 2,
        "I64": 8,
        "I32": 4,
        "I16": 2,
        "U8": 1,
        "I8": 1,
        "F64": 8,
        "BOOL": 1,
    }
    data_len = size - 8 - n
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (start, end) = info["dtype"], info["shape"], info["data_offsets"]
            count = 1
            for dim in shape:
                if not isinstance(dim, int) or dim < 0:
                    raise ValueError
                count *= dim
            ok = 0 <= start <= end <= data_len and end - start == count * widths[dtype]
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise PersistenceError(f"{path}: tensor {name!r} has a shape or offsets that lie")
    return header
