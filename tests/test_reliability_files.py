"""Hostile and broken save directories: each is refused with an error naming the file.

One real save (tiny Llama compressed KV memory + MiniLM index) is copied and tampered with per
case. Files whose content is changed are "re-signed" (their size and sha256 rewritten in the
manifest) unless the case is about the hash check itself, so the deeper checks are reached.
For every case: the error is a ``PersistenceError`` (``IncompatibleMemoryError`` for another
model/format), its message names the file and the problem, nothing in the directory is
written, and a pipeline that already held a memory still holds it, untouched.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from crash_worker import corpus, make_pipeline, shared_embedder
from safetensors.numpy import save_file as save_numpy
from safetensors.torch import load_file, save_file

from shared_core.errors import IncompatibleMemoryError, PersistenceError
from shared_core.persistence import SaveDir, file_record
from shared_core.pipeline import MemoRAG

Tamper = Callable[[Path], Any]


@pytest.fixture(scope="module")
def golden(tmp_path_factory, llama) -> Path:
    pipe = make_pipeline(llama)
    pipe.memorize(corpus(6))
    root = tmp_path_factory.mktemp("golden") / "mem"
    pipe.save(root)
    return root


@pytest.fixture(scope="module")
def holder(golden, llama) -> MemoRAG:
    """A pipeline already holding a memory: a failed load must leave it as it was."""
    return make_pipeline(llama).load(golden)


# -- helpers --------------------------------------------------------------------------------


def snap(root: Path) -> Path:
    return root / (root / "CURRENT").read_text().strip()


def manifest(root: Path) -> dict[str, Any]:
    return json.loads((snap(root) / "manifest.json").read_text())


def write_manifest(root: Path, data: Any) -> None:
    (snap(root) / "manifest.json").write_text(data if isinstance(data, str) else json.dumps(data))


def edit(fn: Callable[[dict[str, Any]], Any]) -> Tamper:
    def tamper(root: Path) -> None:
        data = manifest(root)
        fn(data)
        write_manifest(root, data)

    return tamper


def resign(root: Path, *names: str) -> None:
    data = manifest(root)
    for name in names:
        data["files"][name] = file_record(snap(root) / name)
        if name in data["index"]["files"]:
            data["index"]["files"][name] = data["files"][name]["sha256"]
    write_manifest(root, data)


def tensors(fn: Callable[[dict[str, torch.Tensor]], Any]) -> Tamper:
    """Rewrite memory.safetensors with a valid header describing changed tensors."""

    def tamper(root: Path) -> None:
        path = snap(root) / "memory.safetensors"
        data = load_file(str(path))
        fn(data)
        save_file({k: v.contiguous() for k, v in data.items()}, str(path))
        resign(root, "memory.safetensors")

    return tamper


def header(
    fn: Callable[[dict[str, Any]], Any], name: str = "memory.safetensors", raw: bytes | None = None
) -> Tamper:
    """Rewrite a safetensors header (same data bytes), or put ``raw`` bytes as the header."""

    def tamper(root: Path) -> None:
        path = snap(root) / name
        blob = path.read_bytes()
        (n,) = struct.unpack("<Q", blob[:8])
        head = json.loads(blob[8 : 8 + n])
        fn(head)
        new = raw if raw is not None else json.dumps(head).encode()
        path.write_bytes(struct.pack("<Q", len(new)) + new + blob[8 + n :])
        resign(root, name)

    return tamper


def set_(path: str, value: Any) -> Tamper:
    """Set ``a.b.c`` in the manifest to ``value``."""

    def fn(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = data
        for part in parents:
            node = node[part]
        node[last] = value

    return edit(fn)


def tree(root: Path) -> dict[str, tuple[int, int, str]]:
    """Every path under ``root`` with its size, mtime and sha256 (to prove nothing is written)."""
    state = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink() or not path.is_file():
            state[str(path.relative_to(root))] = (0, 0, "dir-or-link")
            continue
        stat = path.stat()
        state[str(path.relative_to(root))] = (
            stat.st_size,
            stat.st_mtime_ns,
            hashlib.sha256(path.read_bytes()).hexdigest(),
        )
    return state


# -- the cases ------------------------------------------------------------------------------


def empty_dir(root: Path) -> None:
    shutil.rmtree(root)
    root.mkdir()


def a_file(root: Path) -> None:
    shutil.rmtree(root)
    root.write_text("not a directory")


def huge_pointer(root: Path) -> None:
    (root / "CURRENT").write_bytes(b"snap-" + b"0" * (20 * 1024 * 1024))


def snapshot_symlink(root: Path) -> None:
    outside = root.parent / "elsewhere"
    shutil.copytree(snap(root), outside)
    shutil.rmtree(snap(root))
    (root / (root / "CURRENT").read_text().strip()).symlink_to(outside)


def listed_symlink(root: Path) -> None:
    outside = root.parent / "outside.json"
    shutil.copy(snap(root) / "chunks.json", outside)
    (snap(root) / "chunks.json").unlink()
    (snap(root) / "chunks.json").symlink_to(outside)


def unlisted_file(root: Path) -> None:
    (snap(root) / "memory.pt").write_bytes(b"not ours")


def truncate(name: str, resigned: bool) -> Tamper:
    def tamper(root: Path) -> None:
        path = snap(root) / name
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        if resigned:
            resign(root, name)

    return tamper


def from_another_save(llama) -> Tamper:
    def tamper(root: Path) -> None:
        other = make_pipeline(llama)
        other.memorize(corpus(6)[::-1])
        other.save(root.parent / "other")
        shutil.copy(
            snap(root.parent / "other") / "memory.safetensors", snap(root) / "memory.safetensors"
        )

    return tamper


class _Touch:
    """A pickle that would create a marker file if anything unpickled it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def pickle_bomb(root: Path) -> None:
    marker = root.parent / "PWNED"
    (snap(root) / "memory.safetensors").write_bytes(pickle.dumps(_Touch(marker)))
    resign(root, "memory.safetensors")


def index_of_dim(dim: int, *, also_chunks: bool) -> Tamper:
    def tamper(root: Path) -> None:
        chunks = json.loads((snap(root) / "chunks.json").read_text())
        vectors = np.random.default_rng(0).standard_normal((chunks["count"], dim))
        save_numpy(
            {"vectors": vectors.astype(np.float32)},
            str(snap(root) / "index.safetensors"),
            metadata={"format": "memorag-dense-index"},
        )
        names = ["index.safetensors"]
        if also_chunks:
            chunks["dim"] = dim
            (snap(root) / "chunks.json").write_text(json.dumps(chunks))
            names.append("chunks.json")
        resign(root, *names)
        if also_chunks:
            data = manifest(root)
            data["index"]["dim"] = dim
            write_manifest(root, data)

    return tamper


def chunks_edit(fn: Callable[[dict[str, Any]], Any]) -> Tamper:
    def tamper(root: Path) -> None:
        chunks = json.loads((snap(root) / "chunks.json").read_text())
        fn(chunks)
        (snap(root) / "chunks.json").write_text(json.dumps(chunks))
        resign(root, "chunks.json")

    return tamper


def overlap(head: dict[str, Any]) -> None:
    head["v.0"]["data_offsets"] = head["k.0"]["data_offsets"]


def k0(fn: Callable[[torch.Tensor], torch.Tensor]) -> Tamper:
    return tensors(lambda t: t.__setitem__("k.0", fn(t["k.0"])))


P = PersistenceError
I_ = IncompatibleMemoryError
CASES: list[tuple[str, Tamper | str, type[Exception], str]] = [
    # the directory
    ("empty directory", empty_dir, P, r"holds no saved memory \(no CURRENT"),
    ("not a directory", a_file, P, r"mem is not a directory"),
    (
        "CURRENT names garbage",
        lambda r: (r / "CURRENT").write_text("../../etc"),
        P,
        r"CURRENT names '\.\./\.\./etc', not a snapshot",
    ),
    ("CURRENT is 20 MB", huge_pointer, P, r"CURRENT names 'snap-0000.*not a snapshot"),
    (
        "CURRENT names a missing snapshot",
        lambda r: (r / "CURRENT").write_text("snap-" + "a" * 32),
        P,
        r"which is missing",
    ),
    ("snapshot is a symlink out", snapshot_symlink, P, r"CURRENT names snap-.*symbolic link"),
    # the manifest: syntax
    (
        "manifest truncated",
        lambda r: write_manifest(r, json.dumps(manifest(r))[:300]),
        P,
        r"manifest\.json is not valid JSON",
    ),
    (
        "manifest is a list",
        lambda r: write_manifest(r, "[1, 2]"),
        P,
        r"manifest\.json must hold a JSON object",
    ),
    (
        "manifest nested 100k deep",
        lambda r: write_manifest(r, "[" * 100_000),
        P,
        r"manifest\.json is not valid JSON",
    ),
    (
        "manifest 5000-digit int",
        lambda r: write_manifest(r, '{"a": ' + "9" * 5000 + "}"),
        P,
        r"manifest\.json is not valid JSON",
    ),
    (
        "manifest NaN",
        lambda r: write_manifest(r, '{"format": NaN}'),
        P,
        r"manifest\.json is not valid JSON.*NaN",
    ),
    (
        "manifest not UTF-8",
        lambda r: write_manifest(r, "") or (snap(r) / "manifest.json").write_bytes(b"\xff\xfe{}"),
        P,
        r"manifest\.json is not valid JSON",
    ),
    (
        "manifest missing",
        lambda r: (snap(r) / "manifest.json").unlink(),
        P,
        r"manifest\.json is missing",
    ),
    # the manifest: wrong types, huge numbers, climbing paths
    ("format_version 99", set_("format_version", 99), I_, r"manifest\.json has format_version 99"),
    ("other format", set_("format", "pickle"), I_, r"manifest\.json is not a memorag manifest"),
    ("files is a list", set_("files", ["memory.safetensors"]), P, r"'files' must be an object"),
    (
        "bytes is a string",
        edit(lambda m: m["files"]["chunks.json"].update(bytes="1161")),
        P,
        r"record of chunks\.json needs non-negative int bytes",
    ),
    (
        "bytes is huge",
        edit(lambda m: m["files"]["chunks.json"].update(bytes=10**30)),
        P,
        r"chunks\.json is .* bytes, the manifest says 1,000,000,000,000,000,",
    ),
    (
        "bytes negative",
        edit(lambda m: m["files"]["chunks.json"].update(bytes=-1)),
        P,
        r"record of chunks\.json needs non-negative",
    ),
    (
        "sha256 not hex",
        edit(lambda m: m["files"]["chunks.json"].update(sha256="x" * 64)),
        P,
        r"record of chunks\.json needs .* hex sha256",
    ),
    (
        "path climbs out",
        edit(lambda m: m["files"].update({"../../escape": m["files"]["chunks.json"]})),
        P,
        r"file name '\.\./\.\./escape' is not allowed",
    ),
    (
        "path is ..",
        edit(lambda m: m["files"].update({"..": m["files"]["chunks.json"]})),
        P,
        r"file name '\.\.' is not allowed",
    ),
    (
        "absolute path",
        edit(lambda m: m["files"].update({"/etc/passwd": m["files"]["chunks.json"]})),
        P,
        r"file name '/etc/passwd' is not allowed",
    ),
    ("unlisted file in snapshot", unlisted_file, P, r"memory\.pt is not listed in .*manifest"),
    ("listed file is a symlink", listed_symlink, P, r"chunks\.json is not a plain file"),
    ("kind is other", set_("kind", "memory"), P, r"manifest\.json holds a 'memory', not a MemoRAG"),
    ("no index section", edit(lambda m: m.pop("index")), P, r"manifest\.json has no 'index'"),
    ("memory section a list", set_("memory", [1]), P, r"manifest\.json has no 'memory'"),
    (
        "pipeline documents unhashable",
        set_("pipeline.documents", [["doc-0"]]),
        P,
        r"manifest\.json: pipeline\.documents must be a list of doc ids",
    ),
    (
        "pipeline documents other",
        set_("pipeline.documents", ["doc-0"]),
        P,
        r"manifest\.json: the index and the memory hold different documents",
    ),
    (
        "memory documents other",
        edit(lambda m: m["memory"]["documents"].reverse()),
        P,
        r"manifest\.json: the memory section lists other documents",
    ),
    (
        "memory doc_id not a string",
        edit(lambda m: m["memory"]["documents"][0].update(doc_id=7)),
        P,
        r"manifest\.json: memory document 0 needs a unique",
    ),
    (
        "memory documents not a list",
        set_("memory.documents", "doc-0"),
        P,
        r"manifest\.json: the memory's documents must be a list",
    ),
    (
        "seconds is text",
        set_("memory.seconds", "fast"),
        P,
        r"manifest\.json: seconds must be a non-negative number",
    ),
    (
        "text_tokens is text",
        set_("memory.text_tokens", "many"),
        P,
        r"manifest\.json: text_tokens must be a non-negative int",
    ),
    (
        "entries huge",
        set_("memory.entries", 2**39),
        P,
        r"memory\.safetensors: tensor k\.0 has shape .* not 2 heads x .*549,?755,?813,?888",
    ),
    (
        "entries beyond 2**40",
        set_("memory.entries", 2**62),
        P,
        r"manifest\.json: entries must be a non-negative int",
    ),
    (
        "next_position past the model",
        set_("memory.next_position", 10**6),
        P,
        r"manifest\.json: next_position is past",
    ),
    (
        "position_mode unknown",
        set_("memory.position_mode", "spiral"),
        P,
        r"manifest\.json: position_mode 'spiral'",
    ),
    (
        "other model",
        set_("memory.model_fingerprint", "0" * 16),
        I_,
        r"manifest\.json: model_fingerprint is '0000000000000000' in the saved memory",
    ),
    (
        "other backend",
        set_("memory.backend", "gist"),
        I_,
        r"manifest\.json: the memory was written by back-end 'gist'",
    ),
    # the memory's tensors
    (
        "tensor file truncated",
        truncate("memory.safetensors", resigned=False),
        P,
        r"memory\.safetensors is [\d,]+ bytes, the manifest says [\d,]+ \(truncated\?\)",
    ),
    (
        "tensor file truncated, re-signed",
        truncate("memory.safetensors", resigned=True),
        P,
        r"memory\.safetensors: (tensor .* lie|the tensors cover)",
    ),
    (
        "tensor file from another save",
        "another",
        P,
        r"memory\.safetensors does not match its sha256 in the manifest",
    ),
    (
        "header lies about a shape",
        header(lambda h: h["k.0"].update(shape=[1, 2, 227, 16])),
        P,
        r"memory\.safetensors: tensor 'k\.0' has a shape or offsets that lie",
    ),
    (
        "header shape not a list",
        header(lambda h: h["k.0"].update(shape="1,2,226,16")),
        P,
        r"memory\.safetensors: tensor 'k\.0' has a shape or offsets that lie",
    ),
    (
        "header float offsets",
        header(lambda h: h["k.0"].update(data_offsets=[0.0, 28928.0])),
        P,
        r"memory\.safetensors: tensor 'k\.0' has a shape or offsets that lie",
    ),
    (
        "header offsets overlap",
        header(overlap),
        P,
        r"memory\.safetensors: tensor .* \(tensors overlap or leave a gap\)",
    ),
    (
        "header unknown dtype",
        header(lambda h: h["k.0"].update(dtype="F8_E4M3")),
        P,
        r"memory\.safetensors: tensor 'k\.0' has a shape or offsets that lie",
    ),
    (
        "header not JSON",
        header(lambda h: None, raw=b"{" * 64),
        P,
        r"memory\.safetensors \(safetensors header\) is not valid JSON",
    ),
    (
        "header nested deep",
        header(lambda h: None, raw=b"[" * 60_000),
        P,
        r"memory\.safetensors \(safetensors header\) is not valid JSON",
    ),
    (
        "header length 2**63",
        lambda r: _patch_length(r, 2**63),
        P,
        r"memory\.safetensors declares a 9,223,372,036,854,775,808-byte header",
    ),
    (
        "k flattened to 1-D",
        k0(lambda t: t.flatten()),
        P,
        r"memory\.safetensors: tensor k\.0 is not a float \[1, heads, n, dim\]",
    ),
    (
        "k with 4 heads",
        k0(lambda t: t.reshape(1, 4, t.shape[2], 8)),
        P,
        r"memory\.safetensors: tensor v\.0 has shape \[1, 2, \d+, 16\], not 4 heads",
    ),
    (
        "all layers with 1 head",
        tensors(
            lambda t: [
                t.__setitem__(
                    k,
                    (
                        v.reshape(1, 1, -1, 16) if k[0] not in "po" else v.reshape(1, -1)
                    ).contiguous(),
                )
                for k, v in list(t.items())
                if not k.startswith("t.")  # the token map is per text token, not per head
            ]
        ),
        P,
        r"memory\.safetensors: tensor k\.0 has shape \[1, 1, \d+, 16\], not 1 heads x \d+",
    ),
    (
        "positions as float",
        tensors(lambda t: t.__setitem__("p.1", t["p.1"].float())),
        P,
        r"memory\.safetensors: tensor p\.1 must be int64",
    ),
    (
        "a layer missing",
        tensors(lambda t: t.pop("v.1")),
        P,
        r"memory\.safetensors: tensor names do not match a 2-layer memory",
    ),
    ("pickle in place of tensors", pickle_bomb, P, r"memory\.safetensors declares a"),
    # the index
    (
        "index vectors of another dim",
        index_of_dim(128, also_chunks=False),
        P,
        r"index\.safetensors: vectors have shape \[6, 128\], but chunks\.json needs \[6, 384\]",
    ),
    (
        "index of another dim, all consistent",
        index_of_dim(128, also_chunks=True),
        I_,
        r"chunks\.json: stored vectors have dim 128, but embedder .* produces dim 384",
    ),
    (
        "index file truncated",
        truncate("index.safetensors", resigned=False),
        P,
        r"index\.safetensors is 4,672 bytes, the manifest says 9,344",
    ),
    (
        "index file truncated, re-signed",
        truncate("index.safetensors", resigned=True),
        P,
        r"index\.safetensors: (truncated|malformed)",
    ),
    (
        "chunks count is text",
        chunks_edit(lambda c: c.update(count="6")),
        P,
        r"chunks\.json: 'count' must be a non-negative integer",
    ),
    (
        "chunk start negative",
        chunks_edit(lambda c: c["chunks"][0].update(start=-5)),
        P,
        r"chunks\.json: chunk 0: 'start'/'end' must be integers",
    ),
    (
        "chunks 5000-digit int",
        lambda r: _chunks_raw(r, b'{"count": ' + b"9" * 5000 + b"}"),
        P,
        r"chunks\.json: not valid UTF-8 JSON",
    ),
]


def _patch_length(root: Path, n: int) -> None:
    path = snap(root) / "memory.safetensors"
    blob = bytearray(path.read_bytes())
    blob[:8] = struct.pack("<Q", n)
    path.write_bytes(bytes(blob))
    resign(root, "memory.safetensors")


def _chunks_raw(root: Path, raw: bytes) -> None:
    (snap(root) / "chunks.json").write_bytes(raw)
    resign(root, "chunks.json")


@pytest.mark.parametrize(("case", "tamper", "error", "message"), CASES, ids=[c[0] for c in CASES])
def test_a_broken_save_is_refused_clearly_and_nothing_changes(
    case, tamper, error, message, golden, holder, llama, tmp_path
):
    root = tmp_path / "mem"
    shutil.copytree(golden, root, symlinks=True)
    (tamper if callable(tamper) else from_another_save(llama))(root)
    before_files = tree(tmp_path)
    state, index = holder.memory._state, holder._index
    started = time.perf_counter()
    with pytest.raises(error, match=message) as caught:
        holder.load(root)
    assert time.perf_counter() - started < 10  # nothing sized by an unchecked number
    assert isinstance(caught.value, PersistenceError)
    assert tree(tmp_path) == before_files, "a load wrote into the directory"
    assert holder.memory._state is state and holder._index is index
    assert not (tmp_path / "PWNED").exists()


def test_the_golden_save_itself_loads(golden, llama):
    """The cases above fail because of their tampering, not because of the set-up."""
    pipe = make_pipeline(llama).load(golden)
    assert [d["doc_id"] for d in pipe.memory.documents] == [f"doc-{i}" for i in range(6)]
    assert len(pipe.retrieve("Where does the owl live?", 2).passages) == 2


def test_a_missing_directory_is_refused(tmp_path, holder):
    with pytest.raises(PersistenceError, match=r"nowhere does not exist"):
        holder.load(tmp_path / "nowhere")
    assert not (tmp_path / "nowhere").exists()


# -- from_dir: the settings a save names are checked too ------------------------------------

SETTINGS_CASES = [
    ("retrieval_chunk_size", "big", r"pipeline\.retrieval_chunk_size must be an int >= 8"),
    ("chunk_overlap", -3, r"pipeline\.chunk_overlap must be an int >= 0"),
    ("memory_backend", "evil", r"pipeline\.memory_backend must be one of"),
    ("mem_model_name_or_path", 42, r"pipeline\.mem_model_name_or_path must be a model id"),
    ("ret_model_name_or_path", ["x"], r"pipeline\.ret_model_name_or_path must be a model id"),
    ("memory_options", "fast", r"pipeline\.memory_options must be a mapping"),
    ("memory_options", {"reserve_tokens": -5}, r"pipeline\.reserve_tokens must be an int"),
    ("window", -5, r"pipeline\.window must be an int >= 16"),
    ("beacon_ratio", True, r"pipeline\.beacon_ratio must be an int >= 1"),
    ("search_mode", "fuzzy", r"pipeline\.search_mode"),
    ("config_format", 99, r"pipeline\.config_format 99"),
]


@pytest.mark.parametrize(
    ("key", "value", "message"), SETTINGS_CASES, ids=[f"{c[0]}={c[1]!r}" for c in SETTINGS_CASES]
)
def test_from_dir_checks_every_saved_setting(key, value, message, golden, tmp_path, monkeypatch):
    root = tmp_path / "mem"
    shutil.copytree(golden, root)
    set_(f"pipeline.{key}", value)(root)
    monkeypatch.setattr("shared_core.models.loading.load_causal_lm", _no_model_loads)
    with pytest.raises(PersistenceError, match=message) as caught:
        MemoRAG.from_dir(root, embedder=shared_embedder())
    assert "manifest.json" in str(caught.value)


def _no_model_loads(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("a model was loaded from a name the save directory gave")


@pytest.mark.parametrize(
    "settings",
    [
        {"memory_backend": "beacon", "mem_model_name_or_path": "{root}/evil-model"},
        {"memory_backend": "auto", "mem_model_name_or_path": "someone/memorag-qwen2-7b-inst"},
    ],
)
def test_a_save_cannot_make_from_dir_run_code_shipped_with_a_model(
    settings, golden, tmp_path, monkeypatch
):
    """A model folder's own code never runs: the beacon back-end is our code, and a folder
    that is not a beacon checkpoint is refused by name."""
    root = tmp_path / "mem"
    shutil.copytree(golden, root)
    evil = root / "evil-model"
    evil.mkdir()
    (evil / "config.json").write_text(
        json.dumps({"auto_map": {"AutoModelForCausalLM": "modeling.Evil"}})
    )
    (evil / "modeling.py").write_text(f"open({str(tmp_path / 'PWNED')!r}, 'w').close()\n")
    for key, value in settings.items():
        set_(f"pipeline.{key}", value.format(root=root))(root)
    set_("pipeline.memory_options", {})(root)  # no compressed-KV settings for a beacon memory
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(Exception, match=r"evil-model|memorag-qwen2-7b-inst") as caught:
        MemoRAG.from_dir(root, embedder=shared_embedder())
    assert not isinstance(caught.value, AssertionError)
    assert not (tmp_path / "PWNED").exists()


def test_from_dir_with_the_callers_own_memory_ignores_saved_memory_settings(
    golden, llama, tmp_path
):
    root = tmp_path / "mem"
    shutil.copytree(golden, root)
    set_("pipeline.memory_backend", "my-own-backend")(root)  # e.g. a custom Memory class
    pipe = MemoRAG.from_dir(root, memory=make_pipeline(llama).memory, embedder=shared_embedder())
    assert len(pipe.index) == 6


def test_save_dir_read_retries_when_a_save_replaces_the_snapshot(golden, llama, tmp_path):
    """A load racing a commit (which deletes the old snapshot) starts again on the new one."""
    root = tmp_path / "mem"
    shutil.copytree(golden, root)
    writer = make_pipeline(llama).load(root)
    calls = []

    def loader(folder: Path, data: dict[str, Any]) -> list[str]:
        calls.append(folder.name)
        if len(calls) == 1:  # a save from elsewhere commits while we read
            writer.add(["A late addition about the heron by the weir."], save_dir=root)
        if not (folder / "chunks.json").is_file():
            raise PersistenceError(f"{folder / 'chunks.json'} is missing")
        return data["pipeline"]["documents"]

    documents = SaveDir(root).read(loader)
    assert len(calls) == 2 and calls[0] != calls[1]
    assert documents == [f"doc-{i}" for i in range(7)]
