"""The engine side of "a framework retriever as the back-end", generation options, streamed
usage, and the constructors the benchmark uses (an index from vectors, a given copy source)."""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest
from fakes import WordHashEmbedder
from scripted import ScriptedGenerator, ScriptedMemory

from shared_core import MemoRAG
from shared_core.errors import InputError
from shared_core.memory.compressed_kv import CompressedKVMemory
from shared_core.models.options import chat_options
from shared_core.models.streaming import TextStream
from shared_core.retrieval.external import ExternalSearch, Ranked, provenance_metadata, to_hits
from shared_core.retrieval.index import DenseIndex
from shared_core.types import ChatTurn, Chunk, Clue, Generation, Passage, ScoredPassage


def _p(pid: str) -> Passage:
    return Passage(id=pid, text=f"text of {pid}")


class ListSource:
    """A ``RankedSource`` that returns a fixed list and records the depths asked for."""

    def __init__(self, items: list[Ranked]) -> None:
        self.items = items
        self.depths: list[int] = []

    def fetch(self, query: str, depth: int) -> list[Ranked]:
        self.depths.append(depth)
        return self.items


class AsyncListSource(ListSource):
    def __init__(self, items: list[Ranked]) -> None:
        super().__init__(items)
        self.async_calls = 0

    async def afetch(self, query: str, depth: int) -> list[Ranked]:
        self.async_calls += 1
        return self.fetch(query, depth)


def test_hits_are_deduplicated_cut_to_depth_and_ranked_from_zero() -> None:
    items = [Ranked(_p("a")), Ranked(_p("a")), Ranked(_p("b"), 0.7), Ranked(_p("c"))]
    hits = to_hits(items, 2)
    assert [h.passage.id for h in hits] == ["a", "b"]
    assert [h.rank for h in hits] == [0, 1]
    # the framework's score when it gives one, else NaN (the engine scores it by relevance,
    # never by rank)
    assert math.isnan(hits[0].score) and hits[1].score == 0.7
    unscored = to_hits([Ranked(_p("x")), Ranked(_p("y"), float("nan"))], 5)
    assert all(math.isnan(h.score) for h in unscored)


def test_external_search_asks_the_source_for_the_depth() -> None:
    source = ListSource([Ranked(_p(str(i))) for i in range(6)])
    search = ExternalSearch(source)
    assert len(search.search("q", 4)) == 4 and source.depths == [4]
    with pytest.raises(InputError, match="search depth"):
        search.search("q", 0)


def test_async_search_uses_afetch_when_there_is_one() -> None:
    native = AsyncListSource([Ranked(_p("a")), Ranked(_p("b"))])
    assert [h.passage.id for h in asyncio.run(ExternalSearch(native).asearch("q", 1))] == ["a"]
    assert native.async_calls == 1
    plain = ListSource([Ranked(_p("a")), Ranked(_p("a")), Ranked(_p("b"))])
    hits = asyncio.run(ExternalSearch(plain).asearch("q", 3))
    assert [h.passage.id for h in hits] == ["a", "b"] and plain.depths == [3]


def test_provenance_keeps_an_existing_source_id() -> None:
    clue = Clue("born in Leith", "span")
    scored = ScoredPassage(_p("a"), 0.1, (Clue("q", "query"), clue))
    meta = provenance_metadata(scored, {"row": 1})
    assert meta == {
        "source_id": "a",
        "row": 1,
        "memorag_clues": ["q", "born in Leith"],
        "memorag_clue_kinds": ["query", "span"],
    }
    assert provenance_metadata(scored, {"source_id": "mine"})["source_id"] == "mine"


def test_the_engine_passes_one_depth_to_every_search() -> None:
    engine = MemoRAG(
        memory=ScriptedMemory(default=""), embedder=WordHashEmbedder(), clue_strategy="none"
    )
    engine.memorize(["one text about herring boats"])
    source = ListSource([Ranked(_p(str(i))) for i in range(8)])
    engine.retrieve("herring", 2, search=ExternalSearch(source))
    assert source.depths == [max(2, engine.config.ret_hit)]
    engine.retrieve("herring", 5, search=ExternalSearch(source), search_k=7)
    assert source.depths[-1] == 7


# -- generation options -------------------------------------------------------------------------


def test_chat_options_merge_call_over_defaults() -> None:
    assert chat_options() == {"max_new_tokens": 256, "stop": [], "temperature": 0.0}
    merged = chat_options(
        max_tokens=5, stop="b", default_max_tokens=9, default_stop=["a", "", "b"], temperature=0
    )
    assert merged == {"max_new_tokens": 5, "stop": ["a", "b"], "temperature": 0.0}
    assert chat_options(default_max_tokens=9, default_temperature=0.5)["temperature"] == 0.5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": True}, "max_tokens"),
        ({"temperature": -1.0}, "temperature"),
        ({"temperature": float("inf")}, "temperature"),
        ({"stop": [1]}, "stop"),
    ],
)
def test_chat_options_refuse_bad_values(kwargs: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        chat_options(**kwargs)


# -- streamed usage -----------------------------------------------------------------------------


def test_text_stream_hands_over_the_runs_generation() -> None:
    class Run:
        def __iter__(self):
            yield "a"
            yield "b"

        @property
        def generation(self) -> Generation:
            return Generation("ab", prompt_tokens=3, completion_tokens=2)

    stream = TextStream(Run())
    with pytest.raises(RuntimeError, match="end"):
        _ = stream.generation
    assert list(stream) == ["a", "b"]
    assert stream.generation == Generation("ab", 3, 2)


def test_streamed_chat_counts_the_decoders_tokens(llama, tokenizer) -> None:
    memory = CompressedKVMemory(
        llama,
        tokenizer,
        beacon_ratio=2,
        window=64,
        reserve_tokens=32,
        show_progress=False,
        compress="always",
        scorer="key_norm",
    )
    engine = MemoRAG(memory=memory, embedder=WordHashEmbedder(), generator=ScriptedGenerator())
    engine.memorize(["The keeper's log records a great storm in the winter of 1862."])
    messages = [ChatTurn("user", "What does the log record?")]
    whole = engine.chat(messages, max_new_tokens=6)
    stream = engine.stream_chat(messages, max_new_tokens=6)
    assert "".join(stream) == whole.text
    assert stream.generation == whole  # prompt and completion tokens as the decoder counted
    astream = engine.astream_chat(messages, max_new_tokens=6)

    async def read() -> str:
        return "".join([piece async for piece in astream])

    assert asyncio.run(read()) == whole.text and astream.generation == whole


# -- constructors the benchmark uses ------------------------------------------------------------


def test_index_from_vectors_searches_like_an_embedded_one() -> None:
    embedder = WordHashEmbedder()
    texts = ["herring boats from Wick", "a storm in 1862", "the school opened in 1870"]
    chunks = [Chunk(f"d{i}#0", f"d{i}", t, 0, len(t)) for i, t in enumerate(texts)]
    built = DenseIndex(embedder)
    built.add(chunks)
    given = DenseIndex.from_vectors(chunks, embedder.embed_passages(texts), embedder)
    assert np.array_equal(given.vectors(), built.vectors())
    query = "when was the storm"
    assert [h.passage for h in given.search(query, 3)] == [
        h.passage for h in built.search(query, 3)
    ]
    with pytest.raises(InputError, match="duplicate"):
        DenseIndex.from_vectors([chunks[0], chunks[0]], given.vectors()[:2], embedder)


def test_an_injected_index_is_searched_without_memorize() -> None:
    embedder = WordHashEmbedder()
    texts = ["herring boats from Wick", "a storm in 1862"]
    chunks = [Chunk(f"d{i}#0", f"d{i}", t, 0, len(t)) for i, t in enumerate(texts)]
    index = DenseIndex.from_vectors(chunks, embedder.embed_passages(texts), embedder)
    engine = MemoRAG(
        memory=ScriptedMemory(default=""),
        embedder=embedder,
        search_index=index,
        clue_strategy="none",
    )
    result = engine.retrieve("the storm of 1862", 1)
    assert [p.passage.id for p in result.passages] == ["d1#0"]
