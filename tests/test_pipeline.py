"""``MemoRAG`` end to end: a scripted memory and generator around the real MiniLM embedder.

The memory's clues come from a rule table (``tests/scripted.py``), so every assertion about
which passage is retrieved, by which clue, is deterministic. One test at the end runs the same
flow on a real (tiny, random-weight) compressed KV memory, checking mechanics only.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest
from scripted import (
    DRAFT,
    FOLLOWUP,
    KEY_POINTS,
    PREFERENCES,
    SPAN,
    SURROGATE,
    ScriptedGenerator,
    ScriptedMemory,
    shared_embedder,
)

from shared_core.errors import InputError, NoMemoryError, PersistenceError
from shared_core.memory.compressed_kv import CompressedKVMemory
from shared_core.persistence import file_record
from shared_core.pipeline import Answer, MemoRAG, read_save_info
from shared_core.types import ChatTurn, Clue, Document

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CORPUS = [
    "The ship's doctor aboard the Gull was a quiet man named Halloran, who joined the crew "
    "in 1861.",
    "The ship's cook lives in a cramped cabin next to the galley of the Gull.",
    "Sailors of the Gull live in hammocks slung below deck during long voyages.",
    "The harbour town sells smoked fish at a market every Saturday morning.",
    "The lighthouse keeper records every shipwreck in his logbook.",
    "The captain's quarters at the stern have a window over the sea.",
    "Old Tobiah repairs clocks in a narrow shop behind the chapel.",
    "Halloran rents a small room above the bakery on Wick Lane.",
    "The schoolmaster teaches the harbour children to row before they can read.",
    "A travelling surgeon once pulled teeth for a penny in a tent near the bridge.",
    "The Gull carries timber and salt between the northern ports each summer.",
    "Storms close the strait for most of January and February.",
    "The chapel bell was cast in 1790 and cracked during a hard frost.",
    "The mill on the Ashe river was rebuilt with stone from the quarry after the flood.",
    "Fishermen mend their nets on the quay while the tide is out.",
    "The harbourmaster's daughter keeps the tide tables in a leather book.",
]
QUERY = "Where does the ship's doctor live?"
EVIDENCE = "doc-7#0"  # never named by the query: only the memory's clues lead to it
SPAN_REPLY = (
    "Halloran rents a small room above the bakery on Wick Lane.\n"
    "The ship's doctor was a quiet man named Halloran."
)
SURROGATE_REPLY = "Where does Halloran live?\nWhich street is Halloran's room on?"
RULES = {(SPAN, QUERY): SPAN_REPLY, (SURROGATE, QUERY): SURROGATE_REPLY}
REPLY = "Above the bakery on Wick Lane."


@pytest.fixture(scope="module")
def embedder():
    return shared_embedder()


def make(embedder, rules=None, *, reply: str = REPLY, memorize: bool = True, **kw):
    """A pipeline on a scripted memory + generator; returns (pipe, memory, generator)."""
    memory = ScriptedMemory(RULES if rules is None else rules)
    generator = ScriptedGenerator(reply)
    pipe = MemoRAG(memory=memory, embedder=embedder, generator=generator, **kw)
    if memorize:
        pipe.memorize(CORPUS)
    return pipe, memory, generator


def ids(result) -> list[str]:
    return [p.passage.id for p in result.passages]


def kinds(scored) -> set[str]:
    return {c.kind for c in scored.found_by}


# -- clues ----------------------------------------------------------------------------------


def test_clue_lines_are_parsed_through_the_pipeline(embedder):
    noisy_span = (
        "Sure! Here are the sentences:\n"
        "1. **Halloran rents a small room above the bakery on Wick Lane.**\n"
        "- Halloran rents a small room above the bakery on Wick Lane\n"
        "ok\n"
        f"{QUERY}\n"
        "2. The ship's doctor was a quiet man named Halloran."
    )
    pipe, memory, _ = make(embedder, {SPAN: noisy_span, SURROGATE: "Q1: Where does Halloran live?"})
    clues = pipe.clues(QUERY)
    assert clues == [
        Clue("Halloran rents a small room above the bakery on Wick Lane.", "span"),
        Clue("The ship's doctor was a quiet man named Halloran.", "span"),
        Clue("Where does Halloran live?", "surrogate"),
    ]
    span_call, surrogate_call = memory.calls
    assert QUERY in span_call.prompt and SPAN in span_call.prompt
    assert QUERY in surrogate_call.prompt and SURROGATE in surrogate_call.prompt


def test_a_memory_that_writes_nothing_usable_leaves_only_the_query(embedder):
    pipe, _, _ = make(embedder, {SPAN: "Sure!\nok", SURROGATE: QUERY})
    result = pipe.retrieve(QUERY, 3)
    assert [c.kind for c in result.clues] == ["query"]
    assert len(result.passages) == 3


# -- retrieval and fusion -------------------------------------------------------------------


def test_retrieval_uses_the_clues(embedder):
    pipe, _, _ = make(embedder)
    raw = make(embedder, clue_strategy="none")[0].retrieve(QUERY, 3)
    assert [c.kind for c in raw.clues] == ["query"]
    assert EVIDENCE not in ids(raw), "the raw query alone must miss the evidence"

    result = pipe.retrieve(QUERY, 3)
    assert EVIDENCE in ids(result)
    found = next(p for p in result.passages if p.passage.id == EVIDENCE)
    assert kinds(found) == {"span", "surrogate"}  # the clues found it, the query did not
    assert found.passage.text == CORPUS[7]
    assert found.passage.metadata["doc_id"] == "doc-7"
    assert (found.passage.metadata["start"], found.passage.metadata["end"]) == (0, len(CORPUS[7]))


def test_a_verbatim_clue_puts_its_passage_in_the_top_k(embedder):
    """The default fusion (interleave) lets each clue's top hit into the top k."""
    pipe, _, _ = make(
        embedder, {SPAN: "Halloran rents a small room above the bakery."}, clue_strategy="span"
    )
    hits = pipe.index.search("Halloran rents a small room above the bakery.", 1)
    assert hits[0].passage.id == EVIDENCE  # the clue's own search ranks the evidence first
    assert pipe.config.fusion == "auto"  # interleave on the clue path, zscore on the heads path
    assert EVIDENCE in ids(pipe.retrieve(QUERY, 3))
    # Under RRF (k=60) the same rank-0 hit is outvoted by passages every list holds lower:
    # why interleave became the default (benchmarks: docs/benchmarks.md).
    rrf, _, _ = make(
        embedder,
        {SPAN: "Halloran rents a small room above the bakery."},
        clue_strategy="span",
        fusion="rrf",
    )
    assert EVIDENCE not in ids(rrf.retrieve(QUERY, 3))


@pytest.mark.parametrize("k", [1, 2, 3, 5, 8])
def test_rrf_gives_exactly_k_distinct_passages_in_rrf_order(embedder, k):
    pipe, _, _ = make(embedder, fusion="rrf")
    result = pipe.retrieve(QUERY, k)
    got = ids(result)
    assert len(got) == k and len(set(got)) == k
    # Recompute the weighted RRF independently from each key's own search.
    depth = max(k, pipe.config.ret_hit)
    scores: dict[str, float] = {}
    for clue in result.clues:
        for rank, hit in enumerate(pipe.index.search(clue.text, depth)):
            scores[hit.passage.id] = scores.get(hit.passage.id, 0.0) + clue.weight / (61 + rank)
    rrf = [scores[pid] for pid in got]
    assert rrf == sorted(rrf, reverse=True)  # the order is RRF's
    assert min(rrf) >= max((s for pid, s in scores.items() if pid not in got), default=0.0)
    # the scores are relevance (issue 15.3): cosine similarities, falling in the order
    assert [p.score for p in result.passages] == sorted(
        (p.score for p in result.passages), reverse=True
    )
    assert all(-1.0 <= p.score <= 1.0 for p in result.passages)
    assert result.clues[0] == Clue(QUERY, "query", pipe.config.query_weight)


def test_k_larger_than_the_corpus_returns_everything_with_a_warning(embedder):
    pipe, _, _ = make(embedder)
    with pytest.warns(UserWarning, match="k=40 is more than the 16 passages"):
        result = pipe.retrieve(QUERY, 40)
    assert sorted(ids(result)) == sorted(f"doc-{i}#0" for i in range(16))


@pytest.mark.parametrize("k", [0, -1, True, 2.5, "3"])
def test_bad_k_is_refused(embedder, k):
    pipe, _, _ = make(embedder)
    with pytest.raises(InputError):
        pipe.retrieve(QUERY, k)


@pytest.mark.parametrize("query", ["", "   \n", None, 42])
def test_bad_queries_are_refused(embedder, query):
    pipe, memory, generator = make(embedder)
    with pytest.raises(InputError):
        pipe.retrieve(query, 3)
    with pytest.raises(InputError):
        pipe.answer(query)
    with pytest.raises(InputError):
        pipe.clues(query)
    assert memory.calls == [] and generator.calls == []


def test_nothing_memorized_is_a_clear_error(embedder):
    pipe, _, _ = make(embedder, memorize=False)
    with pytest.raises(NoMemoryError, match="memorize"):
        pipe.retrieve(QUERY, 3)


async def test_aretrieve_matches_retrieve(embedder):
    pipe, _, _ = make(embedder)
    sync = pipe.retrieve(QUERY, 4)
    result = await pipe.aretrieve(QUERY, 4)
    assert result.clues == sync.clues
    assert ids(result) == ids(sync)
    assert [p.score for p in result.passages] == pytest.approx([p.score for p in sync.passages])
    assert [p.found_by for p in result.passages] == [p.found_by for p in sync.passages]


# -- tasks ----------------------------------------------------------------------------------


def test_memorag_task_answers_over_the_clue_retrieved_passages(embedder):
    pipe, _, generator = make(embedder)
    answer = pipe.answer(QUERY, k=3, max_new_tokens=50)
    assert isinstance(answer, Answer) and answer.task_type == "memorag"
    assert answer.text == REPLY and str(answer) == REPLY
    assert EVIDENCE in [p.passage.id for p in answer.passages]
    assert "doc-7" in answer.sources
    assert {c.kind for c in answer.clues} == {"query", "span", "surrogate"}
    assert set(answer.timings) >= {"clues", "search", "fusion", "generation"}
    (call,) = generator.calls
    assert QUERY in call.prompt and CORPUS[7] in call.prompt
    assert call.max_new_tokens == 50


def test_qa_task_answers_from_memory_alone(embedder):
    pipe, memory, generator = make(embedder, {DRAFT: "On Wick Lane."})
    answer = pipe.answer(QUERY, task_type="qa", max_new_tokens=20)
    assert answer.text == "On Wick Lane." and answer.task_type == "qa"
    assert answer.passages == () and answer.clues == ()
    (call,) = memory.calls
    assert DRAFT in call.prompt and QUERY in call.prompt and call.max_new_tokens == 20
    assert generator.calls == []


def test_summarize_task_retrieves_by_the_memorys_key_points(embedder):
    points = "1. The Gull carries timber and salt.\n2. Halloran lives above a bakery."
    pipe, memory, generator = make(embedder, {KEY_POINTS: points}, reply="A harbour story.")
    answer = pipe.answer(task_type="summarize", k=2)  # no query needed
    assert answer.text == "A harbour story." and answer.task_type == "summarize"
    # with no query, the placeholder request is not searched: only the memory's points are
    assert [c.kind for c in answer.clues] == ["span", "span"]
    assert [c.text for c in answer.clues] == [
        "The Gull carries timber and salt.",
        "Halloran lives above a bakery.",
    ]
    assert len(answer.passages) == 5  # summaries read at least 5 passages
    assert "doc-10#0" in {p.passage.id for p in answer.passages}
    assert [c.prompt for c in memory.calls] == [pipe.prompts.key_points]
    (call,) = generator.calls
    assert call.prompt.startswith("Passages:\n[1] ") and "Summarize" in call.prompt


def test_summarize_keeps_each_key_points_best_passage(embedder):
    points = "1. The Gull carries timber and salt.\n2. Halloran lives above a bakery."
    pipe, _, _ = make(embedder, {KEY_POINTS: points})
    answer = pipe.answer(task_type="summarize", k=2)
    best = {pipe.index.search(c.text, 1)[0].passage.id for c in answer.clues if c.kind == "span"}
    assert best == {"doc-10#0", EVIDENCE}
    assert best <= {p.passage.id for p in answer.passages}


def test_personalize_task_recommends_from_inferred_preferences(embedder):
    likes = "Stories about the sea and ships.\nOld crafts such as clock repair."
    pipe, memory, generator = make(embedder, {PREFERENCES: likes}, reply="Read about the Gull.")
    answer = pipe.answer("What should I read next?", task_type="personalize", k=3)
    assert answer.text == "Read about the Gull." and answer.task_type == "personalize"
    assert len(answer.passages) == 3
    assert any("span" in kinds(p) for p in answer.passages)  # found by an inferred preference
    assert [c.prompt for c in memory.calls] == [pipe.prompts.preferences]
    (call,) = generator.calls
    assert "- Stories about the sea and ships." in call.prompt
    assert "- Old crafts such as clock repair." in call.prompt
    assert "What should I read next?" in call.prompt


HISTORY = [
    ChatTurn("user", "Tell me about Halloran, the ship's doctor."),
    ChatTurn("assistant", "He joined the crew of the Gull in 1861."),
]
FOLLOW_UP = "Did he live above a bakery?"
RESOLVED = "Did Halloran live above a bakery?"


def test_dialogue_task_resolves_the_follow_up_before_retrieval(embedder):
    rules = {
        FOLLOWUP: RESOLVED,
        (SPAN, RESOLVED): SPAN_REPLY,
        (SURROGATE, RESOLVED): SURROGATE_REPLY,
    }
    pipe, memory, generator = make(embedder, rules, reply="Yes, on Wick Lane.")
    answer = pipe.answer(FOLLOW_UP, task_type="dialogue", history=HISTORY, k=3)
    assert answer.text == "Yes, on Wick Lane." and answer.task_type == "dialogue"
    rewrite, span, surrogate = memory.calls
    assert FOLLOWUP in rewrite.prompt and FOLLOW_UP in rewrite.prompt
    assert "User: Tell me about Halloran, the ship's doctor." in rewrite.prompt
    assert RESOLVED in span.prompt and RESOLVED in surrogate.prompt  # clues for the standalone
    assert Clue(RESOLVED, "history", pipe.config.query_weight) in answer.clues
    assert answer.clues[0] == Clue(FOLLOW_UP, "query", pipe.config.query_weight)
    assert EVIDENCE in [p.passage.id for p in answer.passages]
    (call,) = generator.calls
    assert call.history == tuple(HISTORY) and FOLLOW_UP in call.prompt


def test_dialogue_falls_back_to_history_words_when_the_rewrite_is_unusable(embedder):
    pipe, _, _ = make(embedder, {FOLLOWUP: "Sure!", **RULES})
    result = pipe.retrieve(FOLLOW_UP, 3, history=HISTORY)
    history_clues = [c for c in result.clues if c.kind == "history"]
    assert len(history_clues) == 1
    assert history_clues[0].text.startswith(FOLLOW_UP) and "Halloran" in history_clues[0].text


def test_dialogue_without_history_is_refused(embedder):
    pipe, _, _ = make(embedder)
    with pytest.raises(InputError, match="history"):
        pipe.answer(FOLLOW_UP, task_type="dialogue")


@pytest.mark.parametrize("task", ["rag", "", "MEMORAG", "chat"])
def test_unknown_task_type_is_refused(embedder, task):
    pipe, memory, _ = make(embedder)
    with pytest.raises(InputError, match="unknown task_type"):
        pipe.answer(QUERY, task_type=task)
    with pytest.raises(InputError, match="unknown task_type"):
        pipe(QUERY, task_type=task)
    assert memory.calls == []


def test_upstream_style_call_memorizes_the_context_once_and_returns_a_str(embedder):
    pipe, memory, generator = make(embedder, memorize=False)
    out = pipe(query=QUERY, context=CORPUS, task_type="memorag", max_new_tokens=30)
    assert out == REPLY and type(out) is str
    assert memory.memorize_calls == 1 and len(pipe.index) == len(CORPUS)
    assert pipe(QUERY, CORPUS) == REPLY and memory.memorize_calls == 1  # kept, not re-read
    pipe(QUERY, CORPUS[:4], reset_each_call=True)
    assert memory.memorize_calls == 2 and len(pipe.index) == 4
    assert generator.calls[0].max_new_tokens == 30


def test_use_memory_answer_adds_the_draft_to_the_context(embedder):
    pipe, memory, generator = make(embedder, {DRAFT: "Wick Lane", **RULES})
    pipe.answer(QUERY, use_memory_answer=True)
    assert "[memory] The answer might be: Wick Lane" in generator.calls[-1].prompt
    assert len(memory.calls_with(DRAFT)) == 1
    pipe.answer(QUERY)
    assert "[memory]" not in generator.calls[-1].prompt
    assert len(memory.calls_with(DRAFT)) == 1


def test_prompt_template_replaces_the_answer_prompt(embedder):
    pipe, _, generator = make(embedder)
    pipe.answer(QUERY, prompt_template="Q: {input}\nDocs:\n{context}\nA:", k=2)
    prompt = generator.calls[-1].prompt
    assert prompt.startswith(f"Q: {QUERY}\nDocs:\n[1] ") and prompt.endswith("\nA:")
    assert "[2] " in prompt and "[3] " not in prompt
    assert pipe(QUERY, prompt_template="{context} ||| {input}") == REPLY
    assert generator.calls[-1].prompt.endswith(f"||| {QUERY}")
    with pytest.raises(InputError, match=r"\{input\} and \{context\}"):
        pipe.answer(QUERY, prompt_template="only {input}")


# -- chat -----------------------------------------------------------------------------------

MESSAGES = [*HISTORY, ChatTurn("user", "Where does he live?")]


def test_chat_passes_the_history_to_the_memory(embedder):
    pipe, memory, _ = make(embedder, {"Where does he live?": "Above the bakery."})
    generation = pipe.chat(MESSAGES, max_new_tokens=10, stop=["\n"])
    assert generation.text == "Above the bakery."
    (call,) = memory.calls
    assert call.prompt == "Where does he live?" and call.history == tuple(HISTORY)
    assert call.max_new_tokens == 10 and call.stop == ("\n",)
    with pytest.raises(InputError, match="empty"):
        pipe.chat([])


def test_stream_chat_passes_the_history_and_streams(embedder):
    pipe, memory, _ = make(embedder, {"Where does he live?": "Above the bakery on Wick Lane."})
    pieces = list(pipe.stream_chat(MESSAGES))
    assert len(pieces) > 1 and "".join(pieces) == "Above the bakery on Wick Lane."
    assert memory.calls[-1].history == tuple(HISTORY)


async def test_astream_chat_passes_the_history_and_streams(embedder):
    pipe, memory, _ = make(embedder, {"Where does he live?": "Above the bakery on Wick Lane."})
    pieces = [piece async for piece in pipe.astream_chat(MESSAGES, max_new_tokens=3)]
    assert "".join(pieces) == "Above the bakery"
    assert memory.calls[-1].history == tuple(HISTORY)
    assert memory.calls[-1].prompt == "Where does he live?"


# -- add and persistence --------------------------------------------------------------------

NEW_DOCS = [
    "The bakery on Wick Lane sells rye bread and seed cakes.",
    "Halloran's neighbour is a retired harpooner called Ambrose Pike.",
]


def test_add_makes_new_documents_retrievable_and_keeps_the_old(embedder):
    pipe, memory, _ = make(embedder)
    pipe.add(NEW_DOCS)
    assert [d["doc_id"] for d in memory.documents] == [f"doc-{i}" for i in range(18)]
    assert memory.memorize_calls == 1  # nothing re-read
    assert len(pipe.index) == 18
    assert ids(pipe.retrieve("Who is the neighbour of Halloran?", 1)) == ["doc-17#0"]
    assert EVIDENCE in ids(pipe.retrieve(QUERY, 3))
    pipe.add(Document("A third addition about ropes and knots.", doc_id="ropes"))
    assert memory.documents[-1]["doc_id"] == "ropes" and pipe.index.get("ropes#0") is not None
    with pytest.raises(InputError, match="already"):
        pipe.add(Document("again", doc_id="ropes"))


def test_save_and_from_dir_restore_identical_retrieval(embedder, tmp_path):
    pipe, memory, _ = make(embedder)
    pipe.save(tmp_path / "mem")
    before = pipe.retrieve(QUERY, 4)

    info = read_save_info(tmp_path / "mem")
    assert info["kind"] == "memorag" and info["pipeline"]["documents"] == [
        f"doc-{i}" for i in range(16)
    ]
    assert info["index"]["count"] == 16 and info["memory"]["backend"] == "scripted"

    restored = ScriptedMemory(RULES)
    pipe2 = MemoRAG.from_dir(
        tmp_path / "mem", memory=restored, embedder=embedder, generator=ScriptedGenerator(REPLY)
    )
    after = pipe2.retrieve(QUERY, 4)
    assert after.clues == before.clues and ids(after) == ids(before)
    assert [p.score for p in after.passages] == pytest.approx([p.score for p in before.passages])
    assert restored.texts == CORPUS and restored.lineage == memory.lineage
    assert pipe2.answer(QUERY).text == REPLY

    pipe3 = MemoRAG(memory=ScriptedMemory(RULES), embedder=embedder).load(tmp_path / "mem")
    assert ids(pipe3.retrieve(QUERY, 4)) == ids(before)


def test_a_save_after_add_replaces_the_snapshot_and_keeps_ids(embedder, tmp_path):
    pipe, _, _ = make(embedder)
    pipe.save(tmp_path / "mem")
    pipe.add(NEW_DOCS, save_dir=tmp_path / "mem")  # same memory: no overwrite needed
    pipe2 = MemoRAG.from_dir(tmp_path / "mem", memory=ScriptedMemory(RULES), embedder=embedder)
    assert len(pipe2.index) == 18 and pipe2.memory.documents[-1]["doc_id"] == "doc-17"
    pipe2.add(["One more line about the quay at night."])
    assert pipe2.memory.documents[-1]["doc_id"] == "doc-18"
    assert len([p for p in (tmp_path / "mem").iterdir() if p.name.startswith("snap-")]) == 1


def test_a_save_dir_holding_another_memory_is_refused_unless_overwrite(embedder, tmp_path):
    first, _, _ = make(embedder)
    first.save(tmp_path / "mem")
    other, _, _ = make(embedder, memorize=False)
    other.memorize(CORPUS[:5])
    with pytest.raises(InputError, match=r"another memory.*overwrite"):
        other.save(tmp_path / "mem")
    with pytest.raises(InputError, match="another memory"):
        other.memorize(CORPUS[:3], save_dir=tmp_path / "mem")
    assert read_save_info(tmp_path / "mem")["index"]["count"] == 16  # untouched
    other.save(tmp_path / "mem", overwrite=True)
    assert read_save_info(tmp_path / "mem")["index"]["count"] == 3

    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty"):
        first.save(tmp_path / "notes")


def _snapshot(save_dir: Path) -> Path:
    return save_dir / (save_dir / "CURRENT").read_text().strip()


def test_index_files_from_another_save_are_refused(embedder, tmp_path):
    a, _, _ = make(embedder)
    a.save(tmp_path / "a")
    b, _, _ = make(embedder, memorize=False)
    b.memorize(CORPUS[:5] + NEW_DOCS)
    b.save(tmp_path / "b")
    for name in ("index.safetensors", "chunks.json"):
        shutil.copy(_snapshot(tmp_path / "b") / name, _snapshot(tmp_path / "a") / name)
    with pytest.raises(PersistenceError, match="manifest"):
        MemoRAG.from_dir(tmp_path / "a", memory=ScriptedMemory(RULES), embedder=embedder)


def test_a_resigned_manifest_cannot_pair_a_memory_with_another_index(embedder, tmp_path):
    """Even with the file records rewritten, an index of other documents is refused."""
    a, _, _ = make(embedder)
    a.save(tmp_path / "a")
    b, _, _ = make(embedder, memorize=False)
    b.memorize([Document(t, doc_id=f"other-{i}") for i, t in enumerate(NEW_DOCS)])
    b.save(tmp_path / "b")
    snap_a, snap_b = _snapshot(tmp_path / "a"), _snapshot(tmp_path / "b")
    manifest = json.loads((snap_a / "manifest.json").read_text())
    for name in ("index.safetensors", "chunks.json"):
        shutil.copy(snap_b / name, snap_a / name)
        manifest["files"][name] = file_record(snap_a / name)
    manifest["index"] = json.loads((snap_b / "manifest.json").read_text())["index"]
    (snap_a / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PersistenceError, match="different documents"):
        MemoRAG.from_dir(tmp_path / "a", memory=ScriptedMemory(RULES), embedder=embedder)


def test_from_dir_of_a_missing_or_empty_dir_is_a_clear_error(embedder, tmp_path):
    with pytest.raises(PersistenceError, match="does not exist"):
        MemoRAG.from_dir(tmp_path / "nope", memory=ScriptedMemory(), embedder=embedder)
    (tmp_path / "empty").mkdir()
    with pytest.raises(PersistenceError, match="no saved memory"):
        MemoRAG.from_dir(tmp_path / "empty", memory=ScriptedMemory(), embedder=embedder)


# -- a real (tiny) memory model -------------------------------------------------------------


def _tiny_memory(model, tokenizer) -> CompressedKVMemory:
    return CompressedKVMemory(
        model,
        tokenizer,
        beacon_ratio=4,
        window=128,
        reserve_tokens=64,
        show_progress=False,
        compress="always",
        scorer="key_norm",
    )


def test_end_to_end_on_a_tiny_compressed_kv_memory(embedder, llama, tokenizer, tmp_path):
    pipe = MemoRAG(memory=_tiny_memory(llama, tokenizer), embedder=embedder)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no k-over-corpus or other warnings on the happy path
        pipe.memorize(CORPUS, save_dir=tmp_path / "mem")
    stats = pipe.memory.stats()
    assert stats.backend == "compressed_kv" and stats.beacon_ratio == 4
    assert stats.documents == 16 and stats.kv_entries < stats.tokens_read
    assert pipe.stats()["chunks"] == 16

    result = pipe.retrieve(QUERY, 3)
    assert len(ids(result)) == 3 and len(set(ids(result))) == 3
    assert result.clues[0].kind == "query"
    assert {c.kind for c in result.clues} <= {"query", "span", "surrogate"}

    answer = pipe.answer(QUERY, k=2, max_new_tokens=8)
    assert isinstance(answer.text, str) and len(answer.passages) == 2
    assert answer.timings["generation"] > 0

    pipe2 = MemoRAG.from_dir(
        tmp_path / "mem", memory=_tiny_memory(llama, tokenizer), embedder=embedder
    )
    again = pipe2.retrieve(QUERY, 3)
    assert again.clues == result.clues and ids(again) == ids(result)
    assert pipe2.memory.stats().kv_entries == stats.kv_entries
    assert pipe2.answer(QUERY, k=2, max_new_tokens=8).text == answer.text


def test_stream_answer_yields_pieces_then_the_answer_with_sources(embedder):
    pipe, _, _ = make(embedder, {}, reply="The Gull sails at dawn.")
    items = list(pipe.stream_answer("When does the Gull sail?", k=2))
    *pieces, final = items
    assert pieces and all(isinstance(p, str) for p in pieces)
    assert "".join(pieces).strip() == final.text == "The Gull sails at dawn."
    assert len(final.passages) == 2 and final.task_type == "memorag"
    qa_pieces = list(pipe.stream_answer("When does the Gull sail?", task_type="qa"))
    assert qa_pieces[-1].task_type == "qa"
    with pytest.raises(InputError):
        list(pipe.stream_answer("q", task_type="nope"))


# -- anchoring ------------------------------------------------------------------------------


def test_clues_are_searched_anchored_to_the_query_by_default(embedder):
    pipe, _, _ = make(embedder)
    assert pipe.config.anchor_clues
    raw = pipe.clues(QUERY)  # the memory's own lines, unchanged
    result = pipe.retrieve(QUERY, 3)
    searched = [c for c in result.clues if c.kind in ("span", "surrogate")]
    assert searched and all(c.text.startswith(QUERY + " ") for c in searched)
    for key in searched:  # each key adds only words its clue had and the query lacked
        added = key.text[len(QUERY) :].split()
        assert len(added) >= 2
        words = [set(c.text.replace("?", " ").replace(".", " ").split()) for c in raw]
        assert any(set(added) <= w for w in words)
    unanchored = make(embedder, anchor_clues=False)[0].retrieve(QUERY, 3)
    assert [c.text for c in unanchored.clues[1:]] == [c.text for c in raw]


def test_a_followup_is_anchored_to_its_standalone_question(embedder):
    rules = {FOLLOWUP: RESOLVED, (SPAN, RESOLVED): SPAN_REPLY, (SURROGATE, RESOLVED): ""}
    pipe, _, _ = make(embedder, rules)
    result = pipe.retrieve(FOLLOW_UP, 3, history=HISTORY)
    spans = [c for c in result.clues if c.kind == "span"]
    assert spans and all(c.text.startswith(RESOLVED + " ") for c in spans)
