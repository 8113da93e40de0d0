"""The prompt language is resolved before any part is built (issue: a Chinese corpus got
English prompts on the lazy path, because building the memory fixed the prompts first)."""

from __future__ import annotations

from pathlib import Path

import pytest
from scripted import shared_embedder

from shared_core.config import MemoRAGConfig
from shared_core.errors import InputError
from shared_core.pipeline import MemoRAG
from shared_core.prompts import get_prompts

ZH = "长城是中国古代的军事防御工程。它东起山海关，西至嘉峪关，全长两万多公里。" * 3


def test_a_chinese_corpus_gets_chinese_prompts_on_the_lazy_path(tiny_llama_dir: Path) -> None:
    pipe = MemoRAG(str(tiny_llama_dir), embedder=shared_embedder(), device="cpu", window=64)
    pipe.memorize(ZH)
    zh = get_prompts("zh")
    assert pipe.prompts.language == "zh"
    assert pipe.memory.intro == zh.memory_intro  # the memory itself is framed in Chinese


def test_an_explicit_language_wins_over_detection(tiny_llama_dir: Path) -> None:
    pipe = MemoRAG(str(tiny_llama_dir), embedder=shared_embedder(), device="cpu", language="en")
    pipe.memorize(ZH)
    assert pipe.prompts.language == "en"


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"windw": 512}, "windw"),
        ({"memory_backend": "gist", "window": 512}, "window"),
        ({"memory_backend": "gist", "scorer": "key_norm"}, "scorer"),
        ({"memory_backend": "gist", "reserve_tokens": 8}, "reserve_tokens"),
        ({"memory_backend": "compressed_kv", "chunk_tokens": 8}, "chunk_tokens"),
        ({"fusion": "sum"}, "fusion"),
        ({"ret_hit": 0}, "ret_hit"),
        ({"beacon_ratio": True}, "beacon_ratio"),
        ({"clue_strategy": "copyy"}, "copyy"),
        ({"max_chars": "big"}, "max_chars"),
        ({"memory_backend": "full_kv", "beacon_ratio": 4}, "beacon_ratio"),
    ],
)
def test_wrong_options_are_refused_at_construction_with_their_name(options, name) -> None:
    with pytest.raises(InputError, match=name):
        MemoRAG(**options)


def test_options_that_a_backend_takes_are_kept() -> None:
    config = MemoRAG(memory_backend="gist", chunk_tokens=256).config
    assert config.memory_kwargs() == {
        "chunk_tokens": 256,
        "gist_tokens": 96,
        "max_chars": 4_000_000,
        "max_documents": 10_000,
    }
    kv = MemoRAGConfig(window=512, memory_options={"reserve_tokens": 64})
    assert kv.memory_kwargs()["window"] == 512 and kv.memory_kwargs()["reserve_tokens"] == 64
    assert MemoRAGConfig(memory_backend="full_kv").ratio == 1
    assert MemoRAGConfig().ratio == 32  # when_needed: the most it may compress to
    assert MemoRAGConfig(compress="always").ratio == 4


def test_the_default_compressed_memory_keeps_evenly_spaced_entries() -> None:
    kwargs = MemoRAGConfig().memory_kwargs()
    assert kwargs["scorer"] == "stride" and kwargs["compress"] == "when_needed"
    assert MemoRAGConfig(scorer="key_norm").memory_kwargs()["scorer"] == "key_norm"
    assert MemoRAGConfig().heads_weight == 2.0 and MemoRAGConfig().query_weight == 2.0
    assert MemoRAGConfig().heads_weighting == "agreement"
