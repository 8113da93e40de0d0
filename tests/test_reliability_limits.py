"""Limits: configurable caps with clear errors, refused before any compute, nothing changed.

Caps (all ``LimitError``, a subclass of ``InputError``): characters per memorize/add call
(``max_chars``) and documents per call (``max_documents``) on the memory, ``max_new_tokens``
(``max_new_tokens_cap`` on the memory and on ``LocalGenerator``), clues per query
(``MemoRAG.max_clues`` and each clue writer's ``max_clues``), and a prompt longer than the
positions the memory leaves. "Before any compute" is checked with spies: the embedder is not
called and the model runs no forward pass.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from crash_worker import corpus, make_memory, make_pipeline
from tiny_models import tiny_model

from shared_core.clues import make_clue_writer
from shared_core.errors import InputError, LimitError
from shared_core.models.generation import LocalGenerator
from shared_core.pipeline import MemoRAG
from shared_core.types import ChatTurn, Clue, Generation


class Compute:
    """Counts forward passes of a model and calls of an embedder."""

    def __init__(self, model: Any, embedder: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        self.forwards = 0
        self.embeds = 0
        self._hook = model.register_forward_pre_hook(self._forward)
        for name in ("embed_passages", "embed_queries"):
            real = getattr(embedder, name)
            monkeypatch.setattr(embedder, name, self._counting(real))

    def _forward(self, *_: Any) -> None:
        self.forwards += 1

    def _counting(self, real: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            self.embeds += 1
            return real(*args, **kwargs)

        return call

    @property
    def none(self) -> bool:
        return self.forwards == 0 and self.embeds == 0

    def close(self) -> None:
        self._hook.remove()


@pytest.fixture
def compute(llama, monkeypatch) -> Iterator[Any]:
    from crash_worker import shared_embedder

    spies = Compute(llama, shared_embedder(), monkeypatch)
    yield spies
    spies.close()


def test_memorize_over_max_chars_is_refused_before_any_compute(llama, compute):
    pipe = make_pipeline(llama, max_chars=500)
    compute.forwards = compute.embeds = 0
    with pytest.raises(LimitError, match=r"context has 600 characters, over the limit of 500"):
        pipe.memorize("x" * 100 + " words here. " * 38 + "y" * 6)
    assert compute.none, "text was embedded or read before the cap was checked"
    assert pipe.memory.is_empty and pipe._index is None


def test_memorize_over_max_documents_is_refused_before_any_compute(llama, compute):
    pipe = make_pipeline(llama, max_documents=3)
    with pytest.raises(LimitError, match=r"4 documents in one call is over the limit of 3"):
        pipe.memorize([d.text for d in corpus(4)])
    assert compute.none


def test_add_over_the_caps_changes_nothing(llama, compute):
    pipe = make_pipeline(llama, max_chars=400, max_documents=3)
    pipe.memorize(corpus(3))
    state, chunks = pipe.memory._state, pipe.index.chunks
    compute.forwards = compute.embeds = 0
    with pytest.raises(LimitError, match=r"over the limit of 400"):
        pipe.add(["A long addition. " * 30])
    with pytest.raises(LimitError, match=r"over the limit of 3"):
        pipe.add(["one more", "two more", "three more", "four more"])
    assert compute.none
    assert pipe.memory._state is state and pipe.index.chunks == chunks


def test_max_new_tokens_cap_on_the_memory_and_the_generator(llama, tokenizer, compute):
    memory = make_memory(llama, max_new_tokens_cap=32)
    memory.memorize(" ".join(d.text for d in corpus(3)))
    compute.forwards = 0
    with pytest.raises(LimitError, match=r"max_new_tokens=33 is outside 1\.\.32"):
        memory.generate("Where is the fox?", max_new_tokens=33)
    with pytest.raises(LimitError, match=r"max_new_tokens=-1 is outside"):
        list(memory.stream("Where is the fox?", max_new_tokens=-1))
    generator = LocalGenerator(llama, tokenizer, max_new_tokens_cap=16)
    with pytest.raises(LimitError, match=r"max_new_tokens=17 is outside 1\.\.16"):
        generator.generate("Hello there", max_new_tokens=17)
    assert compute.forwards == 0
    assert len(memory.generate("Where is the fox?", max_new_tokens=32).text) >= 0


def test_a_prompt_longer_than_the_positions_left_is_refused_before_any_compute(compute):
    model = tiny_model("llama", max_positions=1024)
    memory = make_memory(model, reserve_tokens=64, position_mode="absolute")
    memory.memorize(" ".join(d.text for d in corpus(6)))  # ~480 text tokens of 1024
    left = memory.max_positions - memory._state.next_position
    hook = model.register_forward_pre_hook(lambda *_: calls.append(1))
    calls: list[int] = []
    try:
        with pytest.raises(
            LimitError,
            match=r"the prompt \(query, history and instructions\) is .* tokens, "
            r"but the memory leaves .* of tiny-llama's 1,024",
        ):
            memory.generate("Why? " * (left // 4), max_new_tokens=8)
        with pytest.raises(
            LimitError,
            match=r"the prompt is .* tokens and asks for 400 more, "
            r"but the memory leaves .* of tiny-llama's 1,024",
        ):
            memory.generate("Why? " * 20, max_new_tokens=400)
        history = [ChatTurn("user", "Tell me everything. " * 40), ChatTurn("assistant", "No.")]
        with pytest.raises(LimitError, match=r"shorten the prompt/history"):
            memory.generate("And now?", history=history, max_new_tokens=8)
        assert calls == [], "the model ran before the prompt was refused"
        memory.generate("Where is the fox?", max_new_tokens=4)  # a short one still works
        assert calls
    finally:
        hook.remove()


def test_a_text_longer_than_the_model_can_hold_is_refused_and_nothing_changes(llama):
    pipe = make_pipeline(llama, position_mode="absolute")
    pipe.memorize(corpus(2))
    state, index = pipe.memory._state, pipe._index
    with pytest.raises(LimitError, match=r"with absolute positions tiny-llama holds at most"):
        pipe.memorize(["A sentence about nothing in particular. " * 120])
    assert pipe.memory._state is state and pipe._index is index


class Chatty:
    """A memory stand-in whose reply is a decoding loop: the same lines, forever."""

    def generate(self, prompt: str, **kwargs: Any) -> Generation:
        lines = "".join(
            f"{i % 7 + 1}. The fox runs to the river number {i % 7}.\n" for i in range(2000)
        )
        return Generation(text=lines, prompt_tokens=10, completion_tokens=20000)


def test_clue_writers_return_a_bounded_list_whatever_the_model_says():
    for spec in ("span", "surrogate", "span+surrogate+answer"):
        writer = make_clue_writer(spec)
        clues = writer.write("Where does the fox run?", Chatty())
        assert 0 < len(clues) <= 12, spec
        assert all(len(c.text) <= 300 and "\n" not in c.text for c in clues)


class Flood:
    """A custom clue writer that returns far too many clues."""

    def write(self, query: str, memory: Any, *, history: Any = ()) -> list[Clue]:
        return [Clue(text=f"clue number {i} about the {query}", kind="custom") for i in range(500)]


def test_the_pipeline_caps_the_clues_of_any_writer(llama):
    pipe = make_pipeline(llama, clues=Flood())
    pipe.memorize(corpus(3))
    assert len(pipe.clues("fox")) == pipe.config.max_clues == 16
    pipe = MemoRAG(
        config=pipe.config.with_changes(max_clues=3), memory=pipe.memory, embedder=pipe.embedder
    )  # configurable per pipeline
    pipe.memorize(corpus(3))
    result = pipe.retrieve("fox", 2)
    assert len(result.clues) == 1 + 3  # the query itself, then three clues
    assert len(result.passages) == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_chars": 10}, r"over the limit of 10"),
        ({"max_documents": 1}, r"2 documents in one call is over the limit of 1"),
    ],
)
def test_limit_errors_are_input_errors_with_the_fix_in_the_message(kwargs, message, llama):
    memory = make_memory(llama, **kwargs)
    with pytest.raises(LimitError, match=message) as caught:
        memory.memorize(["first document text", "second document text"])
    assert isinstance(caught.value, InputError)
    assert "raise max_" in str(caught.value)
