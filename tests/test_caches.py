"""No cache is keyed by ``id()``: each holds what it was built from, so an object created later
at the same address (CPython reuses them) can never be served another object's entry."""

from __future__ import annotations

import numpy as np
import pytest
from fakes import WordHashEmbedder
from scripted import ScriptedMemory
from tiny_models import tiny_tokenizer

import shared_core.heads.route as route_module
import shared_core.pipeline as pipeline_module
from shared_core.head_sets import HeadSet
from shared_core.heads.candidates import MemoryTextCache
from shared_core.heads.route import AttentionRoute
from shared_core.memory.compressed_kv import CompressedKVMemory
from shared_core.models.loading import model_fingerprint
from shared_core.pipeline import MemoRAG

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _corpus(i: int) -> list[str]:
    """Three texts of corpus ``i``: every corpus has the same number of chunks."""
    return [f"Corpus {i} tells of keeper number {j} and the lamp {i}{j}." for j in range(3)]


def _copied_text(pipe: MemoRAG) -> str:
    source = pipe._copy_source()
    assert source is not None
    tokenizer = pipe.memory.tokenizer
    return tokenizer.decode([int(t) for t in source.ids if t >= 0])


@pytest.fixture
def pipe() -> MemoRAG:
    memory = ScriptedMemory()
    memory.tokenizer = tiny_tokenizer()
    return MemoRAG(memory=memory, embedder=WordHashEmbedder(), clue_strategy="none")


def test_the_copy_source_follows_each_new_corpus_of_the_same_size(pipe):
    for i in range(30):  # the old index is freed each time: its address is often reused
        pipe.memorize(_corpus(i))
        text = _copied_text(pipe)
        assert f"Corpus {i} tells" in text and f"Corpus {i - 1} tells" not in text


def test_the_copy_source_is_not_fooled_by_a_reused_address(pipe, monkeypatch):
    """Every object at one address (what id() reuse looks like, made certain)."""
    monkeypatch.setattr(pipeline_module, "id", lambda obj: 1, raising=False)
    pipe.memorize(_corpus(1))
    assert "Corpus 1 tells" in _copied_text(pipe)
    pipe.memorize(_corpus(2))
    assert "Corpus 2 tells" in _copied_text(pipe)
    pipe.add(["Corpus 3 is added on top."])
    assert "Corpus 3 is added" in _copied_text(pipe)


def test_the_heads_ranker_is_built_for_the_memory_asked_about(llama, tokenizer, monkeypatch):
    monkeypatch.setattr(route_module, "id", lambda obj: 1, raising=False)
    kv = CompressedKVMemory(llama, tokenizer, window=64, reserve_tokens=64, show_progress=False)
    route = AttentionRoute(head_set=HeadSet(kv.name, model_fingerprint(kv.model), ((0, 1),)))
    plain = ScriptedMemory()
    ranker, why = route._ranker_for(plain)
    assert ranker is None and "ScriptedMemory" in why
    ranker, why = route._ranker_for(kv)  # another memory, at the "same address"
    assert ranker is not None and ranker.memory is kv and why == ""
    assert route._ranker_for(kv)[0] is ranker  # cached for that memory
    index = _index_of(kv)
    text = MemoryTextCache().get(index, kv.documents)
    candidates = [hit.passage for hit in index.search("Which keeper?", 2)]
    hits = route.attention_hits(kv, text, "Which keeper?", candidates)[0]
    assert len(hits) == 2


def _index_of(memory: CompressedKVMemory):
    pipe = MemoRAG(memory=memory, embedder=WordHashEmbedder(), clue_strategy="none")
    pipe.memorize(_corpus(0))
    assert np.asarray(pipe.index.vectors()).shape[0] == 3
    return pipe.index
