"""Benchmark harness: metrics by hand, dataset loading on the shared dev sets, BM25 and
the corpus-blind query writers."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `benchmarks` is not an installed package; bare `pytest` needs it
    sys.path.insert(0, str(REPO))

from benchmarks.baselines import BM25Backend, hyde_queries, multi_query, parse_lines  # noqa: E402
from benchmarks.datasets import (  # noqa: E402
    BenchSet,
    GoldItem,
    detect_kind,
    load_set,
    pooled_documents,
    sample_indices,
    tokens_est,
    turn_spans,
    turns_in_span,
)
from benchmarks.metrics import (  # noqa: E402
    all_hit_at_k,
    bootstrap_diff_ci,
    contains_answer,
    covers,
    evidence_hits,
    exact_match,
    list_item_f1,
    mrr,
    normalize_answer,
    recall_at_k,
    rouge_l,
    rouge_n,
    spans_of,
    split_list_items,
    token_f1,
)
from shared_core.types import ChatTurn, Chunk, Generation, SearchBackend  # noqa: E402

DATA = REPO.parent / "shared" / "data"  # CI: ../shared/data beside the clone
EXAMPLES = REPO / "examples" / "data"


def _data(name: str) -> Path:
    path = DATA / name
    if not (path / "questions.jsonl").is_file():
        pytest.skip(f"shared dev set {path} is absent (it lives at ../shared/data beside the repo)")
    return path


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


# --------------------------------------------------------------------------- answer metrics


def test_normalize_and_exact_match() -> None:
    assert normalize_answer("  The  Anglican Communion! ") == "anglican communion"
    assert normalize_answer("“Yes,” she said.") == "yes she said"
    assert exact_match("the Anglican communion.", ["Anglican Communion"]) == 1.0
    assert exact_match("Anglican", ["Anglican Communion"]) == 0.0
    assert exact_match("NO", ["yes", "no"]) == 1.0


def test_token_f1_by_hand() -> None:
    # pred {cat, sat} vs ref {cat, sat, down}: P = 1, R = 2/3, F1 = 0.8
    assert token_f1("The cat sat", ["a cat sat down"]) == pytest.approx(0.8)
    assert token_f1("The cat sat", ["dog", "cat sat"]) == pytest.approx(1.0)  # max over answers
    assert token_f1("", ["cat"]) == 0.0
    assert token_f1("cat", []) == 0.0


def test_contains_answer_whole_words() -> None:
    assert contains_answer("It happened in 1940, I think.", ["1940"]) == 1.0
    assert contains_answer("It happened in 1940.", ["194"]) == 0.0
    assert contains_answer("They were called Victoria Falls.", ["victoria falls"]) == 1.0
    assert contains_answer("anything", ["the"]) == 0.0  # an answer that normalises to nothing


def test_rouge_by_hand() -> None:
    pred, ref = "the cat sat on the mat", "The cat is on the mat."
    assert rouge_n(pred, ref, 1) == pytest.approx(5 / 6)  # 5 of 6 unigrams shared (clipped)
    assert rouge_n(pred, ref, 2) == pytest.approx(3 / 5)  # the cat, on the, the mat
    assert rouge_l(pred, ref) == pytest.approx(5 / 6)  # LCS: the cat on the mat
    assert rouge_n("a b", "c d", 1) == 0.0
    assert rouge_l("", "abc") == 0.0
    assert rouge_n("x", "x", 2) == 0.0  # no bigram on either side
    # precision 1, recall 2/4 -> F = 2/3
    assert rouge_l("a c", "a b c d") == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        rouge_n("a", "a", 0)


def test_list_item_f1() -> None:
    gold = ["a coral necklace", "a carved walnut box", "a book of psalms", "a brass candlestick"]
    pred = "The gifts were a coral necklace, a carved walnut box and a book of psalms."
    assert split_list_items(pred) == [
        "The gifts were a coral necklace",
        "a carved walnut box",
        "a book of psalms",
    ]
    # recall 3/4, precision 3/3
    assert list_item_f1(pred, gold) == pytest.approx(2 * 0.75 / 1.75)
    bullets = "Here are the gifts:\n1. A coral necklace\n2. A silver spoon\n- a brass candlestick"
    # recall 2/4, precision 2/3
    assert list_item_f1(bullets, gold) == pytest.approx(2 * (1 / 2) * (2 / 3) / (1 / 2 + 2 / 3))
    assert list_item_f1(gold, gold) == 1.0
    assert list_item_f1("I do not know.", gold) == 0.0
    assert list_item_f1("", gold) == 0.0


# --------------------------------------------------------------------------- evidence metrics


def test_coverage_rules() -> None:
    needle = GoldItem("book", 100, 150, "needle")
    assert covers(("book", 90, 160), needle)
    assert covers(("book", 100, 150), needle)
    assert not covers(("book", 101, 400), needle)  # one character short: a needle must be whole
    assert not covers(("other", 0, 1000), needle)
    para = GoldItem("p", 0, 100)
    assert covers(("p", 0, 100), para)
    assert covers(("p", 50, 400), para)  # holds half of the paragraph
    assert not covers(("p", 51, 400), para)
    long_gold = GoldItem("m", 0, 10_000, "turns")
    assert covers(("m", 9_800, 10_200), long_gold)  # the chunk lies half inside the gold
    assert not covers(("m", 9_801, 10_200), long_gold)
    assert not covers(("m", 10_000, 10_500), long_gold)  # touching is not overlapping


def test_evidence_hits_and_rank_metrics() -> None:
    gold = [GoldItem("a", 0, 100), GoldItem("b", 0, 100), GoldItem("c", 0, 100)]
    retrieved = [("x", 0, 50), ("b", 0, 100), ("a", 10, 90), ("b", 0, 100)]
    ranks = evidence_hits(retrieved, gold)
    assert ranks == [3, 2, 0]  # 1-based; 0 = never retrieved
    assert recall_at_k(ranks, 1) == 0.0
    assert recall_at_k(ranks, 2) == pytest.approx(1 / 3)
    assert recall_at_k(ranks, 10) == pytest.approx(2 / 3)
    assert all_hit_at_k([1, 3], 3) == 1.0
    assert all_hit_at_k(ranks, 10) == 0.0
    assert mrr(ranks) == pytest.approx(0.5)
    assert mrr([0, 0]) == 0.0
    for fn in (lambda r: recall_at_k(r, 5), lambda r: all_hit_at_k(r, 5), mrr):
        assert math.isnan(fn([]))


def test_bootstrap_is_paired_and_deterministic() -> None:
    a = [0.1 * (i % 7) for i in range(60)]
    b = [0.1 * (i % 5) for i in range(60)]
    first = bootstrap_diff_ci(a, b, n_boot=500, seed=3)
    assert first == bootstrap_diff_ci(a, b, n_boot=500, seed=3)
    assert first != bootstrap_diff_ci(a, b, n_boot=500, seed=4)
    mean, lo, hi = first
    assert mean == pytest.approx(sum(a) / 60 - sum(b) / 60)
    assert lo <= mean <= hi
    # a constant paired difference has no spread, however noisy the scores themselves are
    assert bootstrap_diff_ci([x + 1.0 for x in b], b, n_boot=200) == pytest.approx((1, 1, 1))
    with pytest.raises(ValueError):
        bootstrap_diff_ci([1.0], [1.0, 2.0])
    with pytest.raises(ValueError):
        bootstrap_diff_ci([math.nan], [1.0])


# --------------------------------------------------------------------------- datasets


@pytest.fixture(scope="module")
def hotpot() -> BenchSet:
    return load_set(_data("hotpotqa"))


@pytest.fixture(scope="module")
def qmsum() -> BenchSet:
    return load_set(_data("qmsum"))


@pytest.fixture(scope="module")
def longbook() -> BenchSet:
    return load_set(_data("longbook_needles"))


def test_paragraph_sets_load(hotpot: BenchSet) -> None:
    musique = load_set(_data("musique"))
    for bench, n_docs, n_q, width in ((hotpot, 994, 100, 10), (musique, 945, 50, 20)):
        assert bench.kind == "paragraph_qa"
        assert (len(bench.documents), len(bench.questions)) == (n_docs, n_q)
        for q in bench.questions:
            assert q.scope is not None and len(q.scope) <= width  # a few HotpotQA rows have < 10
            assert q.gold and {g.doc_id for g in q.gold} <= set(q.scope)
            for g in q.gold:
                doc = bench.document(g.doc_id)
                assert (g.start, g.end) == (0, len(doc.text))  # the whole paragraph
                assert doc.text.startswith(doc.metadata["title"] + "\n")
            assert [d.doc_id for d in bench.scoped_documents(q)] == q.scope
    assert hotpot.name == "hotpotqa" and musique.name == "musique"
    assert all(len(q.metadata["decomposition"]) == len(q.gold) for q in musique.questions)


def test_hotpot_supporting_sentences_slice_back(hotpot: BenchSet) -> None:
    corpus = {r["doc_id"]: r for r in _jsonl(_data("hotpotqa") / "corpus.jsonl")}
    for q in hotpot.questions:
        for item in q.metadata["supporting_sentences"]:
            doc_id, index = item.label.rsplit("#", 1)
            text = hotpot.document(item.doc_id).text[item.start : item.end]
            assert text == corpus[doc_id]["sentences"][int(index)]


def test_needle_gold_slices_back(longbook: BenchSet) -> None:
    assert longbook.kind == "long_document" and len(longbook.documents) == 1
    assert len(longbook.questions) == 28
    needles = {
        n["needle_id"]: n["text"] for n in _jsonl(_data("longbook_needles") / "needles.jsonl")
    }
    text = longbook.documents[0].text
    for q in longbook.questions:
        assert q.gold and q.scope == [longbook.documents[0].doc_id]
        for g in q.gold:
            assert g.kind == "needle" and text[g.start : g.end] == needles[g.label]


def test_qmsum_turn_mapping(qmsum: BenchSet) -> None:
    raw = {r["doc_id"]: r for r in _jsonl(_data("qmsum") / "documents.jsonl")}
    assert qmsum.kind == "meeting" and len(qmsum.documents) == 35 and len(qmsum.questions) == 272
    for doc in qmsum.documents:
        turns, spans = raw[doc.doc_id]["turns"], turn_spans(doc)
        assert len(spans) == len(turns) == len(doc.text.split("\n"))
        for i in (0, len(turns) // 2, len(turns) - 1):
            line = doc.text[spans[i][0] : spans[i][1]]
            speaker, content = turns[i]["speaker"], turns[i]["content"]
            assert line == (f"{speaker}: {content}" if content else f"{speaker}:")
    general = [q for q in qmsum.questions if q.type == "general"]
    assert len(general) == 35 and all(not q.gold for q in general)
    for q in qmsum.questions:
        if q.type != "specific":
            continue
        doc = qmsum.document(q.scope[0])
        spans = turn_spans(doc)
        assert len(q.gold) == len(q.metadata["turn_spans"]) > 0
        for g, (a, b) in zip(q.gold, q.metadata["turn_spans"], strict=True):
            assert (g.start, g.end) == (spans[a][0], spans[b][1])  # inclusive turn range
            assert turns_in_span(doc, g.start, g.end) == list(range(a, b + 1))
    assert turns_in_span(qmsum.documents[0], 0, 1) == [0]


def test_sampling_is_deterministic() -> None:
    assert sample_indices(10, None) == list(range(10))
    assert sample_indices(10, 4, seed=1) == sample_indices(10, 4, seed=1)
    assert sample_indices(10, 4, seed=1) == sample_indices(10, 8, seed=1)[:4]  # a prefix
    assert sample_indices(100, 10, seed=1) != sample_indices(100, 10, seed=2)
    assert sorted(sample_indices(10, 99)) == list(range(10))
    with pytest.raises(ValueError):
        sample_indices(10, -1)
    path = _data("musique")
    ids = [q.id for q in load_set(path, limit=7, seed=5).questions]
    assert ids == [q.id for q in load_set(path, limit=7, seed=5).questions]
    assert ids[:3] == [q.id for q in load_set(path, limit=3, seed=5).questions]
    assert len(set(ids)) == 7


def test_pooled_corpus_maps_gold(hotpot: BenchSet) -> None:
    pooled = pooled_documents(hotpot)
    text = pooled.document.text
    assert len(pooled.documents) == 1
    assert len(text) == sum(len(d.text) for d in hotpot.documents) + 2 * (len(hotpot.documents) - 1)
    for q in hotpot.questions[:20]:
        for g, pg in zip(q.gold, pooled.to_pooled(q.gold), strict=True):
            assert text[pg.start : pg.end] == hotpot.document(g.doc_id).text[g.start : g.end]
            assert pooled.to_source(pg.start, pg.end) == [(g.doc_id, g.start, g.end)]
    first, second = hotpot.documents[0], hotpot.documents[1]
    assert pooled.to_source(len(first.text) - 3, len(first.text) + 5) == [
        (first.doc_id, len(first.text) - 3, len(first.text)),
        (second.doc_id, 0, 3),
    ]
    assert tokens_est(text) > 100_000


def _write_jsonl(path: Path, rows: Sequence[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def test_any_folder_with_the_layout_loads(tmp_path: Path) -> None:
    para, book, meet = tmp_path / "mini_qa", tmp_path / "mini_book", tmp_path / "mini_meet"
    for d in (para, book, meet):
        d.mkdir()
    _write_jsonl(para / "corpus.jsonl", [{"doc_id": "A", "title": "A", "text": "Alpha."}])
    q = {"id": "q1", "question": "?", "answers": ["x"], "type": "bridge"}
    _write_jsonl(para / "questions.jsonl", [{**q, "context_doc_ids": ["A"], "evidence": {}}])
    text = "Once upon a time. The key is 42."
    _write_jsonl(book / "documents.jsonl", [{"doc_id": "B", "text": text}])
    ev = {"needle_id": "n0", "text": "The key is 42.", "char_start": 18, "char_end": 32}
    _write_jsonl(book / "questions.jsonl", [{**q, "doc_id": "B", "evidence": [ev]}])
    turns = [{"speaker": "Ann", "content": "Hi ."}, {"speaker": "Bo", "content": ""}]
    _write_jsonl(meet / "documents.jsonl", [{"doc_id": "M", "turns": turns}])
    spans = {"turn_spans": [[0, 1]]}
    _write_jsonl(meet / "questions.jsonl", [{**q, "doc_id": "M", "evidence": spans}])

    assert [detect_kind(d) for d in (para, book, meet)] == [
        "paragraph_qa",
        "long_document",
        "meeting",
    ]
    assert load_set(para).documents[0].text == "A\nAlpha."
    loaded = load_set(book)
    assert loaded.name == "mini_book" and loaded.questions[0].gold == [
        GoldItem("B", 18, 32, "needle", "n0")
    ]
    meeting = load_set(meet)
    assert meeting.documents[0].text == "Ann: Hi .\nBo:"
    assert turn_spans(meeting.documents[0]) == ((0, 9), (10, 13))
    assert "turn_spans" not in meeting.documents[0].metadata  # chunkers copy doc metadata
    assert meeting.questions[0].gold == [GoldItem("M", 0, 13, "turns", "turns 0-1")]

    _write_jsonl(
        book / "questions.jsonl", [{**q, "doc_id": "B", "evidence": [{**ev, "char_end": 31}]}]
    )
    with pytest.raises(ValueError, match="does not match"):
        load_set(book)
    with pytest.raises(FileNotFoundError):
        detect_kind(tmp_path)


# --------------------------------------------------------------------------- baselines


def _chunks() -> list[Chunk]:
    text = (EXAMPLES / "frankenstein.txt").read_text(encoding="utf-8")
    chunks, pos = [], 0
    for i, para in enumerate(text.split("\n\n")):
        if para.strip():
            chunks.append(Chunk(f"c{i}", "frankenstein", para, pos, pos + len(para), {"n": i}))
        pos += len(para) + 2
    planted = (
        "The lighthouse keeper Orla Venn kept a brass telescope engraved with the number 7731."
    )
    chunks.insert(len(chunks) // 2, Chunk("planted", "extra", planted, 0, len(planted)))
    return chunks


def test_bm25_ranks_planted_passage_first() -> None:
    backend = BM25Backend(_chunks())
    assert isinstance(backend, SearchBackend)
    hits = backend.search("What number was engraved on Orla Venn's telescope?", 5)
    assert [h.rank for h in hits] == [0, 1, 2, 3, 4]
    assert hits[0].passage.id == "planted"
    assert hits[0].score > hits[1].score
    assert all(hits[i].score >= hits[i + 1].score for i in range(4))
    meta = hits[1].passage.metadata
    assert set(meta) >= {"doc_id", "start", "end", "chunk_id", "n"}
    source = (EXAMPLES / "frankenstein.txt").read_text(encoding="utf-8")
    assert source[meta["start"] : meta["end"]] == hits[1].passage.text
    assert spans_of(hits[:1]) == [("extra", 0, len(hits[0].passage.text))]


def test_bm25_small_and_degenerate_corpora() -> None:
    two = [Chunk("a", "d", "red apples", 0, 10), Chunk("b", "d", "green pears", 11, 22)]
    hits = BM25Backend(two).search("pears", 10)
    assert [h.passage.id for h in hits] == ["b", "a"] and hits[0].score > 0  # k capped at 2
    ties = BM25Backend(two).search("nothing matches", 2)
    assert [h.passage.id for h in ties] == ["a", "b"]  # ties keep chunk order
    assert BM25Backend([]).search("x", 3) == []
    assert len(BM25Backend([Chunk("e", "d", "...", 0, 3)]).search("x", 3)) == 1
    with pytest.raises(ValueError):
        BM25Backend(two).search("pears", 0)


class _FakeGenerator:
    """A TextGenerator that answers every prompt with a fixed text and records prompts."""

    def __init__(self, text: str) -> None:
        self.text, self.prompts = text, []

    def generate(
        self,
        prompt: str,
        *,
        history: Sequence[ChatTurn] = (),
        max_new_tokens: int = 256,
        stop: Sequence[str] = (),
        temperature: float = 0.0,
    ) -> Generation:
        self.prompts.append((prompt, max_new_tokens))
        return Generation(self.text, len(prompt.split()), len(self.text.split()))

    def stream(self, prompt: str, **kwargs: object) -> Iterator[str]:
        yield self.generate(prompt).text


def test_corpus_blind_query_writers() -> None:
    gen = _FakeGenerator("  Victoria Falls lies on the Zambezi, between Zambia and Zimbabwe.\n")
    assert hyde_queries("Which waterfall?", gen, max_new_tokens=40) == [
        "Victoria Falls lies on the Zambezi, between Zambia and Zimbabwe."
    ]
    assert "Which waterfall?" in gen.prompts[0][0] and gen.prompts[0][1] == 40
    assert hyde_queries("q", _FakeGenerator("   ")) == []

    messy = (
        "Here are three rewrites:\n1. Which country is the Bubye River in?\n"
        '- "Waterfalls of Zimbabwe"\n\n2) which country is the bubye river in?\n'
        "What waterfall is in the Bubye River's country?\nQuery 4: extra line\n"
    )
    out = multi_query("What waterfall is in the Bubye River's country?", _FakeGenerator(messy))
    assert out == ["Which country is the Bubye River in?", "Waterfalls of Zimbabwe", "extra line"]
    assert len(multi_query("q", _FakeGenerator(messy), n=1)) == 1
    assert parse_lines("x" * 1000, 3) == ["x" * 300]
    with pytest.raises(ValueError):
        multi_query("q", _FakeGenerator(messy), n=0)


# --------------------------------------------------------------------------- demo data


def test_demo_extract_is_free_of_needles() -> None:
    text = (EXAMPLES / "frankenstein.txt").read_text(encoding="utf-8")
    assert text.startswith("Letter 1\n") and "\nChapter 4\n" in text and "Chapter 5" not in text
    assert 12_000 <= len(text.split()) <= 15_000
    needles = _jsonl(_data("longbook_needles") / "needles.jsonl")
    for n in needles:
        assert n["text"] not in text
        assert " ".join(n["text"].split()[-4:]) not in text


def test_demo_samples_are_self_contained() -> None:
    for name in ("hotpotqa_sample.jsonl", "musique_sample.jsonl"):
        rows = _jsonl(EXAMPLES / name)
        assert len(rows) == 3
        for row in rows:
            ids = [p["doc_id"] for p in row["paragraphs"]]
            assert ids == row["context_doc_ids"] and set(row["evidence"]["doc_ids"]) <= set(ids)
    history = _jsonl(EXAMPLES / "reading_history.jsonl")
    assert 35 <= len(history) <= 50
    assert all({"date", "title", "kind", "rating", "note"} <= set(r) for r in history)
