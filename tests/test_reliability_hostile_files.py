"""Hostile files and full disks (issue 25): links planted in a save directory are never
written through, a FIFO or device is never read or blocked on, nothing saved is deleted by a
damaged directory, input a save could not hold is refused before anything changes, a failed
save says what is unsaved, and every failure is a ``MemoRAGError`` (CLI: exit 2).

Real saves: the compressed KV memory on the tiny Llama and the embedded MiniLM embedder
(``tests/crash_worker.py``)."""

from __future__ import annotations

import datetime
import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import torch
from crash_worker import corpus, make_pipeline, shared_embedder

import shared_core.memory.kv_persist as kv_persist
import shared_core.persistence.manifest as manifest_module
from shared_core import cli
from shared_core.errors import InputError, MemoRAGError, PersistenceError
from shared_core.head_sets import HeadSet
from shared_core.persistence import SaveDir
from shared_core.pipeline import MemoRAG
from shared_core.types import ChatTurn, Document

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
pytestmark = pytest.mark.usefixtures("one_torch_thread")
VICTIM_TEXT = "IMPORTANT USER DATA\n"


@pytest.fixture(scope="module")
def golden(tmp_path_factory, llama) -> Path:
    pipe = make_pipeline(llama)
    pipe.memorize(corpus(4))
    root = tmp_path_factory.mktemp("golden") / "mem"
    pipe.save(root)
    return root


@pytest.fixture
def root(golden: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "mem"
    shutil.copytree(golden, copy)
    return copy


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A file outside every save directory, readable only by its owner."""
    path = tmp_path / "elsewhere" / "victim.txt"
    path.parent.mkdir()
    path.write_text(VICTIM_TEXT)
    path.chmod(0o600)
    return path


def live(root: Path) -> Path:
    snap = SaveDir(root).current()
    assert snap is not None
    return snap


def snapshots(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith("snap-"))


def saved_ids(root: Path, llama: Any) -> list[str]:
    return [d["doc_id"] for d in make_pipeline(llama).load(root).memory.documents]


def untouched(victim: Path) -> bool:
    return victim.read_text() == VICTIM_TEXT and (victim.stat().st_mode & 0o777) == 0o600


NEW = Document("The heron waits by the pond at noon.", doc_id="heron")


# -- 1. writes through planted links -------------------------------------------------------------


def test_a_planted_current_tmp_link_is_never_written_through(root, victim, llama):
    (root / ".CURRENT.tmp").symlink_to(victim)
    make_pipeline(llama).load(root).add([NEW], save_dir=root)
    assert untouched(victim)
    assert not (root / "CURRENT").is_symlink()
    assert saved_ids(root, llama)[-1] == "heron"


def test_a_current_that_is_a_link_is_refused_and_only_overwrite_replaces_it(root, victim, llama):
    victim.write_text(live(root).name)  # the link names a real snapshot: following it would work
    victim.chmod(0o600)
    before = victim.read_text()
    (root / "CURRENT").unlink()
    (root / "CURRENT").symlink_to(victim)
    with pytest.raises(PersistenceError, match="CURRENT is a symbolic link"):
        make_pipeline(llama).load(root)
    pipe = make_pipeline(llama)
    pipe.memorize(corpus(2))
    with pytest.raises(PersistenceError, match="symbolic link"):
        pipe.save(root)
    pipe.save(root, overwrite=True)
    assert victim.read_text() == before and (victim.stat().st_mode & 0o777) == 0o600
    assert not (root / "CURRENT").is_symlink()
    assert saved_ids(root, llama) == ["doc-0", "doc-1"]


def test_a_lock_that_is_a_link_is_refused_and_nothing_is_created_outside(root, tmp_path, llama):
    outside = tmp_path / "elsewhere-lock"
    (root / ".lock").unlink(missing_ok=True)
    (root / ".lock").symlink_to(outside)
    pipe = make_pipeline(llama).load(root)
    with pytest.raises(PersistenceError, match=r"\.lock cannot be a lock: a symbolic link"):
        pipe.add([NEW], save_dir=root)
    assert not outside.exists()
    assert saved_ids(root, llama) == ["doc-0", "doc-1", "doc-2", "doc-3"]


def test_a_fifo_as_lock_does_not_block(root, llama):
    (root / ".lock").unlink(missing_ok=True)
    os.mkfifo(root / ".lock")
    pipe = make_pipeline(llama).load(root)
    caught: list[BaseException] = []

    def add() -> None:
        try:
            pipe.add([NEW], save_dir=root)
        except BaseException as exc:
            caught.append(exc)

    worker = threading.Thread(target=add, daemon=True)
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive(), "add() blocked on a FIFO planted as .lock"
    assert caught and isinstance(caught[0], PersistenceError)
    assert "not a regular file" in str(caught[0])


def test_index_files_are_never_written_through_a_planted_link(golden, victim, tmp_path, llama):
    pipe = make_pipeline(llama).load(golden)
    folder = tmp_path / "index"
    folder.mkdir()
    (folder / "chunks.json").symlink_to(victim)
    with pytest.raises(PersistenceError, match=r"chunks\.json already exists"):
        pipe.index.save(folder)
    assert untouched(victim)


def test_a_head_set_saved_over_a_link_replaces_the_link_not_its_target(victim, tmp_path):
    target = tmp_path / "heads.json"
    target.symlink_to(victim)
    HeadSet(model="m", fingerprint="f", heads=((0, 1),)).save(target)
    assert untouched(victim)
    assert not target.is_symlink()
    assert HeadSet.load(target).heads == ((0, 1),)


# -- 2. data loss ---------------------------------------------------------------------------------


def test_a_snapshot_without_current_is_not_deleted_as_an_orphan(root, llama):
    old = live(root).name
    (root / "CURRENT").unlink()
    pipe = make_pipeline(llama)
    with pytest.raises(InputError, match=rf"holds the snapshot {old} but no CURRENT"):
        pipe.memorize(corpus(2), save_dir=root)
    assert snapshots(root) == [old]
    pipe.memorize(corpus(2), save_dir=root, overwrite=True)  # on purpose: replaced
    assert saved_ids(root, llama) == ["doc-0", "doc-1"]


def test_a_garbage_current_is_refused_before_anything_is_deleted(root, llama):
    old = live(root).name
    (root / "CURRENT").write_text("garbage\n")
    pipe = make_pipeline(llama)
    pipe.memorize(corpus(2))
    with pytest.raises(PersistenceError, match=r"CURRENT names 'garbage'.*overwrite=True"):
        pipe.save(root)
    assert snapshots(root) == [old]  # the old snapshot kept, no new orphan beside it
    assert not [p for p in root.iterdir() if p.name.startswith(".staging")]


BAD_DOCUMENTS = [
    (
        {"text": "A note.", "doc_id": "dated", "metadata": {"when": datetime.date(2026, 1, 1)}},
        "when",
    ),
    ({"text": "A note.", "doc_id": "tagged", "metadata": {"tags": {"a", "b"}}}, "tags"),
    ({"text": "A note.", "doc_id": "huge", "metadata": {"n": 10**5000}}, "n"),
    ({"text": "A note.", "doc_id": "nan", "metadata": {"x": float("nan")}}, "x"),
    ({"text": "A note.", "doc_id": "keyed", "metadata": {3: "three"}}, "key 3"),
    ({"text": "A note.", "doc_id": "bad\ud800id"}, "doc_id holds a lone surrogate U\\+D800"),
    ({"text": "A note \udcff here.", "doc_id": "bytes"}, "invalid UTF-8 byte 0xff"),
]


@pytest.mark.parametrize(
    ("doc", "field"), BAD_DOCUMENTS, ids=[d["doc_id"] for d, _ in BAD_DOCUMENTS]
)
def test_a_document_a_save_could_not_hold_is_refused_before_anything_changes(
    root, llama, doc, field
):
    pipe = make_pipeline(llama).load(root)
    docs, chunks = pipe.memory.documents, len(pipe.index)
    with pytest.raises(InputError, match=field):
        pipe.add([doc], save_dir=root)
    assert pipe.memory.documents == docs and len(pipe.index) == chunks
    pipe.add([NEW], save_dir=root)  # a clean document afterwards saves as usual
    assert saved_ids(root, llama)[-1] == "heron"


def test_a_failed_save_says_what_is_unsaved_and_a_retry_saves_it(root, llama, monkeypatch):
    real = kv_persist.write_tensors

    def full_disk(*args: Any, **kwargs: Any) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    pipe = make_pipeline(llama).load(root)
    monkeypatch.setattr(kv_persist, "write_tensors", full_disk)
    with pytest.raises(PersistenceError, match=r"No space left.*'heron' .*NOT saved"):
        pipe.add([NEW], save_dir=root)
    assert saved_ids(root, llama) == ["doc-0", "doc-1", "doc-2", "doc-3"]  # old save intact
    assert not [p for p in root.iterdir() if p.name.startswith(".staging")]
    monkeypatch.setattr(kv_persist, "write_tensors", real)
    pipe.add([NEW], save_dir=root)  # the same call again: saved, not "already in the memory"
    assert saved_ids(root, llama)[-1] == "heron"
    assert [d["doc_id"] for d in pipe.memory.documents].count("heron") == 1


# -- 3. bounded reads -----------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["/dev/zero", "fifo"])
def test_memorize_from_a_device_or_fifo_is_refused_before_reading(source, tmp_path, capsys):
    if source == "fifo":
        source = str(tmp_path / "pipe")
        os.mkfifo(source)
    code = cli.main(["memorize", source, "--save-dir", str(tmp_path / "mem")])
    assert code == 2
    assert "not a regular file" in capsys.readouterr().err
    assert not (tmp_path / "mem").exists()


def test_a_text_file_over_the_cap_is_refused_from_its_size(tmp_path, capsys, monkeypatch):
    import shared_core.cli_inputs as cli_inputs

    monkeypatch.setattr(cli_inputs, "MAX_TEXT_BYTES", 1000)
    big = tmp_path / "big.txt"
    big.write_text("word " * 1000)
    assert cli.main(["memorize", str(big), "--save-dir", str(tmp_path / "mem")]) == 2
    assert "over the 1,000-byte cap" in capsys.readouterr().err


@pytest.mark.parametrize("source", ["/dev/zero", "fifo"])
def test_a_head_set_from_a_device_or_fifo_is_refused(source, tmp_path):
    if source == "fifo":
        source = str(tmp_path / "pipe")
        os.mkfifo(source)
    with pytest.raises(PersistenceError, match="not a regular file"):
        HeadSet.load(source)
    with pytest.raises(MemoRAGError, match="not a regular file"):
        MemoRAG(head_set=source)


# -- 4. foreign errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "value"), [("pipeline", [1, 2]), ("memory", "abc"), ("index", 7)]
)
def test_a_manifest_section_of_the_wrong_type_is_our_error(root, section, value, capsys):
    path = live(root) / "manifest.json"
    data = json.loads(path.read_text())
    data[section] = value
    path.write_text(json.dumps(data))
    assert cli.main(["stats", str(root)]) == 2
    assert f"the '{section}' section is a JSON" in capsys.readouterr().err
    note = root.parent / "note.txt"
    note.write_text("A new note.")
    assert cli.main(["add", str(note), str(root)]) == 2
    assert f"the '{section}' section is a JSON" in capsys.readouterr().err


def test_an_undecodable_byte_in_a_cli_query_is_our_error(root, capsys):
    query = os.fsdecode(b"who is \xff?")  # what Python makes of such an argv
    for command in ("ask", "retrieve"):
        assert cli.main([command, str(root), query]) == 2
        assert "invalid UTF-8 byte 0xff" in capsys.readouterr().err


@pytest.mark.parametrize("query", ["who is \ud800?", "x\udfff"])
def test_a_lone_surrogate_in_a_query_is_our_error(golden, llama, query):
    pipe = make_pipeline(llama).load(golden)
    with pytest.raises(InputError, match="lone surrogate"):
        pipe.retrieve(query, 2)


def test_call_arguments_are_checked_with_their_name(golden, llama):
    pipe = make_pipeline(llama).load(golden)
    with pytest.raises(InputError, match="extra_queries must be a list of strings"):
        pipe.retrieve("who lives by the river?", 2, extra_queries="abc")  # type: ignore[arg-type]
    with pytest.raises(InputError, match=r"history\[0\] is a str"):
        pipe.retrieve("who?", 2, history=["user: hi"])  # type: ignore[list-item]
    with pytest.raises(InputError, match=r"history\[0\] is a str"):
        pipe.answer("who?", history=["user: hi"])  # type: ignore[list-item]
    with pytest.raises(InputError, match=r"history\[0\]: role must be one of"):
        pipe.retrieve("who?", 2, history=[ChatTurn("robot", "hi")])  # type: ignore[arg-type]
    assert len(pipe.retrieve("who?", 2, extra_queries=["fox"]).passages) == 2


_ULIMIT_CHILD = r"""
import resource, sys
sys.path[:0] = [{tests!r}, {root!r}]
from crash_worker import make_pipeline
import shared_core.cli as cli
resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
cli._build_pipeline = lambda save_dir=None, **kw: make_pipeline().load(save_dir)
sys.exit(cli.main(["add", {note!r}, {save!r}]))
"""


def test_a_file_size_limit_ends_the_cli_with_our_error_and_the_old_save_intact(root, llama):
    note = root.parent / "note.txt"
    note.write_text("The heron waits by the pond at noon. " * 20)
    limit = 16 * 1024  # under the tensor file, over every file read
    assert (live(root) / "memory.safetensors").stat().st_size > limit  # rewritten by every add
    code = _ULIMIT_CHILD.format(
        tests=str(TESTS), root=str(ROOT), limit=limit, note=str(note), save=str(root)
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "error:" in done.stderr and "File too large" in done.stderr
    assert "Traceback" not in done.stderr
    assert saved_ids(root, llama) == ["doc-0", "doc-1", "doc-2", "doc-3"]
    assert not [p for p in root.iterdir() if p.name.startswith(".staging")]


# -- 5. Qdrant ------------------------------------------------------------------------------------


def test_reloading_into_a_qdrant_folder_keeps_one_collection(golden, tmp_path):
    from shared_core.retrieval.qdrant_index import QdrantIndex, connect

    store = tmp_path / "qdrant"
    for _ in range(4):
        index = QdrantIndex.load(live(golden), shared_embedder(), path=store)
        assert len(index) > 0
        index.client.close()
    client = connect(path=store)
    assert len(client.get_collections().collections) == 1
    client.close()


@pytest.mark.parametrize("damaged", ["meta.json", "storage.sqlite"])
def test_a_corrupt_qdrant_folder_is_our_error_naming_it(golden, tmp_path, damaged):
    from shared_core.retrieval.qdrant_index import QdrantIndex

    store = tmp_path / "qdrant"
    QdrantIndex.load(live(golden), shared_embedder(), path=store).client.close()
    for path in store.rglob(damaged):
        path.write_bytes(b"garbage, not a database" * 100)
    with pytest.raises(PersistenceError, match=str(store)):
        QdrantIndex.load(live(golden), shared_embedder(), path=store)


# -- 6. an add writes what it added ---------------------------------------------------------------


def kv_files(snap: Path) -> dict[str, os.stat_result]:
    names = [
        p for p in snap.iterdir() if p.name == "memory.safetensors" or p.name.startswith("kv-")
    ]
    return {p.name: p.stat() for p in names}


def same_state(a: Any, b: Any) -> bool:
    return all(
        torch.equal(x, y)
        for field in ("keys", "values", "positions", "origins")
        for x, y in zip(getattr(a, field), getattr(b, field), strict=True)
    )


def test_a_small_add_writes_what_it_added_not_the_whole_memory(tmp_path, llama):
    pipe = make_pipeline(llama)
    pipe.memorize(corpus(12))
    root = tmp_path / "mem"
    pipe.save(root)
    first = kv_files(live(root))
    memory_bytes = sum(s.st_size for s in first.values())
    for n, doc in enumerate([NEW, Document("The crane sleeps on one leg.", doc_id="crane")]):
        before = {s.st_ino for s in kv_files(live(root)).values()}
        pipe.add([doc], save_dir=root)
        after = kv_files(live(root))
        written = sum(s.st_size for s in after.values() if s.st_ino not in before)
        shared = sum(s.st_size for s in after.values() if s.st_ino in before)
        # the earlier entries are hard links to the old snapshot's files, not written again
        assert written < 0.25 * memory_bytes, (n, written, memory_bytes)
        assert shared >= 0.75 * memory_bytes, (n, shared, memory_bytes)
    manifest_module._KNOWN.clear()  # as in a new process (the CLI): only the load verified them
    loaded = make_pipeline(llama).load(root)
    assert same_state(loaded.memory._state, pipe.memory._state)
    # after a reload the cut points come from the save: the next add is small too
    before = {s.st_ino for s in kv_files(live(root)).values()}
    loaded.add([Document("The stork nests on the chimney.", doc_id="stork")], save_dir=root)
    after = kv_files(live(root))
    assert sum(s.st_size for s in after.values() if s.st_ino not in before) < 0.25 * memory_bytes
    assert len(after) <= 4  # segments merge: O(log adds) files, not one per add


def test_a_save_from_before_segments_still_loads(root, llama):
    """The one-file layout (every entry in memory.safetensors, no ``segments``) of older saves."""
    from safetensors.torch import save_file

    from shared_core.memory.kv_files import state_metadata

    pipe = make_pipeline(llama).load(root)
    state = pipe.memory._state
    snap = live(root)
    manifest = json.loads((snap / "manifest.json").read_text())
    section = manifest["memory"]
    del section["segments"]
    tensors = {}
    for i in range(len(state.keys)):
        tensors[f"k.{i}"] = state.keys[i].contiguous()
        tensors[f"v.{i}"] = state.values[i].contiguous()
        tensors[f"p.{i}"] = state.positions[i].contiguous()
        tensors[f"o.{i}"] = state.origins[i].contiguous()
    tensors.update(state.token_map.tensors())
    metadata = json.loads(state_metadata(section)["memorag_state"])
    del metadata["segments"]
    for name in list(manifest["files"]):
        if name.startswith("kv-"):
            (snap / name).unlink()
            del manifest["files"][name]
    (snap / "memory.safetensors").unlink()
    save_file(
        tensors,
        str(snap / "memory.safetensors"),
        metadata={"memorag_state": json.dumps(metadata, sort_keys=True)},
    )
    data = (snap / "memory.safetensors").read_bytes()
    manifest["files"]["memory.safetensors"] = {
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    (snap / "memory.safetensors").chmod(0o644)
    (snap / "manifest.json").write_text(json.dumps(manifest))
    old = make_pipeline(llama).load(root)
    assert same_state(old.memory._state, state)
    old.add([NEW], save_dir=root)  # and it is added to in the new layout
    assert saved_ids(root, llama)[-1] == "heron"


def test_links_the_user_chose_still_work(golden, tmp_path, llama):
    """A text file or a save directory the user names through a link is theirs to name: read
    and written as before (only links planted inside a save are refused)."""
    from shared_core.cli_inputs import read_text_file

    text = tmp_path / "real.txt"
    text.write_text("The owl hunts at night.")
    (tmp_path / "link.txt").symlink_to(text)
    assert read_text_file(tmp_path / "link.txt") == "The owl hunts at night."
    real = tmp_path / "real-save"
    shutil.copytree(golden, real)
    (tmp_path / "save-link").symlink_to(real)
    pipe = make_pipeline(llama).load(tmp_path / "save-link")
    pipe.add([NEW], save_dir=tmp_path / "save-link")
    assert saved_ids(real, llama)[-1] == "heron"


def test_a_segment_replaced_in_the_live_snapshot_is_written_again_not_linked(tmp_path, llama):
    """Only files this process wrote or verified (unchanged since) are shared by hard links: a
    segment swapped in the live snapshot after the load is not copied into the next save."""
    pipe = make_pipeline(llama)
    pipe.memorize(corpus(6))
    root = tmp_path / "mem"
    pipe.save(root)
    segment = next(p for p in live(root).iterdir() if p.name.startswith("kv-"))
    data = segment.read_bytes()
    segment.unlink()
    segment.write_bytes(data[:-8] + b"tampered")  # a new inode with other bytes
    pipe.add([NEW], save_dir=root)
    again = live(root) / segment.name
    assert again.read_bytes() == data
    assert saved_ids(root, llama)[-1] == "heron"
