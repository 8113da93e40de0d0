"""The parts of bring-your-own-LLM that need no server: client-side stop strings, the
OpenAI generator's option checks, and ``memorag_with_llm``'s refusals."""

from __future__ import annotations

import pytest
from scripted import ScriptedGenerator

from shared_core.errors import InputError, LimitError
from shared_core.llm_roles import memorag_with_llm
from shared_core.memory.gist import GistMemory
from shared_core.models.stop_text import cut_at_stop, stream_until_stop

pytest.importorskip("openai")
from shared_core.models.openai_generator import OpenAIGenerator


def test_cut_at_the_earliest_stop() -> None:
    assert cut_at_stop("one two\n\nthree END four", ["END", "\n\n"]) == ("one two", True)
    assert cut_at_stop("no stop here", ["END", ""]) == ("no stop here", False)


@pytest.mark.parametrize(
    "pieces",
    [["Hello wor", "ld. EN", "D and more"], ["Hello world. ", "E", "N", "D"], ["Hello world. END"]],
)
def test_a_stream_never_shows_a_stop_split_over_pieces(pieces: list[str]) -> None:
    out = list(stream_until_stop(pieces, ["END"]))
    assert "".join(out) == "Hello world. "


def test_a_stream_without_a_stop_is_passed_through() -> None:
    assert "".join(stream_until_stop(["a", "", "b", "c"], ["XYZ"])) == "abc"
    assert list(stream_until_stop(["a", "", "b"], [])) == ["a", "b"]


def test_openai_generator_refuses_bad_options() -> None:
    with pytest.raises(InputError, match="model name"):
        OpenAIGenerator("")
    with pytest.raises(InputError, match="timeout"):
        OpenAIGenerator("m", base_url="http://127.0.0.1:9/v1", timeout=0)
    with pytest.raises(InputError, match="max_retries"):
        OpenAIGenerator("m", base_url="http://127.0.0.1:9/v1", max_retries=-1)
    gen = OpenAIGenerator("m", base_url="http://127.0.0.1:9/v1/", max_new_tokens_cap=64)
    assert gen.base_url == "http://127.0.0.1:9/v1" and gen.name == "m @ http://127.0.0.1:9/v1"
    with pytest.raises(LimitError, match=r"outside 1\.\.64"):
        gen.generate("hi", max_new_tokens=65)
    with pytest.raises(InputError, match="query is empty"):
        gen.generate("  ", max_new_tokens=4)
    with pytest.raises(InputError, match="ChatTurn"):
        gen.generate("hi", history=[{"role": "user", "content": "x"}], max_new_tokens=4)


def test_memorag_with_llm_fills_every_role_once() -> None:
    llm = ScriptedGenerator("a gist")
    engine = memorag_with_llm(llm, gist_tokens=8)
    assert isinstance(engine.memory, GistMemory) and engine.memory.generator is llm
    assert engine.generator is llm
    with pytest.raises(InputError, match="memory= and llm= both given"):
        memorag_with_llm(llm, memory=GistMemory(llm))
    with pytest.raises(InputError, match="TextGenerator"):
        memorag_with_llm(object())  # type: ignore[arg-type]
    with pytest.raises(InputError, match="language='auto'"):
        memorag_with_llm(llm, language="auto")
