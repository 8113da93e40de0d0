"""Saved state stays true (issue 15): no lost updates, saves that survive a move, settings and
manifest fields that are checked, one validation for every entry point.

Real saves use the tiny Llama compressed KV memory and the embedded MiniLM embedder
(``tests/crash_worker.py``); pipeline-level checks use the scripted memory.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from crash_worker import RawClues, corpus, make_memory, make_pipeline, shared_embedder
from scripted import SPAN, ScriptedGenerator, ScriptedMemory

from shared_core.clues.keys import NO_CLUES_NOTE
from shared_core.errors import (
    IncompatibleMemoryError,
    InputError,
    LimitError,
    PersistenceError,
    StaleSnapshotError,
)
from shared_core.pipeline import MemoRAG
from shared_core.saved_settings import model_ref
from shared_core.types import ChatTurn, Document

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def golden(tmp_path_factory, llama) -> Path:
    pipe = make_pipeline(llama)
    pipe.memorize(corpus(4))
    root = tmp_path_factory.mktemp("golden") / "mem"
    pipe.save(root)
    return root


def copy_of(golden: Path, tmp_path: Path) -> Path:
    root = tmp_path / "mem"
    shutil.copytree(golden, root)
    return root


def snap(root: Path) -> Path:
    return root / (root / "CURRENT").read_text().strip()


def manifest(root: Path) -> dict[str, Any]:
    return json.loads((snap(root) / "manifest.json").read_text())


def edit_manifest(root: Path, fn) -> None:
    data = manifest(root)
    fn(data)
    (snap(root) / "manifest.json").write_text(json.dumps(data))


def saved_docs(root: Path, llama) -> list[str]:
    return [d["doc_id"] for d in make_pipeline(llama).load(root).memory.documents]


# -- 1. lost update -----------------------------------------------------------------------------


def test_a_second_pipeline_cannot_overwrite_a_save_it_did_not_load(golden, llama, tmp_path):
    root = copy_of(golden, tmp_path)
    a = make_pipeline(llama).load(root)
    b = make_pipeline(llama).load(root)
    loaded = snap(root).name
    a.add(Document("The fox now lives in the attic.", doc_id="doc-a"), save_dir=root)
    after_a = snap(root).name
    with pytest.raises(StaleSnapshotError) as caught:
        b.add(Document("The owl now lives in the barn.", doc_id="doc-b"), save_dir=root)
    message = str(caught.value)
    assert after_a in message and loaded in message and "MemoRAG.from_dir" in message
    assert snap(root).name == after_a  # nothing was written
    assert saved_docs(root, llama)[-1] == "doc-a"
    # the way out: reload, add again
    b = make_pipeline(llama).load(root)
    b.add(Document("The owl now lives in the barn.", doc_id="doc-b"), save_dir=root)
    assert saved_docs(root, llama)[-2:] == ["doc-a", "doc-b"]


def test_a_pipeline_keeps_saving_its_own_snapshots(golden, llama, tmp_path):
    root = copy_of(golden, tmp_path)
    pipe = make_pipeline(llama).load(root)
    for i in range(3):
        pipe.add(Document(f"Note {i}: the elk crossed the hill.", doc_id=f"n{i}"), save_dir=root)
    # a copy of the directory is the same snapshot: saving there and back is no lost update
    other = tmp_path / "copy"
    shutil.copytree(root, other)
    pipe.add(Document("The emu sleeps.", doc_id="n3"), save_dir=other)
    pipe.add(Document("The yak eats.", doc_id="n4"), save_dir=root)
    assert saved_docs(root, llama)[-5:] == ["n0", "n1", "n2", "n3", "n4"]


_CHILD = """
import sys
sys.path.insert(0, {tests!r})
from crash_worker import make_pipeline
from tiny_models import tiny_model
from shared_core.types import Document
pipe = make_pipeline(tiny_model("llama")).load({root!r})
pipe.add(Document("The cat moved to the meadow.", doc_id="doc-child"), save_dir={root!r})
print("saved")
"""


def test_two_processes_cannot_lose_each_others_update(golden, llama, tmp_path):
    root = copy_of(golden, tmp_path)
    mine = make_pipeline(llama).load(root)  # loaded before the other process saves
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false"}
    code = _CHILD.format(tests=str(TESTS), root=str(root))
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0 and "saved" in proc.stdout, proc.stderr[-2000:]
    with pytest.raises(StaleSnapshotError, match="moved on"):
        mine.add(Document("The dog moved to the kennel.", doc_id="doc-parent"), save_dir=root)
    docs = saved_docs(root, llama)
    assert "doc-child" in docs and "doc-parent" not in docs


# -- 2. model paths and the embedder's identity ----------------------------------------------


@pytest.fixture(scope="module")
def embedder_folders(tmp_path_factory) -> tuple[Path, Path]:
    """The MiniLM model saved to a folder, and a copy with other weights (same dimension)."""
    from sentence_transformers import SentenceTransformer

    from shared_core.retrieval.embeddings import default_embedder_path

    base = tmp_path_factory.mktemp("embedders")
    model = SentenceTransformer(default_embedder_path(), device="cpu")
    same, other = base / "emb384", base / "other384"
    model.save(str(same))
    torch.manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    model.save(str(other))
    return same, other


def test_a_relative_embedder_path_is_saved_resolved_and_its_weights_checked(
    embedder_folders, llama, tmp_path, monkeypatch
):
    same, other = embedder_folders
    work = tmp_path / "work"
    work.mkdir()
    folder = tmp_path / "emb"
    shutil.copytree(same, folder)
    monkeypatch.chdir(work)
    pipe = MemoRAG(
        memory=make_memory(llama),
        ret_model_name_or_path="../emb",
        clue_strategy="none",
        retrieval_chunk_size=40,
        chunk_overlap=0,
        language="en",
    )
    pipe.memorize(corpus(3), save_dir="m")
    section = manifest(work / "m")["pipeline"]
    assert section["ret_model_name_or_path"] == str(folder.resolve())
    assert len(manifest(work / "m")["index"]["embedder_fingerprint"]) == 32
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # from another directory the save still names the folder
    loaded = MemoRAG.from_dir(work / "m", memory=make_memory(llama))
    assert loaded.retrieve("Where does the fox live?", 2).passages
    # another 384-d model at the same path: refused, not served silently
    shutil.rmtree(folder)
    shutil.copytree(other, folder)
    with pytest.raises(IncompatibleMemoryError, match="fingerprint"):
        MemoRAG.from_dir(work / "m", memory=make_memory(llama))


def test_hub_ids_are_saved_as_typed():
    assert model_ref("sentence-transformers/all-MiniLM-L6-v2") == (
        "sentence-transformers/all-MiniLM-L6-v2"
    )
    assert model_ref(None) is None


# -- 4. save dirs inside save dirs --------------------------------------------------------------


def test_a_save_dir_inside_a_save_or_its_snapshot_is_refused(golden, llama, tmp_path):
    root = copy_of(golden, tmp_path)
    pipe = make_pipeline(llama)
    pipe.memorize(corpus(2))
    for inner in (snap(root), snap(root) / "deeper", root / "sub"):
        with pytest.raises(InputError, match="inside"):
            pipe.save(inner, overwrite=True)
    assert saved_docs(root, llama) == ["doc-0", "doc-1", "doc-2", "doc-3"]  # still loads


# -- 7. one validation for every entry point ----------------------------------------------------


def scripted_pipe(**kw: Any) -> tuple[MemoRAG, ScriptedMemory, ScriptedGenerator]:
    memory = ScriptedMemory({SPAN: "The fox 1 lives by the barn."})
    generator = ScriptedGenerator("By the barn.")
    pipe = MemoRAG(memory=memory, embedder=shared_embedder(), generator=generator, **kw)
    pipe.memorize([d.text for d in corpus(6)])
    return pipe, memory, generator


@pytest.mark.parametrize(
    "call",
    [
        lambda p: p.answer("Where is the fox?", k=0),
        lambda p: p("Where is the fox?", k=0),
        lambda p: p.retrieve("Where is the fox?", 0),
        lambda p: p.answer("Where is the fox?", max_new_tokens=0),
        lambda p: p("Where is the fox?", max_new_tokens=0),
        lambda p: p.answer("Where is the fox?", max_new_tokens=-3),
    ],
    ids=["answer k=0", "call k=0", "retrieve k=0", "answer mnt=0", "call mnt=0", "mnt=-3"],
)
def test_bad_k_or_max_new_tokens_is_refused_before_any_work(call):
    pipe, memory, generator = scripted_pipe()
    memory.calls.clear()
    with pytest.raises(InputError, match=r"k must be positive|max_new_tokens"):
        call(pipe)
    assert memory.calls == [] and generator.calls == []  # no clue writing, no generation


# -- 8. no clue written -------------------------------------------------------------------------


def test_a_memory_that_writes_no_clue_says_so():
    pipe, _, _ = scripted_pipe()
    pipe.memory.rules.clear()  # every clue prompt gets an empty reply
    with pytest.warns(UserWarning, match="wrote no clues"):
        result = pipe.retrieve("Where is the fox?", 2)
    assert NO_CLUES_NOTE in result.notes and result.passages
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="the memory wrote no clues")  # said once
        answer = pipe.answer("Where is the fox?", k=2)
    assert NO_CLUES_NOTE in answer.notes
    chosen, _, _ = scripted_pipe(clue_strategy="none")  # no clues asked for: nothing to say
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="the memory wrote no clues")
        assert NO_CLUES_NOTE not in chosen.retrieve("Where is the fox?", 2).notes


def test_clues_written_leave_no_note():
    pipe, _, _ = scripted_pipe()
    assert NO_CLUES_NOTE not in pipe.retrieve("Where is the fox?", 2).notes


# -- 9. messages that say what differs ----------------------------------------------------------


def test_a_different_prompt_frame_names_the_first_differing_token(golden, llama):
    other = make_pipeline(llama, intro="You hold a different book in mind.")
    with pytest.raises(IncompatibleMemoryError) as caught:
        other.load(golden)
    message = str(caught.value)
    assert "prefix_ids differs" in message and "first difference at position" in message
    assert message.count("sha256") == 2


def test_a_too_long_query_is_told_about_the_query_not_max_new_tokens(golden, llama):
    pipe = make_pipeline(llama).load(golden)
    with pytest.raises(LimitError) as caught:
        pipe.retrieve("where " * 10_000, 2)
    message = str(caught.value)
    assert "the prompt (query, history and instructions)" in message
    assert "the query" in message and "max_new_tokens" not in message


# -- 10. manifest fields checked against the tensors and each other ------------------------


def _memory(key: str, delta: int = 1):
    def tamper(data: dict[str, Any]) -> None:
        data["memory"][key] += delta

    return tamper


def _both(data: dict[str, Any]) -> None:  # consistent sums, but not what the tensors hold
    data["memory"]["text_tokens"] += 1
    data["memory"]["next_position"] += 1


def _chars(delta: int):
    def tamper(data: dict[str, Any]) -> None:
        data["memory"]["documents"][0]["chars"] += delta

    return tamper


def _sha(data: dict[str, Any]) -> None:
    data["memory"]["text_sha256"] = "0" * 64


def _chunk_size(data: dict[str, Any]) -> None:
    data["pipeline"]["retrieval_chunk_size"] = 20


def _index_chunking(data: dict[str, Any]) -> None:
    data["index"]["chunking"]["retrieval_chunk_size"] = 20


FIELD_CASES = [
    ("next_position", _memory("next_position"), PersistenceError, "next_position is"),
    ("text_tokens", _memory("text_tokens"), PersistenceError, "text_tokens|next_position"),
    ("text_tokens and next_position", _both, PersistenceError, r"text_tokens \(\d+\) does not"),
    ("windows", _memory("windows", 5), PersistenceError, "windows"),
    ("window", _memory("window", 64), IncompatibleMemoryError, "window is 192"),
    ("document chars smaller", _chars(-20), PersistenceError, "has chars"),
    ("document chars larger", _chars(5), PersistenceError, "documents .chars or ids"),
    ("text_sha256", _sha, PersistenceError, "text_sha256"),
    ("retrieval_chunk_size", _chunk_size, PersistenceError, "pipeline.retrieval_chunk_size"),
    ("index chunking", _index_chunking, PersistenceError, "chunking"),
]


@pytest.mark.parametrize(
    ("case", "tamper", "error", "message"), FIELD_CASES, ids=[c[0] for c in FIELD_CASES]
)
def test_an_edited_manifest_field_is_refused_by_name(
    case, tamper, error, message, golden, llama, tmp_path
):
    root = copy_of(golden, tmp_path)
    edit_manifest(root, tamper)
    with pytest.raises(error, match=message):
        make_pipeline(llama).load(root)


def test_a_pipeline_with_other_chunking_or_window_is_refused(golden, llama):
    base = make_pipeline(llama)
    other = MemoRAG(
        config=base.config.with_changes(retrieval_chunk_size=64),
        memory=base.memory,
        embedder=base.embedder,
    )
    with pytest.raises(IncompatibleMemoryError, match="retrieval_chunk_size is 40 in the save"):
        other.load(golden)
    with pytest.raises(IncompatibleMemoryError, match="window is 128 in the saved memory"):
        make_pipeline(llama, window=256).load(golden)


# -- 11. serving settings saved and restored ---------------------------------------------------


def test_serving_settings_are_saved_and_restored(tmp_path):
    pipe, _, _ = scripted_pipe(
        ret_hit=5, fusion="rrf", rrf_k=30, query_weight=1.5, anchor_clues=False, language="en"
    )
    pipe.save(tmp_path / "m")
    section = manifest(tmp_path / "m")["pipeline"]
    assert section["generator"] == "custom" and section["clue_strategy"] == "copy+surrogate"
    memory = ScriptedMemory({SPAN: "The fox 1 lives by the barn."})
    with pytest.warns(UserWarning, match="custom generator"):
        loaded = MemoRAG.from_dir(tmp_path / "m", memory=memory, embedder=shared_embedder())
    assert (loaded.config.ret_hit, loaded.config.fusion, loaded.config.rrf_k) == (5, "rrf", 30)
    c = loaded.config
    assert (c.query_weight, c.anchor_clues, c.language) == (1.5, False, "en")
    with pytest.raises(InputError, match="pass generator="):
        loaded.answer("Where is the fox?")  # the custom generator was not passed again
    served = MemoRAG.from_dir(
        tmp_path / "m",
        memory=memory,
        embedder=shared_embedder(),
        generator=ScriptedGenerator("By the barn."),
    )
    assert len(served.answer("Where is the fox?").passages) == 5  # k defaults to ret_hit


def test_a_custom_clue_writer_must_be_passed_again(golden, tmp_path, llama):
    with pytest.warns(UserWarning, match="custom clue writer"):
        MemoRAG.from_dir(golden, memory=make_memory(llama), embedder=shared_embedder())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        MemoRAG.from_dir(
            golden, memory=make_memory(llama), embedder=shared_embedder(), clue_strategy=RawClues()
        )


def test_saved_serving_settings_are_checked(tmp_path):
    pipe, _, _ = scripted_pipe()
    pipe.save(tmp_path / "m")
    edit_manifest(tmp_path / "m", lambda d: d["pipeline"].update(fusion="max"))
    with pytest.raises(PersistenceError, match=r"pipeline\.fusion must be"):
        MemoRAG.from_dir(tmp_path / "m", memory=ScriptedMemory(), embedder=shared_embedder())


# -- 12. one file mode ----------------------------------------------------------------------------


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_every_saved_file_gets_one_mode_from_the_umask(golden, llama, tmp_path, umask, mode):
    pipe = make_pipeline(llama).load(golden)
    old = os.umask(umask)
    try:
        pipe.save(tmp_path / "m")
    finally:
        os.umask(old)
    root = tmp_path / "m"
    modes = {p.name: p.stat().st_mode & 0o777 for p in snap(root).iterdir()}
    modes["CURRENT"] = (root / "CURRENT").stat().st_mode & 0o777
    assert "memory.safetensors" in modes
    assert modes == dict.fromkeys(modes, mode)


# -- 13. queries of control characters ---------------------------------------------------------


@pytest.mark.parametrize("query", ["\x01\x02\x03", "\x1b\x1b", " \x07 ", "a\x00b"])
def test_a_query_of_control_characters_is_refused_like_such_a_text(query):
    pipe, memory, _ = scripted_pipe()
    memory.calls.clear()
    for call in (pipe.retrieve, pipe.answer, pipe.clues):
        with pytest.raises(InputError, match=r"control characters|NUL"):
            call(query)
    with pytest.raises(InputError, match=r"control characters|NUL"):
        pipe.add(query)
    assert memory.calls == []


def test_history_turns_still_work():
    pipe, _, _ = scripted_pipe()
    history = [ChatTurn("user", "Tell me about the fox."), ChatTurn("assistant", "It is red.")]
    assert pipe.answer("Where is it?", task_type="dialogue", history=history).text
