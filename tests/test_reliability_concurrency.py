"""Concurrency: one loaded memory shared by threads and asyncio tasks, adds and saves at once.

Everything runs on the real engine with tiny models: a compressed KV memory on the tiny Llama
and the embedded MiniLM index. The clue writer turns the memory's raw reply into the clue,
so the retrieved passages depend on every token the memory generated: a request that saw
another request's tokens would get other clues and other passages.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import torch
from crash_worker import corpus, make_memory, make_pipeline

from shared_core.errors import InputError
from shared_core.pipeline import MemoRAG, read_save_info
from shared_core.retrieval.index import DenseIndex
from shared_core.types import Chunk, Document, RetrievalResult

QUESTIONS = [
    "Where does the fox live?",
    "What does the owl eat?",
    "When does the cat sleep?",
    "Which animal lives by the meadow?",
    "Tell me about the elk.",
    "Is the dog near the kennel?",
    "What food does the yak like?",
    "Who sleeps at hour 7?",
]


def signature(result: RetrievalResult) -> tuple:
    return (
        tuple(c.text for c in result.clues),
        tuple(p.passage.id for p in result.passages),
        tuple(round(p.score, 6) for p in result.passages),
    )


@pytest.fixture(scope="module")
def pipe(llama) -> MemoRAG:
    engine = make_pipeline(llama)
    engine.memorize(corpus(10))
    return engine


@pytest.fixture(scope="module")
def alone(pipe) -> dict[str, Any]:
    """What each question gets when it is the only request."""
    return {
        "retrieve": [signature(pipe.retrieve(q, 3)) for q in QUESTIONS],
        "generate": [pipe.memory.generate(q, max_new_tokens=8).text for q in QUESTIONS],
    }


def memory_snapshot(memory) -> tuple:
    state = memory._state
    return state, [t.clone() for t in state.keys], [t.clone() for t in state.values]


def assert_memory_unchanged(memory, snapshot: tuple) -> None:
    state, keys, values = snapshot
    assert memory._state is state
    for got, want in zip(state.keys + state.values, keys + values, strict=True):
        assert torch.equal(got, want)


def test_eight_threads_get_exactly_what_they_get_one_at_a_time(pipe, alone):
    before = memory_snapshot(pipe.memory)
    start = threading.Barrier(8)

    def ask(i: int) -> tuple:
        start.wait()
        return (
            signature(pipe.retrieve(QUESTIONS[i], 3)),
            pipe.memory.generate(QUESTIONS[i], max_new_tokens=8).text,
        )

    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(ask, range(8)))
    for i, results in enumerate(got):
        want = (alone["retrieve"][i], alone["generate"][i])
        assert results == want, f"thread {i} ({QUESTIONS[i]!r}) saw another request's tokens"
    assert len({r[0] for r in got}) == 8  # the questions really differ
    assert_memory_unchanged(pipe.memory, before)
    assert [signature(pipe.retrieve(q, 3)) for q in QUESTIONS] == alone["retrieve"]


def _from_documents(docs) -> tuple:
    clues = {c for d in docs for c in d.metadata["memorag_clues"]}
    return (
        tuple(sorted(clues)),
        tuple(d.id for d in docs),
        tuple(round(d.metadata["relevance_score"], 6) for d in docs),
    )


def _from_nodes(nodes) -> tuple:
    clues = {c for n in nodes for c in n.node.metadata["memorag_clues"]}
    return (
        tuple(sorted(clues)),
        tuple(n.node.node_id for n in nodes),
        tuple(round(n.score, 6) for n in nodes),
    )


async def test_eight_asyncio_tasks_per_adapter_match_one_at_a_time(pipe, alone):
    """8 LangChain ``ainvoke`` and 8 LlamaIndex ``aretrieve`` at once, on one engine."""
    from langchain_memorag import MemoRAGRetriever as LangChainRetriever
    from llamaindex_memorag import MemoRAGRetriever as LlamaIndexRetriever

    lc = LangChainRetriever.from_engine(pipe, query_metadata=True, k=3)
    li = LlamaIndexRetriever(pipe, query_metadata=True, similarity_top_k=3)
    before = memory_snapshot(pipe.memory)
    results = await asyncio.gather(
        *(lc.ainvoke(q) for q in QUESTIONS), *(li.aretrieve(q) for q in QUESTIONS)
    )
    want = [
        (tuple(sorted(set(r[0]) - {q})), r[1], r[2])
        for q, r in zip(QUESTIONS, alone["retrieve"], strict=True)
    ]

    def without_query(sig: tuple, query: str) -> tuple:
        return (tuple(c for c in sig[0] if c != query), sig[1], sig[2])

    got_lc = [
        without_query(_from_documents(r), q) for q, r in zip(QUESTIONS, results[:8], strict=True)
    ]
    got_li = [without_query(_from_nodes(r), q) for q, r in zip(QUESTIONS, results[8:], strict=True)]
    for i in range(8):
        # the passages, their fused scores and the memory-written clues that found them
        assert got_lc[i][1:] == want[i][1:] and set(got_lc[i][0]) <= set(want[i][0]), i
        assert got_li[i][1:] == want[i][1:] and set(got_li[i][0]) <= set(want[i][0]), i
    assert_memory_unchanged(pipe.memory, before)


def test_add_while_four_threads_retrieve(llama):
    """Readers never fail or see half an add; afterwards the pipeline equals a sequential one."""
    live = make_pipeline(llama)
    live.memorize(corpus(10))
    extra = [
        Document(
            f"Late note {j}: the heron {j} fishes at weir {j} every evening.", doc_id=f"late-{j}"
        )
        for j in range(2)
    ]
    known = {d.doc_id for d in corpus(10)} | {d.doc_id for d in extra}
    stop = threading.Event()
    errors: list[BaseException] = []
    reads = [0]

    def reader(i: int) -> None:
        while not stop.is_set():
            try:
                result = live.retrieve(QUESTIONS[i], 3)
                assert len(result.passages) == 3
                assert {p.passage.metadata["doc_id"] for p in result.passages} <= known
                reads[0] += 1
                time.sleep(0.01)
            except BaseException as exc:  # reported below
                errors.append(exc)
                return

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    try:
        for doc in extra:
            live.add([doc])
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors[0]
    assert reads[0] >= 4

    sequential = make_pipeline(llama)
    sequential.memorize(corpus(10))
    for doc in extra:
        sequential.add([doc])
    assert [d["doc_id"] for d in live.memory.documents] == [
        d["doc_id"] for d in sequential.memory.documents
    ]
    assert live.index.chunks == sequential.index.chunks
    for q in QUESTIONS[:3]:
        assert signature(live.retrieve(q, 3)) == signature(sequential.retrieve(q, 3))


class _PausingIndex:
    """Wraps the faiss index: ``add`` pauses after the vectors went in (before the chunks)."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.added = threading.Event()
        self.proceed = threading.Event()

    def add(self, vectors: Any) -> None:
        self.real.add(vectors)
        self.added.set()
        self.proceed.wait(timeout=10)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def test_a_search_never_sees_vectors_whose_chunks_are_not_added_yet(pipe):
    index = DenseIndex(pipe.embedder)
    index.add(list(pipe.index.chunks)[:6])
    pausing = _PausingIndex(index._index)
    index._index = pausing
    new = Chunk("new#0", "new", "A walrus sunbathes on the pier at noon.", 0, 39)
    adder = threading.Thread(target=index.add, args=([new],))
    adder.start()
    assert pausing.added.wait(timeout=30)
    found: list[Any] = []
    searcher = threading.Thread(target=lambda: found.append(_search(index, new.text)))
    searcher.start()
    searcher.join(timeout=0.5)  # with the lock the search waits for the add to finish
    pausing.proceed.set()
    adder.join()
    searcher.join()
    assert not isinstance(found[0], BaseException), found[0]
    assert found[0][0].passage.id == "new#0"


def _search(index: DenseIndex, text: str) -> Any:
    try:
        return index.search(text, 7)
    except BaseException as exc:  # returned to the test thread
        return exc


def test_chunking_and_query_embedding_at_once_do_not_break_each_other(pipe, monkeypatch):
    """HF fast tokenizers keep truncation/padding state on the object: chunking (no padding)
    landing inside a query embedding (padding) on the same object broke the embedding and
    silently changed chunk sizes. The chunker now counts with its own copy of the tokenizer.

    The interleaving is forced: a chunking runs right after the embedder's tokenizer set its
    padding, exactly where another thread's chunking would land.
    """
    docs = [
        Document("The fox runs. The owl sleeps. The cat naps by the fire. " * 6, doc_id=f"long-{i}")
        for i in range(3)
    ]
    texts = ["Owl?", "Which animal lives by the meadow and sleeps at hour seven?"]
    want = pipe.parts.chunker.split(docs)
    queries = pipe.embedder.embed_queries(texts)
    tokenizer = pipe.embedder.tokenizer
    chunked: list[Any] = []
    original = type(tokenizer).set_truncation_and_padding

    def interleaved(self, *args: Any, **kwargs: Any) -> Any:
        result = original(self, *args, **kwargs)
        if self is tokenizer and not chunked:
            chunked.append(None)
            chunked[0] = pipe.parts.chunker.split(docs)  # "another thread" chunks here
        return result

    monkeypatch.setattr(type(tokenizer), "set_truncation_and_padding", interleaved)
    got = pipe.embedder.embed_queries(texts)
    assert chunked == [want]
    assert abs(got - queries).max() < 1e-5

    # and for real, with threads: chunk in a loop while queries are embedded
    monkeypatch.undo()
    errors: list[BaseException] = []
    done = threading.Event()

    def chunk() -> None:
        while not done.is_set():
            try:
                assert pipe.parts.chunker.split(docs) == want
                time.sleep(0.002)
            except BaseException as exc:
                errors.append(exc)
                return

    thread = threading.Thread(target=chunk)
    thread.start()
    try:
        for _ in range(4):
            assert abs(pipe.embedder.embed_queries(texts) - queries).max() < 1e-5
    except BaseException as exc:
        errors.append(exc)
    finally:
        done.set()
        thread.join()
    assert not errors, repr(errors[0])


def test_concurrent_adds_to_one_memory_number_every_document_once(llama):
    memory = make_memory(llama)
    memory.memorize([d.text for d in corpus(4)])
    start = threading.Barrier(4)

    def add(i: int) -> None:
        start.wait()
        memory.add(f"Extra line {i}: the gull {i} circles the harbour {i} times.")

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(add, range(4)))
    ids = [d["doc_id"] for d in memory.documents]
    assert sorted(ids) == [f"doc-{i}" for i in range(8)], ids


def test_two_first_adds_on_an_empty_pipeline_keep_both(llama):
    engine = make_pipeline(llama)
    start = threading.Barrier(2)
    texts = ["The lynx hides in the pines at dusk.", "The otter swims under the old bridge."]

    def add(text: str) -> None:
        start.wait()
        engine.add([text])

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(add, texts))
    assert len(engine.memory.documents) == 2
    assert {c.text.strip() for c in engine.index.chunks} == set(texts)


def test_concurrent_saves_of_one_memory_to_one_directory(pipe, tmp_path):
    root = tmp_path / "mem"
    start = threading.Barrier(6)

    def save(_: int) -> None:
        start.wait()
        pipe.save(root)

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(save, range(6)))
    names = [p.name for p in root.iterdir()]
    assert len([n for n in names if n.startswith("snap-")]) == 1
    assert not [n for n in names if n.startswith(".staging")]
    assert read_save_info(root)["pipeline"]["documents"] == [f"doc-{i}" for i in range(10)]


def test_two_memories_saved_at_once_to_a_new_directory_one_wins(llama, tmp_path):
    """The "directory holds another memory" check runs under the save lock."""
    first, second = make_pipeline(llama), make_pipeline(llama)
    first.memorize(corpus(3))
    second.memorize(corpus(5))
    root = tmp_path / "mem"
    start = threading.Barrier(2)

    def save(engine: MemoRAG) -> BaseException | None:
        start.wait()
        try:
            engine.save(root)
        except InputError as exc:
            return exc
        return None

    with ThreadPoolExecutor(2) as pool:
        outcomes = list(pool.map(save, (first, second)))
    refused = [o for o in outcomes if o is not None]
    assert len(refused) == 1 and "another memory" in str(refused[0])
    winner = first if outcomes[0] is None else second
    assert read_save_info(root)["pipeline"]["documents"] == [
        d["doc_id"] for d in winner.memory.documents
    ]


def test_loads_while_another_thread_adds_and_saves_see_whole_saves(llama, tmp_path):
    root = tmp_path / "mem"
    writer = make_pipeline(llama)
    writer.memorize(corpus(4), root)
    states = [[d.doc_id for d in corpus(4)]]
    for j in range(2):
        states.append([*states[-1], f"doc-{4 + j}"])
    stop = threading.Event()
    seen: list[Any] = []
    loaded = make_pipeline(llama)

    def load() -> None:
        while not stop.is_set():
            try:
                loaded.load(root)
                seen.append([d["doc_id"] for d in loaded.memory.documents])
            except BaseException as exc:  # reported below
                seen.append(exc)
                return

    reader = threading.Thread(target=load)
    reader.start()
    try:
        for j in range(2):
            writer.add([f"Note {j}: the crane {j} nests on roof {j}."], save_dir=Path(root))
    finally:
        stop.set()
        reader.join()
    failures = [s for s in seen if isinstance(s, BaseException)]
    assert not failures, repr(failures[0])
    assert seen and all(s in states for s in seen)
