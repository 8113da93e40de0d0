"""The manifest: every file of a snapshot with its size and sha256, checked before loading."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from shared_core.errors import IncompatibleMemoryError, PersistenceError
from shared_core.persistence.files import is_int, read_json, sha256_file, short, write_json

FORMAT = "memorag"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
_FILE_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$")  # no leading dot: no "..", "."
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


#: sha256 of files this process wrote or verified, by (device, inode, size, mtime): a file
#: hard-linked into a new snapshot is not read again to be listed. Only used to *write* a
#: manifest; every load still hashes every file.
_KNOWN: dict[tuple[int, int, int, int], str] = {}
_MAX_KNOWN = 4096


def _key(path: Path) -> tuple[int, int, int, int]:
    info = os.lstat(path)
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)


def _remember(key: tuple[int, int, int, int], digest: str) -> None:
    if len(_KNOWN) >= _MAX_KNOWN:
        _KNOWN.clear()
    _KNOWN[key] = digest


def is_known(path: Path) -> bool:
    """Whether this process wrote and hashed ``path``, or verified it against a manifest, and
    it has not changed since (same inode, size and mtime)."""
    try:
        return _key(path) in _KNOWN
    except OSError:
        return False


def file_record(path: Path) -> dict[str, Any]:
    key = _key(path)
    digest = _KNOWN.get(key)
    if digest is None:
        digest = sha256_file(path)
        _remember(key, digest)
    return {"bytes": key[2], "sha256": digest}


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
            f"{where} has format_version {short(version)}; this library reads {FORMAT_VERSION}"
        )
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise PersistenceError(f"{where}: 'files' must be an object")
    for name, rec in files.items():
        if not isinstance(name, str) or not _FILE_NAME.match(name) or name == MANIFEST:
            raise PersistenceError(
                f"{where}: file name {short(name)} is not allowed (plain names only: no '/', "
                "no leading '.', nothing that climbs out of the snapshot)"
            )
        if not (
            isinstance(rec, dict)
            and is_int(rec.get("bytes"))
            and rec["bytes"] >= 0
            and isinstance(rec.get("sha256"), str)
            and _SHA256.match(rec["sha256"])
        ):
            raise PersistenceError(
                f"{where}: the record of {name} needs non-negative int bytes and a hex sha256"
            )
    return manifest


def verify_files(folder: Path, manifest: Mapping[str, Any]) -> None:
    """Check the snapshot holds exactly the listed files, each with its size and sha256."""
    files = manifest["files"]
    for item in sorted(folder.iterdir()):
        if item.name == MANIFEST:
            continue
        if item.is_symlink() or not item.is_file():
            raise PersistenceError(f"{item} is not a plain file: a snapshot holds plain files only")
        if item.name not in files:
            raise PersistenceError(
                f"{item} is not listed in {folder / MANIFEST} (a file from another save?)"
            )
    for name, rec in files.items():
        path = folder / name
        if path.is_symlink():
            raise PersistenceError(f"{path} is a symbolic link: refused")
        if not path.is_file():
            raise PersistenceError(f"{path} is missing (listed in the manifest)")
        size = path.stat().st_size
        if size != rec["bytes"]:
            raise PersistenceError(
                f"{path} is {size:,} bytes, the manifest says {rec['bytes']:,} (truncated?)"
            )
        key = _key(path)
        if sha256_file(path) != rec["sha256"]:
            raise PersistenceError(f"{path} does not match its sha256 in the manifest")
        _remember(key, rec["sha256"])
