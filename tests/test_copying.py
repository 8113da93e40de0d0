"""Copy-from-text clues: every copied span is verbatim corpus text, whatever the model picks."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scripted import ScriptedMemory, shared_embedder
from tiny_models import tiny_model, tiny_tokenizer

from shared_core import MemoRAG
from shared_core.clues import CompositeClueWriter, SpanClues, make_clue_writer
from shared_core.clues.copying import CopySource
from shared_core.errors import InputError
from shared_core.memory.compressed_kv import CompressedKVMemory
from shared_core.models.generation import LocalGenerator

TEXTS = [
    "Ada Lovelace wrote the first program for the Analytical Engine in 1843.",
    "Charles Babbage designed the Analytical Engine.\nIt was never finished.",
    "The engine used punched cards borrowed from the Jacquard loom.",
]
TOKENIZER = tiny_tokenizer()
END = 258  # <|im_end|> in the tiny tokenizer


def _norm(text: str) -> str:
    return " ".join(text.split())


def _is_copied(line: str, texts: list[str]) -> bool:
    return any(line.strip() in _norm(t) for t in texts)


def _drive(source: CopySource, pick, **kw) -> tuple[str, int]:
    """Decode with ``pick(allowed) -> token`` under the constraint; return (text, steps)."""
    copier = source.constraint([END], **kw)
    tokens: list[int] = []
    for step in range(500):
        allowed = copier.allowed()
        assert allowed, "the constraint must always offer a token"
        token = pick(allowed)
        copier.advance(token)
        if token == END:
            return TOKENIZER.decode(tokens), step
        tokens.append(token)
    raise AssertionError("the constraint never ended the reply")


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), spans=st.integers(1, 4), lo=st.integers(1, 6))
def test_any_choice_under_the_constraint_yields_verbatim_lines(seed, spans, lo) -> None:
    source = CopySource.from_texts(TEXTS, TOKENIZER)
    rng = random.Random(seed)
    text, _ = _drive(
        source, rng.choice, max_spans=spans, min_tokens=lo, max_tokens=lo + rng.randint(0, 30)
    )
    lines = [line for line in text.split("\n") if line.strip()]
    assert 1 <= len(lines) <= spans
    for line in lines:
        assert _is_copied(line, TEXTS), line


def test_spans_start_on_words_respect_lengths_and_do_not_cross_line_breaks() -> None:
    source = CopySource.from_texts(TEXTS, TOKENIZER)
    text, _ = _drive(source, lambda a: a[-1], max_spans=3, min_tokens=5, max_tokens=12)
    for line in text.split("\n"):
        if not line:
            continue
        stripped = line.strip()
        assert stripped[0].isalnum()  # begins on a word
        assert any(f" {stripped}" in f" {t}" for t in " ".join(TEXTS).split("\n"))
        assert len(TOKENIZER.encode(line, add_special_tokens=False)) <= 12
        assert "finished" not in stripped or "Engine" not in stripped  # no span across "\n"


def test_copied_spans_are_not_offered_twice() -> None:
    source = CopySource.from_texts(["alpha beta gamma delta"], TOKENIZER)
    text, _ = _drive(source, lambda a: a[0], max_spans=5, min_tokens=20, max_tokens=40)
    lines = [line.strip() for line in text.split("\n") if line.strip()]
    assert lines[0] == "alpha beta gamma delta"
    assert len(lines) == len(set(lines))


def test_bad_sources_and_settings_are_refused() -> None:
    with pytest.raises(InputError, match="no text"):
        CopySource.from_texts(["", "  \n "], TOKENIZER)
    source = CopySource.from_texts(TEXTS, TOKENIZER)
    with pytest.raises(InputError, match="min_tokens"):
        source.constraint([END], min_tokens=9, max_tokens=3)
    with pytest.raises(InputError, match="end-of-reply"):
        source.constraint([], min_tokens=1, max_tokens=3)


@pytest.fixture(scope="module")
def tiny():
    return tiny_model("llama")


def test_a_memory_model_decodes_only_corpus_spans(tiny) -> None:
    memory = CompressedKVMemory(
        tiny, TOKENIZER, window=128, reserve_tokens=64, compress="always", scorer="key_norm"
    )
    memory.memorize("\n\n".join(TEXTS))
    source = CopySource.from_texts(TEXTS, TOKENIZER)
    writer = SpanClues(copy_from_text=True, copy_spans=3, copy_min_tokens=4, min_words=1)
    clues = writer.write("Who designed the engine?", memory, source=source)
    assert clues, "random weights still copy something"
    for clue in clues:
        assert clue.kind == "span"
        assert _is_copied(clue.text, TEXTS), clue.text
    # The same writer on a plain generator (the corpus-blind control) also copies.
    blind = LocalGenerator(tiny, TOKENIZER)
    for clue in writer.write("Who designed the engine?", blind, source=source):
        assert _is_copied(clue.text, TEXTS), clue.text


def test_writers_without_a_source_or_a_copying_memory_write_freely() -> None:
    memory = ScriptedMemory({"facts": "- Babbage designed the Analytical Engine for years"})
    memory.memorize("anything")
    writer = SpanClues(copy_from_text=True)
    source = CopySource.from_texts(TEXTS, TOKENIZER)
    free = [c.text for c in writer.write("Which facts matter?", memory, source=source)]
    assert free == ["Babbage designed the Analytical Engine for years"]
    assert [c.text for c in writer.write("Which facts matter?", memory)] == free

    class _NoCopy:  # e.g. a caching wrapper over a memory that cannot copy
        supports_copying = False

        def __init__(self) -> None:
            self.generate = memory.generate

        def generate_constrained(self, *args, **kwargs):
            raise AssertionError("asked to copy although it said it cannot")

    assert [c.text for c in writer.write("Which facts matter?", _NoCopy(), source=source)] == free


def test_copy_is_a_named_strategy() -> None:
    writer = make_clue_writer("copy+surrogate")
    assert isinstance(writer, CompositeClueWriter)
    assert writer.uses_source
    first = writer.writers[0]
    assert isinstance(first, SpanClues) and first.copy_from_text
    assert not getattr(make_clue_writer("span+surrogate"), "uses_source", False)
    with pytest.raises(InputError, match="copy"):
        make_clue_writer("copyy")


def test_the_pipeline_copies_from_its_own_index(tiny) -> None:
    memory = CompressedKVMemory(
        tiny, TOKENIZER, window=128, reserve_tokens=64, compress="always", scorer="key_norm"
    )
    pipe = MemoRAG(memory=memory, embedder=shared_embedder(), clue_strategy="copy")
    pipe.memorize([{"text": t, "doc_id": f"d{i}"} for i, t in enumerate(TEXTS)])
    clues = pipe.clues("Who designed the engine?")
    assert clues
    for clue in clues:
        assert _is_copied(clue.text, TEXTS), clue.text
    # The source follows the index: text added later can be copied too.
    pipe.add([{"text": "Lovelace annotated Menabrea's paper in nine long notes.", "doc_id": "d9"}])
    assert "Menabrea" in TOKENIZER.decode([t for t in pipe._copy_source().ids.tolist() if t >= 0])
