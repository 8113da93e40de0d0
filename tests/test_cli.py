"""The ``memorag`` command line: argument handling, refusals, and a real round trip.

Pipelines are built through ``shared_core.cli._build_pipeline``; tests patch it to inject a
scripted memory (fast, for fuzzing) or a tiny real memory model (for the round trip).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from scripted import SPAN, ScriptedGenerator, ScriptedMemory, shared_embedder

from shared_core import cli
from shared_core.memory.compressed_kv import CompressedKVMemory
from shared_core.pipeline import MemoRAG

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROOT = Path(__file__).resolve().parents[1]
TEXT = (
    "The ship's doctor aboard the Gull was a quiet man named Halloran.\n\n"
    "Halloran rents a small room above the bakery on Wick Lane.\n\n"
    "The Gull carries timber and salt between the northern ports each summer.\n\n"
    "Old Tobiah repairs clocks in a narrow shop behind the chapel.\n"
)
QUESTION = "Where does the ship's doctor live?"


def scripted_factory(save_dir=None, **kwargs):
    """A stand-in for ``cli._build_pipeline``: scripted memory, real MiniLM embedder."""
    parts = {
        "memory": ScriptedMemory({SPAN: "Halloran rents a small room above the bakery."}),
        "embedder": shared_embedder(),
        "generator": ScriptedGenerator("Above the bakery."),
        "retrieval_chunk_size": 32,
        "chunk_overlap": 0,
    }
    if save_dir is not None:
        return MemoRAG.from_dir(save_dir, **parts, **kwargs)
    return MemoRAG(**parts, **kwargs)


@pytest.fixture
def scripted(monkeypatch):
    monkeypatch.setattr(cli, "_build_pipeline", scripted_factory)


@pytest.fixture
def text_file(tmp_path) -> Path:
    path = tmp_path / "story.txt"
    path.write_text(TEXT, "utf-8")
    return path


def run(capsys, *argv: str | Path) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# -- argument handling ------------------------------------------------------------------------


def test_help_exits_zero(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "memorize" in out and "retrieve" in out
    for command in ("memorize", "add", "ask", "retrieve", "stats"):
        code, out, _ = run(capsys, command, "--help")
        assert code == 0 and f"memorag {command}" in out


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["frobnicate"],
        ["memorize"],
        ["memorize", "a.txt"],  # --save-dir is required
        ["memorize", "a.txt", "--save-dir", ""],
        ["memorize", "a.txt", "--save-dir", "d", "--beacon-ratio", "0"],
        ["memorize", "a.txt", "--save-dir", "d", "--beacon-ratio", "x"],
        ["ask", "d"],
        ["ask", "d", "q", "--task-type", "rag"],
        ["ask", "d", "q", "--max-new-tokens", "-3"],
        ["retrieve", "d", "q", "-k", "0"],
        ["stats"],
    ],
)
def test_usage_errors_exit_2(capsys, argv):
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == "" and "usage: memorag" in err


def test_a_missing_save_dir_is_refused(capsys, scripted, tmp_path):
    for argv in (
        ["ask", tmp_path / "nope", "q"],
        ["retrieve", tmp_path / "nope", "q"],
        ["stats", tmp_path / "nope"],
    ):
        code, out, err = run(capsys, *argv)
        assert code == 2 and out == ""
        assert err.startswith("error: ") and "does not exist" in err and "Traceback" not in err
    code, _, err = run(capsys, "stats", tmp_path)
    assert code == 2 and "no saved memory" in err


@pytest.mark.parametrize(
    "content",
    [
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00",
        b"caf\xe9 au lait",  # latin-1, not UTF-8
        b"text with a NUL\x00 inside",
        b"   \n\t ",
    ],
)
def test_a_binary_or_empty_file_is_refused_and_nothing_written(
    capsys, scripted, tmp_path, text_file, content
):
    bad = tmp_path / "bad.bin"
    bad.write_bytes(content)
    code, out, err = run(capsys, "memorize", text_file, bad, "--save-dir", tmp_path / "mem")
    assert code == 2 and out == ""
    assert err.startswith("error: ") and "bad.bin" in err
    assert not (tmp_path / "mem").exists()


def test_a_missing_file_is_refused(capsys, scripted, tmp_path, text_file):
    code, _, err = run(
        capsys, "memorize", text_file, tmp_path / "gone.txt", "--save-dir", tmp_path / "mem"
    )
    assert code == 2 and "gone.txt: no such file" in err
    code, _, err = run(capsys, "memorize", tmp_path, "--save-dir", tmp_path / "mem")
    assert code == 2 and "is a directory" in err
    assert not (tmp_path / "mem").exists()


def test_memorize_refuses_a_dir_holding_another_memory_unless_overwrite(
    capsys, scripted, tmp_path, text_file
):
    mem = tmp_path / "mem"
    assert run(capsys, "memorize", text_file, "--save-dir", mem)[0] == 0
    code, _, err = run(capsys, "memorize", text_file, "--save-dir", mem)
    assert code == 2 and "--overwrite" in err
    assert run(capsys, "memorize", text_file, "--save-dir", mem, "--overwrite")[0] == 0
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("mine")
    code, _, err = run(capsys, "memorize", text_file, "--save-dir", tmp_path / "notes")
    assert code == 2 and "not empty" in err


def test_stream_and_json_together_are_refused(capsys, scripted, tmp_path, text_file):
    run(capsys, "memorize", text_file, "--save-dir", tmp_path / "mem")
    code, out, err = run(capsys, "ask", tmp_path / "mem", "q", "--stream", "--json")
    assert code == 2 and out == "" and "cannot be combined" in err


def test_json_outputs_are_single_objects(capsys, scripted, tmp_path, text_file):
    mem = tmp_path / "mem"
    code, out, err = run(capsys, "memorize", text_file, "--save-dir", mem, "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["documents"] == ["story.txt"] and data["chunks"] >= 2
    assert "tokens read" in err  # the stats text goes to stderr under --json

    code, out, err = run(capsys, "retrieve", mem, QUESTION, "-k", "2", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert len(data["passages"]) == 2
    first = data["passages"][0]
    assert first["doc_id"] == "story.txt" and first["id"].startswith("story.txt#")
    assert TEXT[first["start"] : first["end"]] == first["text"]
    assert "span" in first["found_by"]
    assert [c["kind"] for c in data["clues"]] == ["query", "span"]

    code, out, err = run(capsys, "ask", mem, QUESTION, "-k", "5", "--json")
    assert code == 0, err
    assert "warning: k=5 is more than the" in err and "Traceback" not in err
    data = json.loads(out)
    assert data["answer"] == "Above the bakery." and data["passages"]

    code, out, err = run(capsys, "stats", mem, "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["documents"] == ["story.txt"]
    assert data["memory"]["backend"] == "scripted" and data["chunks"] >= 2


def test_text_outputs(capsys, scripted, tmp_path, text_file):
    mem = tmp_path / "mem"
    code, out, _ = run(capsys, "memorize", text_file, "--save-dir", mem)
    assert code == 0 and "tokens read" in out and f"to {mem}" in out
    code, out, _ = run(capsys, "retrieve", mem, QUESTION, "-k", "2")
    assert code == 0 and out.startswith("clues:\n  query") and "found by" in out
    assert "story.txt [" in out
    code, out, _ = run(capsys, "ask", mem, QUESTION, "--stream")
    assert code == 0 and out.startswith("Above the bakery.\n") and "sources:" in out
    code, out, _ = run(capsys, "ask", mem, QUESTION, "--task-type", "dialogue")
    assert code == 2
    code, out, _ = run(capsys, "stats", mem)
    assert code == 0 and "documents:         1 (story.txt)" in out


# -- fuzzing ----------------------------------------------------------------------------------

WORDS = [
    "memorize",
    "add",
    "--turn",
    "user:hi",
    "--history",
    "--encoding",
    "latin-1",
    "ask",
    "retrieve",
    "stats",
    "--save-dir",
    "--overwrite",
    "--beacon-ratio",
    "--mem-model",
    "--ret-model",
    "--json",
    "--task-type",
    "--max-new-tokens",
    "--stream",
    "-k",
    "-h",
    "--",
    "-",
    "0",
    "-1",
    "2",
    "x",
    "qa",
    "memorag",
    "summarize",
    "dialogue",
    "Where?",
    "",
    "SAVED",
    "MISSING",
    "TEXT",
    "BINARY",
    "FRESH",
]


EXTRAS = [
    ["--json"],
    ["--overwrite"],
    ["--stream"],
    ["-k", "2"],
    ["-k", "0"],
    ["-k", "99"],
    ["--task-type", "qa"],
    ["--task-type", "summarize"],
    ["--task-type", "dialogue"],
    ["--task-type", "personalize"],
    ["--max-new-tokens", "3"],
    ["--beacon-ratio", "2"],
    ["--mem-model", "x"],
    ["--turn", "user:Who is he?"],
    ["--turn", "nobody"],
    ["--encoding", "latin-1"],
    ["--encoding", "no-such-codec"],
    ["--help"],
]


@st.composite
def plausible_argv(draw: st.DrawFn) -> list[str]:
    """A command with plausible operands and a few options (some of them wrong)."""
    command = draw(st.sampled_from(["memorize", "add", "ask", "retrieve", "stats"]))
    target = draw(st.sampled_from(["SAVED", "SAVED", "MISSING", "TEXT", "FRESH"]))
    if command == "memorize":
        argv = [command, draw(st.sampled_from(["TEXT", "BINARY", "MISSING"])), "--save-dir", target]
    elif command == "add":
        argv = [command, draw(st.sampled_from(["TEXT", "BINARY", "MISSING"])), target]
    else:
        argv = [command, target]
        if command != "stats":
            argv.append(draw(st.text(max_size=30)))
    for extra in draw(st.lists(st.sampled_from(EXTRAS), max_size=2)):
        argv += extra
    return argv


FUZZ = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def check_argv(argv: list[str], root: Path, monkeypatch, capsys) -> None:
    """Run ``argv`` in ``root`` (with a saved memory, a text and a binary file in it): the CLI
    exits 0 or 2, never with a traceback; errors say so; ``--json`` prints one object."""
    monkeypatch.setattr(cli, "_build_pipeline", scripted_factory)
    monkeypatch.chdir(root)  # relative paths in argv land here
    if not (root / "SAVED").exists():
        Path("TEXT").write_text(TEXT, "utf-8")
        Path("BINARY").write_bytes(b"\x00\x01\x02\xff" * 8)
        assert cli.main(["memorize", "TEXT", "--save-dir", "SAVED"]) == 0
        capsys.readouterr()
    argv = [str(root / "FRESH" / os.urandom(4).hex()) if a == "FRESH" else a for a in argv]
    code = cli.main(argv)
    out, err = capsys.readouterr()
    commands = ("memorize", "add", "ask", "retrieve", "stats")
    event(f"{argv[0] if argv and argv[0] in commands else 'other'} -> exit {code}")
    assert code in (0, 2), (argv, err)
    assert "Traceback" not in err
    helped = any(a in ("-h", "--help") for a in argv)
    if code == 2 and not helped:
        assert "error" in err
    if code == 0 and "--json" in argv and not helped:
        assert isinstance(json.loads(out), dict)


@FUZZ
@given(argv=st.lists(st.one_of(st.sampled_from(WORDS), st.text(max_size=12)), max_size=8))
def test_fuzzed_argv_never_raises(argv, tmp_path, monkeypatch, capsys):
    check_argv(argv, tmp_path, monkeypatch, capsys)


@FUZZ
@given(argv=plausible_argv())
def test_fuzzed_commands_never_raise(argv, tmp_path, monkeypatch, capsys):
    check_argv(argv, tmp_path, monkeypatch, capsys)


# -- a real round trip ------------------------------------------------------------------------


def test_round_trip_on_a_tiny_memory_model(
    capsys, monkeypatch, tmp_path, text_file, llama, tokenizer
):
    made = []

    def tiny_factory(save_dir=None, **kwargs):
        memory = CompressedKVMemory(
            llama,
            tokenizer,
            beacon_ratio=kwargs.pop("beacon_ratio", 4),
            window=64,
            reserve_tokens=64,
            show_progress=False,
            compress="always",
            scorer="key_norm",
        )
        made.append(memory)
        kw = {
            "memory": memory,
            "embedder": shared_embedder(),
            "retrieval_chunk_size": 32,
            "chunk_overlap": 0,
        }
        if save_dir is not None:
            return MemoRAG.from_dir(save_dir, **kw)
        return MemoRAG(**kw, **kwargs)

    monkeypatch.setattr(cli, "_build_pipeline", tiny_factory)
    mem = tmp_path / "mem"
    code, out, err = run(
        capsys, "memorize", text_file, "--save-dir", mem, "--beacon-ratio", "4", "--json"
    )
    assert code == 0, err
    memorized = json.loads(out)
    assert memorized["memory"]["backend"] == "compressed_kv"
    assert memorized["memory"]["beacon_ratio"] == 4
    assert memorized["memory"]["kv_entries"] < memorized["memory"]["tokens_read"]

    code, out, err = run(capsys, "retrieve", mem, QUESTION, "-k", "2", "--json")
    assert code == 0, err
    retrieved = json.loads(out)
    assert len(retrieved["passages"]) == 2 and retrieved["clues"][0]["kind"] == "query"

    code, out, err = run(capsys, "stats", mem, "--json")
    assert code == 0, err
    stats = json.loads(out)
    assert stats["memory"]["kv_entries"] == memorized["memory"]["kv_entries"]
    assert stats["pipeline"]["memory_backend"] == "compressed_kv"

    code, out, err = run(capsys, "ask", mem, QUESTION, "--max-new-tokens", "6", "-k", "2", "--json")
    assert code == 0, err
    asked = json.loads(out)
    assert isinstance(asked["answer"], str) and len(asked["passages"]) == 2
    code, out, err = run(
        capsys, "ask", mem, QUESTION, "--max-new-tokens", "6", "--stream", "--task-type", "qa"
    )
    assert code == 0, err
    assert len(made) == 4  # memorize, retrieve, ask, ask: stats reads the manifest only


def test_console_script_entry_point():
    script = Path(sys.executable).with_name("memorag")  # installed by pyproject [project.scripts]
    command = [str(script)] if script.exists() else [sys.executable, "-m", "shared_core.cli"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [*command, "stats", "/nonexistent/x"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: /nonexistent/x does not exist"


# -- issue 15: add, dialogue turns, encodings, nested saves, stats from the manifest ------------

MORE = "The harbour bell rings at noon.\n\nThe bakery on Wick Lane opens at dawn.\n"


def recording_factory(made: list[MemoRAG], memory_rules=None, **fresh):
    """``scripted_factory`` that keeps each pipeline (to inspect what reached the models);
    ``fresh`` settings apply only to a new memory (as CLI options would)."""

    def factory(save_dir=None, **kwargs):
        parts = {
            "memory": ScriptedMemory(
                {SPAN: "Halloran rents a small room above the bakery."}
                if memory_rules is None
                else memory_rules
            ),
            "embedder": shared_embedder(),
            "generator": ScriptedGenerator("Above the bakery."),
        }
        if save_dir is not None:
            pipe = MemoRAG.from_dir(save_dir, **parts, **kwargs)
        else:
            parts.update(retrieval_chunk_size=32, chunk_overlap=0)
            pipe = MemoRAG(**parts, **fresh, **kwargs)
        made.append(pipe)
        return pipe

    return factory


def test_add_reads_more_files_into_a_saved_memory(capsys, scripted, tmp_path, text_file):
    mem = tmp_path / "mem"
    more = tmp_path / "more.txt"
    more.write_text(MORE, "utf-8")
    assert run(capsys, "memorize", text_file, "--save-dir", mem)[0] == 0
    code, out, err = run(capsys, "add", more, mem, "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["added"] == ["more.txt"] and data["documents"] == ["story.txt", "more.txt"]
    code, out, err = run(capsys, "retrieve", mem, "When does the bakery open?", "-k", "1", "--json")
    assert code == 0 and json.loads(out)["passages"][0]["doc_id"] == "more.txt", err
    code, out, _ = run(capsys, "stats", mem, "--json")
    assert json.loads(out)["documents"] == ["story.txt", "more.txt"]
    code, out, err = run(capsys, "add", more, mem)  # the same file again: refused, kept
    assert code == 2 and "already holds 'more.txt'" in err
    code, out, err = run(capsys, "add", mem)
    assert code == 2 and "text files, then the save directory" in err
    code, out, err = run(capsys, "add", more, tmp_path / "nope")
    assert code == 2 and "does not exist" in err


def test_memorize_on_an_existing_memory_suggests_add(capsys, scripted, tmp_path, text_file):
    mem = tmp_path / "mem"
    assert run(capsys, "memorize", text_file, "--save-dir", mem)[0] == 0
    code, _, err = run(capsys, "memorize", text_file, "--save-dir", mem)
    assert code == 2 and f"memorag add FILE... {mem}" in err and "--overwrite" in err


def test_dialogue_takes_earlier_turns(capsys, monkeypatch, tmp_path, text_file):
    made: list[MemoRAG] = []
    monkeypatch.setattr(cli, "_build_pipeline", recording_factory(made))
    mem = tmp_path / "mem"
    assert run(capsys, "memorize", text_file, "--save-dir", mem)[0] == 0
    turns = ["--turn", "user:Who is the ship's doctor?", "--turn", "assistant:Halloran."]
    code, out, err = run(capsys, "ask", mem, "Where is he?", "--task-type", "dialogue", *turns)
    assert code == 0, err
    history = made[-1].generator.calls[-1].history
    assert [(t.role, t.content) for t in history] == [
        ("user", "Who is the ship's doctor?"),
        ("assistant", "Halloran."),
    ]
    turns_file = tmp_path / "turns.json"
    turns_file.write_text(json.dumps([{"role": "user", "content": "Who is the doctor?"}]))
    code, out, err = run(
        capsys, "ask", mem, "Where?", "--task-type", "dialogue", "--history", turns_file, "--json"
    )
    assert code == 0 and json.loads(out)["task_type"] == "dialogue", err
    assert made[-1].generator.calls[-1].history[0].content == "Who is the doctor?"
    built = len(made)
    code, _, err = run(capsys, "ask", mem, "Where?", "--task-type", "dialogue")
    assert code == 2 and "--turn" in err and "--history" in err
    code, _, err = run(capsys, "ask", mem, "Where?", "--turn", "wizard:hello")
    assert code == 2 and "role must be one of" in err
    turns_file.write_text("{not json")
    code, _, err = run(capsys, "ask", mem, "Where?", "--history", turns_file)
    assert code == 2 and "not valid UTF-8 JSON" in err
    assert len(made) == built  # refused before any model was loaded


def test_a_latin1_file_is_named_as_such_and_read_with_encoding(capsys, scripted, tmp_path):
    latin = tmp_path / "latin.txt"
    latin.write_bytes("Halloran drinks caf\xe9 au lait above the bakery.\n".encode("latin-1"))
    mem = tmp_path / "mem"
    code, _, err = run(capsys, "memorize", latin, "--save-dir", mem)
    assert code == 2 and "is not utf-8 text" in err and "byte offset 19" in err
    assert "--encoding latin-1" in err and "iconv" in err and "binary" not in err
    code, _, err = run(capsys, "memorize", latin, "--save-dir", mem, "--encoding", "latin-1")
    assert code == 0, err
    code, out, _ = run(capsys, "retrieve", mem, "What does Halloran drink?", "-k", "1", "--json")
    assert "café" in json.loads(out)["passages"][0]["text"]
    code, _, err = run(capsys, "memorize", latin, "--save-dir", mem, "--encoding", "klingon")
    assert code == 2 and "not an encoding" in err


def test_a_save_dir_inside_a_snapshot_is_refused(capsys, scripted, tmp_path, text_file):
    mem = tmp_path / "mem"
    assert run(capsys, "memorize", text_file, "--save-dir", mem)[0] == 0
    inner = mem / (mem / "CURRENT").read_text().strip()
    code, _, err = run(capsys, "memorize", text_file, "--save-dir", inner, "--overwrite")
    assert code == 2 and "inside the save directory" in err
    code, _, err = run(capsys, "memorize", text_file, "--save-dir", mem / "x", "--overwrite")
    assert code == 2 and "inside the save directory" in err
    assert run(capsys, "stats", mem)[0] == 0  # the outer memory still loads


def test_stats_reads_the_manifest_only(capsys, scripted, monkeypatch, tmp_path, text_file):
    mem = tmp_path / "mem"
    assert run(capsys, "memorize", text_file, "--save-dir", mem)[0] == 0

    def refuse(*_, **__):
        raise AssertionError("stats loaded a model")

    import shared_core.models.loading as loading
    from shared_core.retrieval.embeddings import Embedder

    monkeypatch.setattr(cli, "_build_pipeline", refuse)
    monkeypatch.setattr(MemoRAG, "from_dir", refuse)
    monkeypatch.setattr(Embedder, "load", refuse)
    monkeypatch.setattr(loading, "load_causal_lm", refuse)
    code, out, err = run(capsys, "stats", mem, "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["documents"] == ["story.txt"] and data["chunks"] >= 2
    assert data["memory"]["backend"] == "scripted" and data["memory"]["documents"] == 1
    code, out, err = run(capsys, "stats", mem)
    assert code == 0 and "documents:         1 (story.txt)" in out and "chunks of <= 32" in out


def test_json_says_when_the_memory_wrote_no_clue(capsys, monkeypatch, tmp_path, text_file):
    made: list[MemoRAG] = []
    monkeypatch.setattr(cli, "_build_pipeline", recording_factory(made, memory_rules={}))
    mem = tmp_path / "mem"
    assert run(capsys, "memorize", text_file, "--save-dir", mem)[0] == 0
    code, out, err = run(capsys, "retrieve", mem, QUESTION, "-k", "1", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["clues_empty"] is True and any("wrote no clues" in n for n in data["notes"])
    assert "warning: the memory wrote no clues" in err
    code, out, err = run(capsys, "ask", mem, QUESTION, "-k", "1", "--json")
    assert code == 0 and json.loads(out)["clues_empty"] is True, err


def test_ask_k_defaults_to_the_saved_ret_hit(capsys, monkeypatch, tmp_path, text_file):
    made: list[MemoRAG] = []
    monkeypatch.setattr(cli, "_build_pipeline", recording_factory(made, ret_hit=2))
    mem = tmp_path / "mem"
    assert run(capsys, "memorize", text_file, "--save-dir", mem)[0] == 0
    code, out, err = run(capsys, "ask", mem, QUESTION, "--json")
    assert code == 0, err
    assert len(json.loads(out)["passages"]) == 2 and made[-1].config.ret_hit == 2
