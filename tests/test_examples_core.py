"""The core examples run end to end, on a tiny random-weight memory model (mechanics only).

Each example builds its pipelines through module-level ``new_pipeline``/``load_pipeline``
functions; the tests patch those to inject the tiny model. The real-model runs are not tests.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
from scripted import shared_embedder
from tiny_models import tiny_model

from shared_core import CompressedKVMemory, MemoRAG

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def big_llama():
    """Room for the ~10k byte tokens of one letter (the tiny tokenizer is byte-level)."""
    return tiny_model("llama", max_positions=16384)


@pytest.fixture
def tiny(monkeypatch, big_llama, tokenizer):
    """Patch an example's pipeline factories; returns a log of what was built."""
    built: list[str] = []

    def memory() -> CompressedKVMemory:
        return CompressedKVMemory(
            big_llama,
            tokenizer,
            beacon_ratio=8,
            window=256,
            reserve_tokens=128,
            show_progress=False,
            compress="always",
            scorer="key_norm",
        )

    parts = {"embedder": shared_embedder(), "retrieval_chunk_size": 48, "chunk_overlap": 0}

    def new_pipeline() -> MemoRAG:
        built.append("new")
        return MemoRAG(memory=memory(), **parts)

    def load_pipeline(save_dir: Path) -> MemoRAG:
        built.append("load")
        return MemoRAG.from_dir(save_dir, memory=memory(), **parts)

    def patch(module: ModuleType) -> list[str]:
        monkeypatch.setattr(module, "new_pipeline", new_pipeline)
        if hasattr(module, "load_pipeline"):
            monkeypatch.setattr(module, "load_pipeline", load_pipeline)
        return built

    return patch


def test_quickstart_memorizes_once_then_reuses_the_save(tiny, tmp_path, capsys):
    quickstart = load_example("quickstart")
    built = tiny(quickstart)
    text = tmp_path / "extract.txt"
    text.write_text(quickstart.DATA.read_text("utf-8")[:3000], "utf-8")
    argv = ["--save-dir", str(tmp_path / "mem"), "--text", str(text), "--max-new-tokens", "4"]

    assert quickstart.main(argv) == 0
    out = capsys.readouterr().out
    assert built == ["new"] and "memorizing extract.txt" in out
    assert "tokens read" in out  # the memory stats
    for number, question in enumerate(quickstart.QUESTIONS, start=1):
        assert f"Q{number}. {question}" in out
    assert out.count("found by query") >= 1 and "answer (" in out and "clues (" in out
    assert "extract@" in out and "total:" in out

    assert quickstart.main([*argv, "-q", "Who writes the letters?", "-k", "2"]) == 0
    out = capsys.readouterr().out
    assert built == ["new", "load"] and "loading the saved memory" in out
    assert "Q1. Who writes the letters?" in out and "Q2." not in out
    assert "    2. extract@" in out and "    3. " not in out

    one = ["-q", "Who writes the letters?"]
    assert quickstart.main([*argv, *one, "--fresh"]) == 0
    assert built == ["new", "load", "new"]

    text.write_text(quickstart.DATA.read_text("utf-8")[:2000], "utf-8")  # the text changed
    assert quickstart.main([*argv, *one]) == 0
    assert built[-1] == "new"


def test_quickstart_refuses_a_save_dir_of_other_files(tiny, tmp_path, capsys):
    quickstart = load_example("quickstart")
    tiny(quickstart)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    text = tmp_path / "extract.txt"
    text.write_text("A short text about a ship in the ice. " * 20, "utf-8")
    code = quickstart.main(["--save-dir", str(tmp_path / "mine"), "--text", str(text)])
    assert code == 2 and "not empty" in capsys.readouterr().err
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_personalize_recommends_from_the_history(tiny, capsys):
    personalize = load_example("personalize")
    built = tiny(personalize)
    docs = personalize.history_documents(personalize.HISTORY)
    assert len(docs) == 42 and docs[0].doc_id == "entry-01"
    assert docs[0].text.startswith("2024-01-04, book: The Left Hand of Darkness by Ursula")
    assert personalize.main(["--max-new-tokens", "4", "-k", "3"]) == 0
    out = capsys.readouterr().out
    assert built == ["new"] and "memorized 42 log entries" in out
    assert out.count("  entry-") == 3 and "What should I read next?" in out


def test_summarize_memorizes_letters_or_loads_a_save(tiny, tmp_path, capsys, big_llama, tokenizer):
    summarize = load_example("summarize")
    built = tiny(summarize)
    text = summarize.DATA.read_text("utf-8")
    one = summarize.first_letters(text, 1)
    assert one.startswith("Letter 1") and "Letter 2" not in one
    four = summarize.first_letters(text, 4)
    assert "\nLetter 4\n" in four and "Chapter 1" not in four
    assert summarize.main(["--letters", "1", "--max-new-tokens", "4", "-k", "2"]) == 0
    out = capsys.readouterr().out
    assert built == ["new"] and "memorized Letters 1-1" in out and "summary:" in out
    assert out.count("  letters-1-1 [") == 5  # summaries read at least 5 passages

    assert summarize.main(["--letters", "9"]) == 2
    assert "--letters must be between 1 and 4" in capsys.readouterr().err

    memory = CompressedKVMemory(
        big_llama,
        tokenizer,
        beacon_ratio=8,
        window=256,
        reserve_tokens=128,
        show_progress=False,
        compress="always",
        scorer="key_norm",
    )
    pipe = MemoRAG(
        memory=memory, embedder=shared_embedder(), retrieval_chunk_size=48, chunk_overlap=0
    )
    pipe.memorize(one[:2000], save_dir=tmp_path / "mem")
    assert summarize.main(["--from-save", str(tmp_path / "mem"), "--max-new-tokens", "4"]) == 0
    assert built[-1] == "load" and "summary:" in capsys.readouterr().out
