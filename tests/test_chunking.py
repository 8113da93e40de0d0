"""TokenChunker: exact offsets, full coverage, sentence packing, overlap, speed."""

from __future__ import annotations

import time
from itertools import pairwise

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared_core.errors import InputError
from shared_core.retrieval.chunking import TokenChunker, approx_token_count
from shared_core.types import Chunk, Document


def _doc(text: str, doc_id: str = "d", **metadata: object) -> Document:
    return Document(text=text, doc_id=doc_id, metadata=metadata)


def _check_invariants(docs: list[Document], chunks: list[Chunk]) -> None:
    by_doc: dict[str, list[Chunk]] = {}
    for chunk in chunks:
        by_doc.setdefault(chunk.doc_id, []).append(chunk)
    assert list(by_doc) == [d.doc_id for d in docs if d.text.strip()]
    for doc in docs:
        mine = by_doc.get(doc.doc_id, [])
        covered = bytearray(len(doc.text))
        for i, chunk in enumerate(mine):
            assert chunk.chunk_id == f"{doc.doc_id}#{i}"
            assert chunk.text == doc.text[chunk.start : chunk.end]
            assert chunk.text.strip(), "empty chunk"
            assert dict(chunk.metadata) == dict(doc.metadata)
            covered[chunk.start : chunk.end] = b"\x01" * (chunk.end - chunk.start)
        starts = [c.start for c in mine]
        ends = [c.end for c in mine]
        assert starts == sorted(starts) and ends == sorted(ends)
        missed = [i for i, ch in enumerate(doc.text) if not ch.isspace() and not covered[i]]
        assert not missed, f"uncovered characters at {missed[:5]}"


# ---------------------------------------------------------------------- basic rules


def test_short_document_is_one_chunk() -> None:
    doc = _doc("  Hello world. Bye now!  \n", source="x")
    chunks = TokenChunker().split([doc])
    assert [c.text for c in chunks] == ["Hello world. Bye now!"]
    assert chunks[0].metadata == {"source": "x"}
    assert chunks[0].metadata is not doc.metadata


def test_sentences_are_kept_whole() -> None:
    sentences = [f"Sentence number {i} talks about topic {i}." for i in range(40)]
    doc = _doc(" ".join(sentences))
    chunks = TokenChunker(chunk_tokens=30, overlap_tokens=0).split([doc])
    assert len(chunks) > 3
    for chunk in chunks:
        assert chunk.text.startswith("Sentence number ")
        assert chunk.text.endswith(".")
        assert approx_token_count(chunk.text) <= 30
    _check_invariants([doc], chunks)


def test_overlap_repeats_trailing_sentences() -> None:
    sentences = [f"Fact {i} is here." for i in range(30)]
    doc = _doc(" ".join(sentences))
    chunks = TokenChunker(chunk_tokens=24, overlap_tokens=8).split([doc])
    assert len(chunks) > 2
    for prev, nxt in pairwise(chunks):
        assert nxt.start < prev.end, "no overlap"
        assert nxt.start > prev.start, "no progress"
        last_sentence = prev.text.rsplit(". ", 1)[-1]
        assert nxt.text.startswith(last_sentence.rstrip("."))
    no_overlap = TokenChunker(chunk_tokens=24, overlap_tokens=0).split([doc])
    for prev, nxt in pairwise(no_overlap):
        assert nxt.start > prev.end - 1


def test_long_sentence_is_hard_split_at_whitespace() -> None:
    doc = _doc(" ".join(f"word{i}" for i in range(2000)))
    chunks = TokenChunker(chunk_tokens=50, overlap_tokens=0).split([doc])
    assert len(chunks) > 10
    for chunk in chunks:
        assert approx_token_count(chunk.text) <= 50
        assert chunk.text.split()[0].startswith("word")
        assert not chunk.text[0].isspace() and not chunk.text[-1].isspace()
    # every word survives intact in exactly one chunk
    assert " ".join(c.text for c in chunks).split() == doc.text.split()


def test_long_line_without_spaces_is_split_at_characters() -> None:
    doc = _doc("x" * 10_000)
    chunks = TokenChunker(chunk_tokens=20, overlap_tokens=5).split([doc])
    assert len(chunks) > 10
    assert "".join(c.text for c in chunks) == doc.text  # no overlap inside one sentence piece
    _check_invariants([doc], chunks)


def test_cjk_sentences() -> None:
    text = "今天天气很好。我们去公园散步！" * 50
    doc = _doc(text)
    chunks = TokenChunker(chunk_tokens=40, overlap_tokens=0).split([doc])
    assert len(chunks) > 5
    for chunk in chunks:
        assert chunk.text.endswith(("。", "！"))
    _check_invariants([doc], chunks)


def test_several_documents_and_empty_ones() -> None:
    docs = [_doc("A. B.", "a"), _doc("   \n\t ", "blank"), _doc("C!", "c", tag=1)]
    chunks = TokenChunker().split(docs)
    assert [(c.chunk_id, c.text) for c in chunks] == [("a#0", "A. B."), ("c#0", "C!")]
    assert chunks[1].metadata == {"tag": 1}


def test_lone_surrogates_and_controls_do_not_crash() -> None:
    doc = _doc("a\ud800b. \udfff\x00\x1b[0m \u2028next\u2029line\r\n\x0b\x0c end")
    chunks = TokenChunker(chunk_tokens=2, overlap_tokens=1).split([doc])
    _check_invariants([doc], chunks)


def test_abbreviations_and_decimals_do_not_break_packing() -> None:
    doc = _doc("Pi is 3.14 roughly.Next one... Done?! Yes.")
    chunks = TokenChunker(chunk_tokens=3, overlap_tokens=0).split([doc])
    _check_invariants([doc], chunks)
    assert any("3.14" in c.text for c in chunks)


def test_bad_settings_raise() -> None:
    with pytest.raises(InputError):
        TokenChunker(chunk_tokens=0)
    with pytest.raises(InputError):
        TokenChunker(chunk_tokens=10, overlap_tokens=10)
    with pytest.raises(InputError):
        TokenChunker(overlap_tokens=-1)
    with pytest.raises(InputError):
        TokenChunker().split([Document("text")])


def test_custom_counter_counts_each_sentence_once() -> None:
    calls: list[str] = []

    def count(text: str) -> int:
        calls.append(text)
        return len(text.split())

    sentences = [f"one two three {i}." for i in range(500)]
    doc = _doc(" ".join(sentences))
    chunks = TokenChunker(count, chunk_tokens=40, overlap_tokens=8).split([doc])
    assert len(calls) == 500
    assert max(len(c) for c in calls) < 30
    for chunk in chunks:
        assert len(chunk.text.split()) <= 40
    _check_invariants([doc], chunks)


def test_counter_returning_zero_still_progresses() -> None:
    doc = _doc("a. b. c. d. " * 20)
    chunks = TokenChunker(lambda _t: 0, chunk_tokens=4, overlap_tokens=1).split([doc])
    _check_invariants([doc], chunks)


def test_approx_token_count() -> None:
    assert approx_token_count("") == 0
    assert approx_token_count("one two three") == 4  # ceil(3 * 1.3)
    assert approx_token_count("你好") == 2
    assert approx_token_count("hello 你好") == 4
    assert approx_token_count("x" * 800) > 100  # long runs are not one word


# ---------------------------------------------------------------------- speed


def test_large_and_pathological_texts_do_not_blow_up() -> None:
    """A guard against quadratic chunking, not a speed test: 500k+ characters of each kind
    chunk within seconds of CPU (quadratic work here would take minutes)."""
    words = ["alpha", "beta", "gamma", "delta.", "epsilon!", "zeta\n"]
    text = " ".join(words[i % 6] for i in range(100_000))
    chunker = TokenChunker()
    for sample in (text, "y" * 500_000, "!" * 500_000, "\n" * 500_000 + "z"):
        start = time.process_time()
        chunks = chunker.split([_doc(sample)])
        assert time.process_time() - start < 10.0
        _check_invariants([_doc(sample)], chunks)


# ---------------------------------------------------------------------- real tokenizer


@pytest.fixture(scope="module")
def hf_tokenizer():  # -> transformers tokenizer
    from transformers import AutoTokenizer

    from shared_core.retrieval.embeddings import default_embedder_path

    return AutoTokenizer.from_pretrained(default_embedder_path())


@pytest.mark.real_model
def test_from_tokenizer_counts_real_tokens(hf_tokenizer) -> None:
    chunker = TokenChunker.from_tokenizer(hf_tokenizer, chunk_tokens=64, overlap_tokens=16)
    text = " ".join(
        f"The {i}th observation of the experiment, unexpectedly, contradicted hypothesis {i}."
        for i in range(200)
    )
    doc = _doc(text)
    chunks = chunker.split([doc])
    assert len(chunks) > 10
    for chunk in chunks:
        ids = hf_tokenizer(chunk.text, add_special_tokens=False).input_ids
        assert len(ids) <= 64 + 2  # sums of per-sentence counts, +/- joins
    _check_invariants([doc], chunks)
    assert chunker.count_tokens("hello world") == 2


@pytest.mark.real_model
def test_from_tokenizer_hard_split_and_odd_text(hf_tokenizer) -> None:
    chunker = TokenChunker.from_tokenizer(hf_tokenizer, chunk_tokens=32, overlap_tokens=4)
    docs = [
        _doc("supercalifragilistic" * 300, "long"),
        _doc("\x01\x02 \x7f\u200b \ufeff😀😀😀 é\u0301 " * 40, "odd"),
        _doc("\x01", "ctrl"),
    ]
    chunks = chunker.split(docs)
    _check_invariants(docs, chunks)
    for chunk in chunks:
        if chunk.doc_id == "long":
            assert len(hf_tokenizer(chunk.text, add_special_tokens=False).input_ids) <= 32
            # WordPiece reads a word over 100 characters as one [UNK]: chars are capped anyway
            assert len(chunk.text) <= 32 * 12
    assert sum(c.doc_id == "long" for c in chunks) >= 6000 // (32 * 12)


# ---------------------------------------------------------------------- properties

_any_text = st.text(
    alphabet=st.characters(),
    max_size=400,
)
_proseish = st.lists(
    st.sampled_from(
        ["word", "Word.", "end!", "q?", " ", "  ", "\n", "\n\n", "\t", "。", "字", "x" * 50, "..."]
    ),
    max_size=200,
).map("".join)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    texts=st.lists(st.one_of(_any_text, _proseish), min_size=1, max_size=6),
    chunk_tokens=st.integers(1, 60),
    overlap_share=st.floats(0, 0.9),
)
def test_property_offsets_and_coverage(
    texts: list[str], chunk_tokens: int, overlap_share: float
) -> None:
    overlap = min(chunk_tokens - 1, int(chunk_tokens * overlap_share))
    docs = [_doc(t, f"doc-{i}") for i, t in enumerate(texts)]
    chunks = TokenChunker(chunk_tokens=chunk_tokens, overlap_tokens=overlap).split(docs)
    _check_invariants(docs, chunks)
    for chunk in chunks:
        # a chunk only exceeds the budget when a single character already does
        assert (
            approx_token_count(chunk.text) <= chunk_tokens
            or len(chunk.text) == 1
            or (chunk_tokens < 3)
        )


@settings(max_examples=30, deadline=None)
@given(line=st.text(alphabet="ab \u00a0\x1c.", min_size=1000, max_size=5000))
def test_property_very_long_lines(line: str) -> None:
    docs = [_doc(line)]
    _check_invariants(docs, TokenChunker(chunk_tokens=16, overlap_tokens=4).split(docs))
