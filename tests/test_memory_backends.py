"""Gist memory (the native beacon memory is tested in test_beacon_*.py)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest

from shared_core.errors import NoMemoryError
from shared_core.memory.gist import GistMemory
from shared_core.types import ChatTurn, Generation


class EchoGenerator:
    """Gists are the first words of the chunk; answers name how many history turns came."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[ChatTurn, ...]]] = []

    def generate(
        self,
        prompt: str,
        *,
        history: Sequence[ChatTurn] = (),
        max_new_tokens: int = 256,
        stop: Sequence[str] = (),
        temperature: float = 0.0,
    ) -> Generation:
        self.calls.append((prompt, tuple(history)))
        if history:
            return Generation(
                text=f"answer after {len(history)} turns", prompt_tokens=1, completion_tokens=4
            )
        body = prompt.split("\n")[-1] if "\n" in prompt else prompt
        return Generation(
            text="GIST " + " ".join(body.split()[:4]), prompt_tokens=1, completion_tokens=5
        )

    def stream(self, prompt: str, **kw: object) -> Iterator[str]:
        yield self.generate(prompt, **kw).text  # type: ignore[arg-type]


TEXT = "\n\n".join(
    f"Paragraph {i}. The lighthouse keeper number {i} kept a log." * 20 for i in range(6)
)


def test_gist_memory_summarises_chunks_and_answers_over_them(tmp_path):
    gen = EchoGenerator()
    mem = GistMemory(gen, chunk_tokens=200)
    stats = mem.memorize(TEXT)
    assert stats.windows == len(mem.gists) > 1
    assert all(g.startswith("GIST") for g in mem.gists)
    reply = mem.generate(
        "Who kept the log?", history=[ChatTurn("user", "hi"), ChatTurn("assistant", "hello")]
    )
    prompt, history = gen.calls[-1]
    assert prompt == "Who kept the log?"
    assert history[0].role == "user" and mem.gists[0] in history[0].content
    assert [t.content for t in history[2:]] == ["hi", "hello"]
    assert reply.text == "answer after 4 turns"
    before = len(mem.gists)
    mem.add("A second text about a ship frozen in the ice near the pole." * 5)
    assert len(mem.gists) > before and [d["doc_id"] for d in mem.documents] == ["doc-0", "doc-1"]
    mem.save(tmp_path / "g")
    other = GistMemory(EchoGenerator())
    other.load(tmp_path / "g")
    assert other.gists == mem.gists and other.documents == mem.documents
    with pytest.raises(NoMemoryError):
        GistMemory(gen).generate("q")
