"""What users of upstream ``qhjqhj00/MemoRAG`` type: ``MemoRAGLite`` over the gist back-end,
and ``MemoRAG(...).load(dir)`` of a save whose settings differ only in what it never used."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from scripted import ScriptedGenerator

from shared_core import IncompatibleMemoryError, MemoRAG, MemoRAGLite, NotPicklableError
from shared_core.errors import InputError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TEXTS = ["Marie Curie was born in Warsaw in 1867.", "Radium glows faintly in the dark."]
QUERY = "Where was Marie Curie born?"


def kv(model_dir: Path, **options) -> MemoRAG:
    return MemoRAG(str(model_dir), device="cpu", window=64, retrieval="clues", **options)


def test_load_accepts_a_save_whose_ratio_was_never_used(tiny_llama_dir, tmp_path):
    # Upstream-style beacon_ratio=4 on a text that fits the model: nothing was compressed.
    kv(tiny_llama_dir, beacon_ratio=4, clue_strategy="none").memorize(
        TEXTS, save_dir=tmp_path / "m"
    )
    loaded = kv(tiny_llama_dir, clue_strategy="none").load(tmp_path / "m")  # default ratio
    assert loaded.corpus_size == 2
    assert loaded.retrieve(QUERY, k=1).passages[0].passage.text == TEXTS[0]


def test_load_of_a_compressed_save_with_another_ratio_points_to_from_dir(tiny_llama_dir, tmp_path):
    kv(tiny_llama_dir, beacon_ratio=4, compress="always").memorize(TEXTS, save_dir=tmp_path / "m")
    with pytest.raises(IncompatibleMemoryError, match=r"beacon_ratio.*MemoRAG\.from_dir\("):
        kv(tiny_llama_dir, beacon_ratio=8, compress="always").load(tmp_path / "m")
    assert MemoRAG.from_dir(tmp_path / "m").config.beacon_ratio == 4  # what the error says


def test_memorag_lite_is_the_gist_memory_with_upstreams_arguments(tiny_llama_dir, tmp_path, capsys):
    lite = MemoRAGLite(
        gen_model_name_or_path=str(tiny_llama_dir),
        ret_hit=2,
        retrieval_chunk_size=64,
        device="cpu",
        gist_chunk_size=32,
        gist_tokens=4,
        clue_strategy="none",
    )
    assert lite.config.backend == "gist"
    lite.memorize(" ".join(TEXTS), save_dir=tmp_path / "lite")  # print_stats on, as upstream
    shown = capsys.readouterr()
    assert "retrieval corpus" in shown.out
    assert "memorize (gists)" in shown.err  # the gists' progress, asked for by print_stats
    assert lite.memory.backend == "gist"
    assert isinstance(lite(QUERY, max_new_tokens=4), str)
    again = MemoRAGLite.from_dir(tmp_path / "lite")
    assert isinstance(again, MemoRAGLite) and again.memory.backend == "gist"
    assert pickle.loads(pickle.dumps(lite)).corpus_size == lite.corpus_size
    with pytest.raises(InputError, match="one gist at a time"):
        lite.memorize(TEXTS, batch_size=4)


def test_memorag_lite_refuses_another_memory_and_takes_a_customized_model():
    with pytest.raises(InputError, match="gist back-end"):
        MemoRAGLite(memory_backend="compressed_kv")
    with pytest.raises(InputError, match="not both"):
        MemoRAGLite("some/model", customized_gen_model=ScriptedGenerator())
    generator = ScriptedGenerator("A gist.")
    lite = MemoRAGLite(customized_gen_model=generator, gist_chunk_size=16, clue_strategy="none")
    lite.memorize(TEXTS, print_stats=False)
    assert lite.memory.backend == "gist" and lite.generator is generator
    with pytest.raises(NotPicklableError, match="memory=, generator="):
        pickle.dumps(lite)
