"""Crash-safe save directories: safetensors + JSON only, never pickle.

A save directory holds committed snapshots ``snap-<hex>/`` and a ``CURRENT`` file naming the
live one. A save writes a new snapshot beside the old one, fsyncs it, then atomically replaces
``CURRENT``; a crash at any point leaves either the previous snapshot or the new one live,
never a mix. Every file of a snapshot is listed with its size and sha256 in ``manifest.json``
and checked before anything is loaded from it.

Reading never trusts the directory: every size is checked against the file before anything
is allocated, JSON is parsed with a size cap and without NaN/Infinity, symbolic links and
names that climb out of the snapshot are refused, and a snapshot may hold no file that its
manifest does not list. Nothing is ever written while reading. See ``docs/reliability.md``.
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
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from shared_core.errors import IncompatibleMemoryError, InputError, PersistenceError

FORMAT = "memorag"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
_POINTER = "CURRENT"
_SNAPSHOT = re.compile(r"^snap-[0-9a-f]{32}$")
_FILE_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$")  # no leading dot: no "..", "."
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_MAX_JSON_BYTES = 64 * 1024 * 1024
_MAX_POINTER_BYTES = 256
#: How often a load starts again when a concurrent save replaced the snapshot it was reading.
_READ_ATTEMPTS = 3
T = TypeVar("T")


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
        try:
            with pointer.open("rb") as f:
                raw = f.read(_MAX_POINTER_BYTES)
        except OSError as exc:
            raise PersistenceError(f"{pointer} cannot be read: {exc}") from None
        name = raw.decode("utf-8", errors="replace").strip()
        if not _SNAPSHOT.match(name):
            raise PersistenceError(f"{pointer} names {name[:80]!r}, not a snapshot of this format")
        snap = self.root / name
        if snap.is_symlink():
            raise PersistenceError(f"{pointer} names {name}, a symbolic link: refused")
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
        try:
            manifest = read_manifest(snap)
            verify_files(snap, manifest)
        except PersistenceError:
            raise
        except OSError as exc:  # e.g. a concurrent save removed this snapshot meanwhile
            raise PersistenceError(f"{snap} cannot be read: {exc}") from None
        return snap, manifest

    def read(self, loader: Callable[[Path, dict[str, Any]], T]) -> T:
        """``loader(snapshot, manifest)`` on the live snapshot, verified first.

        A save committed by another process while we read deletes the snapshot being read
        (its files go missing, never change); the read then starts again on the new live
        snapshot, so a load sees one whole save, never a mix. ``loader`` must not keep state
        from a failed attempt.
        """
        for attempt in range(_READ_ATTEMPTS):
            live = self._live()
            try:
                snap, manifest = self.require()
                return loader(snap, manifest)
            except OSError as exc:  # PersistenceError included; raw ones: file vanished
                moved = self._live() != live or (live is not None and not live.is_dir())
                if attempt + 1 < _READ_ATTEMPTS and moved:
                    continue
                if isinstance(exc, PersistenceError):
                    raise
                raise PersistenceError(f"{live or self.root} cannot be read: {exc}") from exc
        raise AssertionError("unreachable")

    def _live(self) -> Path | None:
        try:
            return self.current()
        except PersistenceError:
            return None

    # -- writing ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def stage(self, *, lineage: str, overwrite: bool = False) -> Iterator[Path]:
        """Yield an empty staging folder; on success it becomes the live snapshot.

        ``lineage`` identifies the memory being saved: re-saving the same memory (after
        ``add``) replaces its snapshot; a different memory needs ``overwrite=True``.
        """
        self._check_target(lineage, overwrite)  # before creating anything (.lock included)
        self.root.mkdir(parents=True, exist_ok=True)
        with self._lock():  # one writer at a time, across threads and processes
            self._check_target(lineage, overwrite)  # again under the lock: no check-then-act
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
                _fsync_dir(self.root)  # the snapshot is durable before CURRENT names it
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
            manifest = read_json(snap / MANIFEST)
        except PersistenceError:
            manifest = None
        existing = manifest.get("lineage") if isinstance(manifest, dict) else None
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
            f"{where} has format_version {_short(version)}; this library reads {FORMAT_VERSION}"
        )
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise PersistenceError(f"{where}: 'files' must be an object")
    for name, rec in files.items():
        if not isinstance(name, str) or not _FILE_NAME.match(name) or name == MANIFEST:
            raise PersistenceError(
                f"{where}: file name {_short(name)} is not allowed (plain names only: no '/', "
                "no leading '.', nothing that climbs out of the snapshot)"
            )
        if not (
            isinstance(rec, dict)
            and _is_int(rec.get("bytes"))
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
        if sha256_file(path) != rec["sha256"]:
            raise PersistenceError(f"{path} does not match its sha256 in the manifest")


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
_FLOATS = frozenset({"F32", "F16", "BF16", "F64"})


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
                and all(_is_int(d) and d >= 0 for d in shape)
                and isinstance(offsets, list)
                and len(offsets) == 2
                and all(_is_int(o) for o in offsets)
            )
        if ok:
            start, end = offsets
            count = 1
            for dim in shape:
                count *= dim
            ok = 0 <= start <= end <= data_len and end - start == count * _WIDTHS[dtype]
        if not ok:
            raise PersistenceError(f"{path}: tensor {_short(name)} has a shape or offsets that lie")
        spans.append((start, end, name))
    position = 0
    for start, end, name in sorted(spans):
        if start != position:
            raise PersistenceError(
                f"{path}: tensor {_short(name)} starts at byte {start:,}, expected {position:,} "
                "(tensors overlap or leave a gap)"
            )
        position = end
    if position != data_len:
        raise PersistenceError(
            f"{path}: the tensors cover {position:,} of {data_len:,} data bytes (truncated or "
            "padded)"
        )
    return header


def check_kv_layout(
    path: Path,
    header: Mapping[str, Any],
    *,
    layers: int,
    entries: int,
    kv_heads: int | None = None,
) -> None:
    """Check a KV-memory header holds ``k.i``/``v.i`` ``[1, heads, entries, dim]`` (float) and
    ``p.i`` ``[heads, entries]`` (int64) for each of ``layers`` layers, and nothing else."""
    expected = {f"{t}.{i}" for i in range(layers) for t in "kvp"}
    names = set(header) - {"__metadata__"}
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
            if info["dtype"] not in _FLOATS or len(shape) != 4 or shape[0] != 1:
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
        if kv_heads is not None and heads != kv_heads:
            raise PersistenceError(
                f"{path}: layer {i} holds {heads} KV heads; the model has {kv_heads}"
            )


def check_memory_fields(where: Path, section: Mapping[str, Any]) -> None:
    """Check the generic fields of a memory's manifest section (documents, seconds, ...)."""
    documents = section.get("documents")
    if not isinstance(documents, list):
        raise PersistenceError(f"{where}: the memory's documents must be a list")
    seen: set[str] = set()
    for i, doc in enumerate(documents):
        doc_id = doc.get("doc_id") if isinstance(doc, dict) else None
        if not isinstance(doc_id, str) or not doc_id or doc_id in seen:
            raise PersistenceError(
                f"{where}: memory document {i} needs a unique, non-empty string doc_id"
            )
        seen.add(doc_id)
        chars = doc.get("chars", 0)
        keys = doc.get("metadata_keys", [])
        if not (_is_int(chars) and chars >= 0) or not (
            isinstance(keys, list) and all(isinstance(k, str) for k in keys)
        ):
            raise PersistenceError(f"{where}: memory document {i} ({doc_id}) is malformed")
    seconds = section.get("seconds")
    if seconds is not None and not (
        isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and 0 <= seconds < 1e12
    ):
        raise PersistenceError(f"{where}: seconds must be a non-negative number")
    for key in ("text_sha256", "lineage"):
        if section.get(key) is not None and not isinstance(section.get(key), str):
            raise PersistenceError(f"{where}: {key} must be a string")


def saved_settings(
    where: Path, section: Mapping[str, Any], given: Mapping[str, Any], backends: Sequence[str]
) -> dict[str, Any]:
    """The ``MemoRAG`` settings a save's ``pipeline`` section names, each checked.

    ``given`` are the caller's keyword arguments: they win, and their saved counterparts are
    not used. A save may not make ``from_dir`` run code shipped with a model
    (``trust_remote_code``, the native beacon back-end) unless the caller names that model.
    """
    # With memory= given, the saved memory settings are not used (its back-end may be custom).
    unused = set(given) | (
        {"mem_model_name_or_path", "memory_backend", "beacon_ratio", "window", "scorer"}
        if "memory" in given
        else set()
    )

    def pick(key: str, default: Any, ok: Callable[[Any], bool], want: str) -> Any:
        value = section.get(key, default)
        if key not in unused and not ok(value):
            raise PersistenceError(f"{where}: pipeline.{key} must be {want}, got {_short(value)}")
        return value

    def name(v: Any) -> bool:
        return v is None or (isinstance(v, str) and 0 < len(v) <= 4096 and "\x00" not in v)

    settings: dict[str, Any] = {
        "mem_model_name_or_path": pick("mem_model_name_or_path", None, name, "a model name"),
        "ret_model_name_or_path": pick("ret_model_name_or_path", None, name, "a model name"),
        "retrieval_chunk_size": pick(
            "retrieval_chunk_size",
            512,
            lambda v: _is_int(v) and 1 <= v <= 1 << 20,
            "a positive int",
        ),
        "chunk_overlap": pick(
            "chunk_overlap", 32, lambda v: _is_int(v) and 0 <= v < 1 << 20, "a non-negative int"
        ),
        "memory_backend": pick(
            "memory_backend",
            "auto",
            lambda v: isinstance(v, str) and v in backends,
            f"one of {tuple(backends)}",
        ),
    }
    options = section.get("memory_options", {})
    if not isinstance(options, dict):
        raise PersistenceError(f"{where}: pipeline.memory_options must be an object")
    checks = {
        "beacon_ratio": (lambda v: _is_int(v) and 1 <= v <= 1 << 16, "a positive int"),
        "window": (lambda v: _is_int(v) and 16 <= v <= 1 << 24, "an int >= 16"),
        "scorer": (lambda v: isinstance(v, str) and 0 < len(v) <= 64, "a scorer name"),
    }
    for key, (ok, want) in checks.items():
        if key in options and key not in unused:
            if not ok(options[key]):
                raise PersistenceError(
                    f"{where}: pipeline.memory_options.{key} must be {want}, "
                    f"got {_short(options[key])}"
                )
            settings[key] = options[key]
    model = settings["mem_model_name_or_path"]
    backend = settings["memory_backend"]
    remote = backend == "beacon" or (
        backend == "auto" and isinstance(model, str) and "memorag" in model.lower()
    )
    if remote and not {"memory", "mem_model_name_or_path", "memory_backend"} & set(given):
        raise PersistenceError(
            f"{where}: the save names memory model {_short(model)} with back-end {backend!r}, "
            "which runs code shipped with the model (trust_remote_code); a save directory "
            "cannot ask for that: pass mem_model_name_or_path= (or memory=) to from_dir"
        )
    settings = {k: v for k, v in settings.items() if k not in unused}
    settings.update(given)
    return settings


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
