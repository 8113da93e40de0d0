"""Crash-safe save directories: safetensors + JSON only, never pickle.

A save directory holds committed snapshots ``snap-<hex>/`` and a ``CURRENT`` file naming the
live one. A save writes a new snapshot beside the old one, fsyncs it, then atomically replaces
``CURRENT``; a crash at any point leaves either the previous snapshot or the new one live,
never a mix. Every file of a snapshot is listed with its size and sha256 in ``manifest.json``
and checked before anything is loaded from it.

Reading never trusts the directory: every size is checked against the file before anything
is allocated, JSON is parsed with a size cap and without NaN/Infinity, symbolic links and
names that climb out of the snapshot are refused, and a snapshot may hold no file that its
manifest does not list. Nothing is ever written while reading. Writing never follows a link:
every file is a new name (``O_EXCL | O_NOFOLLOW``), ``CURRENT`` is replaced by a rename, the
lock is opened without following a link or blocking. See ``docs/reliability.md``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
import stat
import uuid
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any, TypeVar

from shared_core.errors import InputError, PersistenceError, StaleSnapshotError
from shared_core.persistence.files import (
    fsync_dir,
    fsync_file,
    fsync_tree,
    open_regular,
    read_json,
    write_new,
)
from shared_core.persistence.manifest import MANIFEST, is_known, read_manifest, verify_files

_POINTER = "CURRENT"
_SNAPSHOT = re.compile(r"^snap-[0-9a-f]{32}$")
_FILE_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$")
_MAX_POINTER_BYTES = 256
#: How often a load starts again when a concurrent save replaced the snapshot it was reading.
_READ_ATTEMPTS = 3
_LOCK_FLAGS = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
T = TypeVar("T")


class SaveDir:
    """One save directory: read the live snapshot, or stage and commit a new one."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        #: The snapshot the last ``stage`` committed (``snap-<hex>``), ``None`` before.
        self.committed: str | None = None

    # -- reading ----------------------------------------------------------------------------
    def current(self) -> Path | None:
        """The live snapshot folder, or ``None`` if nothing was ever committed here."""
        pointer = self.root / _POINTER
        if not pointer.is_symlink() and not pointer.exists():
            return None
        # Reliability: CURRENT is read without following a link or blocking on a FIFO.
        with os.fdopen(open_regular(pointer), "rb") as f:
            raw = f.read(_MAX_POINTER_BYTES)
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
    def stage(
        self, *, lineage: str, overwrite: bool = False, known: Collection[str] = ()
    ) -> Iterator[Path]:
        """Yield an empty staging folder; on success it becomes the live snapshot.

        ``lineage`` identifies the memory being saved and ``known`` the snapshots its state
        already contains (the one it was loaded from, those it saved since). Re-saving the same
        memory replaces its snapshot only while the live snapshot is one of ``known``: if
        another pipeline or process committed meanwhile, ``StaleSnapshotError`` (a lost update
        otherwise). A different memory needs ``overwrite=True``, which replaces either.
        """
        check_not_inside_save(self.root)
        self._check_target(lineage, overwrite, known)  # before creating anything (.lock too)
        self.root.mkdir(parents=True, exist_ok=True)
        with self._lock():  # one writer at a time, across threads and processes
            self._check_target(lineage, overwrite, known)  # again under the lock
            old = self._live()
            self._clean_leftovers(old)
            name = f"snap-{uuid.uuid4().hex}"
            staging = self.root / f".staging-{name}"
            staging.mkdir()  # a new name: a planted file or link of that name is an error
            try:
                yield staging
                if not (staging / MANIFEST).is_file():
                    raise PersistenceError("internal: a snapshot was staged without a manifest")
                # Reliability: every file was created new by ``write_new`` (mode 0o666 minus
                # the umask, never through a link); fsync_tree refuses anything else.
                fsync_tree(staging)
                final = self.root / name
                staging.rename(final)
                fsync_dir(self.root)  # the snapshot is durable before CURRENT names it
                # A new temporary name (O_EXCL, no link followed), renamed over CURRENT: a
                # planted .CURRENT.tmp or a CURRENT that is a link is replaced, never written.
                tmp = self.root / f".{_POINTER}.tmp-{uuid.uuid4().hex}"
                write_new(tmp, name.encode("utf-8"))
                fsync_file(tmp)
                os.replace(tmp, self.root / _POINTER)
                fsync_dir(self.root)
            except BaseException as exc:
                shutil.rmtree(staging, ignore_errors=True)
                if isinstance(exc, OSError) and not isinstance(exc, PersistenceError):
                    # Reliability: a full disk or a file-size limit, named; the old save stays.
                    raise PersistenceError(
                        f"cannot write the save to {self.root}: {exc.strerror or exc}; the "
                        "previous save (if any) is intact"
                    ) from None
                raise
            self.committed = name
            if old is not None and old.name != name and not old.is_symlink():
                shutil.rmtree(old, ignore_errors=True)

    def _check_target(self, lineage: str, overwrite: bool, known: Collection[str]) -> None:
        if not self.root.exists():
            return
        if not self.root.is_dir():
            raise InputError(f"save directory {self.root} is a file")
        try:
            snap = self.current()
        except PersistenceError as exc:
            # Reliability: a garbage CURRENT is refused before anything is deleted.
            if overwrite:
                return
            raise PersistenceError(
                f"{exc}; the save directory {self.root} is damaged: repair or remove "
                f"{self.root / _POINTER}, or pass overwrite=True (CLI: --overwrite) to replace "
                "everything in it"
            ) from None
        if snap is None:
            names = {p.name for p in self.root.iterdir() if not p.name.startswith(".")}
            snapshots = sorted(n for n in names if _SNAPSHOT.match(n))
            if snapshots and not overwrite:
                # Reliability: a snapshot without CURRENT (deleted, or a first save cut short)
                # may be the only copy of a memory: never deleted as an orphan unasked.
                raise InputError(
                    f"save directory {self.root} holds the snapshot {snapshots[0]} but no "
                    f"{_POINTER} file naming it (deleted, or a save was interrupted); pass "
                    "overwrite=True (CLI: --overwrite) to replace it, or restore CURRENT"
                )
            ours = {n for n in names - {_POINTER} if not _SNAPSHOT.match(n)}
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
        if overwrite:
            return
        if existing != lineage:
            raise InputError(
                f"save directory {self.root} already holds another memory; "
                "pass overwrite=True (CLI: --overwrite) to replace it"
            )
        if snap.name not in known:
            # Reliability: the same memory, but saved by someone else since this state was
            # loaded: replacing it would silently drop their documents.
            base = ", ".join(sorted(known)) or "none (this state was never loaded or saved here)"
            raise StaleSnapshotError(
                f"save directory {self.root} moved on: its live snapshot is {snap.name}, but "
                f"this pipeline's memory was loaded from (or last saved as) {base}; saving would "
                "drop what was saved since. Reload with MemoRAG.from_dir(...) (CLI: run the "
                "command again), then add your documents again; or pass overwrite=True to "
                "replace it on purpose"
            )

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        path = self.root / ".lock"
        # Reliability: the lock is opened without following a link and without blocking (a
        # FIFO planted as .lock would block forever), and must be a regular file.
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | _LOCK_FLAGS, 0o666)
        except OSError as exc:
            what = "a symbolic link" if exc.errno == errno.ELOOP else exc.strerror or str(exc)
            raise PersistenceError(f"{path} cannot be a lock: {what}; remove it") from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise PersistenceError(f"{path} is not a regular file (a FIFO?): remove it")
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def _clean_leftovers(self, live: Path | None) -> None:
        for item in self.root.iterdir():
            if item.is_symlink():
                continue  # never followed, and not ours: left alone
            if item.name.startswith(f".{_POINTER}.tmp"):
                item.unlink(missing_ok=True)  # a crash between writing it and the rename
                continue
            stale_stage = item.name.startswith(".staging-snap-")
            orphan = _SNAPSHOT.match(item.name) and (live is None or item != live)
            if item.is_dir() and (stale_stage or orphan):
                shutil.rmtree(item, ignore_errors=True)


def link_from_live(staging: Path, name: str) -> bool:
    """Hard-link ``name`` from the live snapshot of the save directory ``staging`` is in (its
    parent), if that snapshot holds it as a regular file this process wrote or verified and
    that has not changed since: a content-addressed file a new snapshot shares with the old one
    is then not written again. ``False`` when there is none (or the file system has no hard
    links): the caller writes it."""
    if not staging.name.startswith(".staging-snap-") or not _FILE_NAME.match(name):
        return False
    try:
        live = SaveDir(staging.parent).current()
    except PersistenceError:
        return False
    if live is None:
        return False
    source = live / name
    try:
        if not stat.S_ISREG(os.lstat(source).st_mode) or not is_known(source):
            return False
        os.link(source, staging / name, follow_symlinks=False)
    except OSError:
        return False
    return True


def check_not_inside_save(root: Path) -> None:
    """Refuse a save directory inside another save directory (or inside one of its snapshots):
    writing there would add files a snapshot does not list and make the outer memory
    unloadable."""
    resolved = root.resolve()
    for parent in resolved.parents:
        inside_snapshot = _SNAPSHOT.match(parent.name) or parent.name.startswith(".staging-")
        if (parent / _POINTER).is_file() and SaveDir(parent)._live() is not None:
            raise InputError(
                f"save directory {root} is inside the save directory {parent}; pick a folder "
                "outside it (a save directory holds only its own snapshots)"
            )
        if inside_snapshot and (parent / MANIFEST).is_file():
            raise InputError(
                f"save directory {root} is inside the snapshot {parent} of another save; pick a "
                "folder outside it"
            )
