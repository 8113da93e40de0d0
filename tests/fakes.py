"""A real engine with a scripted memory, for the adapter tests.

``ScriptedEngine`` is ``shared_core.MemoRAG`` itself: the real chunking, dense index, clue
writer (free span clues), follow-up handling and fusion. Only the memory is scripted
(``ScriptedMemory``: a clue table and a reply), and the embedder is a tiny deterministic
bag-of-words hasher, so adapter behaviour (exact k, clue-driven hits, metadata, async,
streaming usage) is tested in milliseconds without a model.
"""

from __future__ import annotations

import functools
import hashlib
import re
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scripted import FOLLOWUP, SPAN, ConstrainedScriptedMemory
from tiny_models import tiny_tokenizer

from shared_core import MemoRAG
from shared_core.clues.writers import SpanClues
from shared_core.models.streaming import TextStream
from shared_core.retrieval.embeddings import Embedder
from shared_core.types import ChatTurn, Clue, Generation, RetrievalResult

_WORD = re.compile(r"\w+")
DIM = 256


def _words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text) if len(w) > 2]


@functools.lru_cache(maxsize=1)
def _byte_tokenizer() -> Any:
    return tiny_tokenizer(chat_template=False)


class WordHashEmbedder(Embedder):
    """Each word of three letters or more hashed to one of ``DIM`` axes, then L2-normalised.

    The inner product of two texts is their word overlap (normalised), so ranking is
    predictable; a byte-level tokenizer gives the chunker real token counts.
    """

    def __init__(self) -> None:
        super().__init__(name="test/word-hash")

    @property
    def dim(self) -> int:
        return DIM

    @property
    def tokenizer(self) -> Any:
        return _byte_tokenizer()

    @property
    def max_tokens(self) -> int:
        return 512

    @property
    def fingerprint(self) -> str:
        return "word-hash-v1"

    def _encode(self, texts: Sequence[str], *, prefix: str, show_progress: bool) -> np.ndarray:
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in _words(prefix + text):
                axis = int.from_bytes(hashlib.sha1(word.encode()).digest()[:4], "little") % DIM
                out[row, axis] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        return out / norms


def scripted_memory(
    clue_table: Mapping[str, Sequence[str]] | None = None,
    reply: str = "The memory says hello.",
    rules: Sequence[tuple[str | tuple[str, ...], str]] = (),
) -> ConstrainedScriptedMemory:
    """A memory that writes the table's clues for each query and answers ``reply`` otherwise
    (under a token constraint too: structured output and tool calls).

    A follow-up rewrite prompt gets no answer, so the engine keeps the question as it is;
    ``rules`` (prompt substrings -> reply) come first.
    """
    table: list[tuple[str | tuple[str, ...], str]] = [*rules, (FOLLOWUP, "")]
    for query, clues in (clue_table or {}).items():
        table.append(((SPAN, query), "\n".join(clues)))
    table.append((SPAN, ""))
    return ConstrainedScriptedMemory(table, default=reply)


class ScriptedEngine(MemoRAG):
    """``MemoRAG`` over ``texts`` with a scripted memory; records what reached it.

    ``calls`` holds ``(query, history)`` for every clue or retrieval request and ``(last
    message, all messages)`` for every chat request; ``saved_to`` every ``save`` directory.
    """

    def __init__(
        self,
        texts: Sequence[str],
        clue_table: Mapping[str, Sequence[str]] | None = None,
        reply: str = "The memory says hello.",
        *,
        rules: Sequence[tuple[str | tuple[str, ...], str]] = (),
        **options: Any,
    ) -> None:
        super().__init__(
            memory=scripted_memory(clue_table, reply, rules),
            embedder=WordHashEmbedder(),
            clue_strategy=SpanClues(min_words=1),
            anchor_clues=False,
            fusion=options.pop("fusion", "rrf"),
            **options,
        )
        self.reply = reply
        self.calls: list[tuple[str, tuple[ChatTurn, ...]]] = []
        self.saved_to: list[str] = []
        self._calls_lock = threading.Lock()
        if texts:
            self.memorize(list(texts))

    def _record(self, query: str, turns: Sequence[ChatTurn]) -> None:
        with self._calls_lock:
            self.calls.append((query, tuple(turns)))

    def clues(self, query: str, *, history: Sequence[ChatTurn] = ()) -> list[Clue]:
        self._record(query, history)
        return super().clues(query, history=history)

    def retrieve(self, query: str, k: int = 3, **call: Any) -> RetrievalResult:
        self._record(query, call.get("history", ()))
        return super().retrieve(query, k, **call)

    async def aretrieve(self, query: str, k: int = 3, **call: Any) -> RetrievalResult:
        self._record(query, call.get("history", ()))
        return await super().aretrieve(query, k, **call)

    def chat(self, messages: Sequence[ChatTurn], **options: Any) -> Generation:
        self._record(messages[-1].content if messages else "", messages)
        return super().chat(messages, **options)

    def stream_chat(self, messages: Sequence[ChatTurn], **options: Any) -> TextStream:
        self._record(messages[-1].content if messages else "", messages)
        return super().stream_chat(messages, **options)

    def save(self, save_dir: Any, *, overwrite: bool = False) -> None:
        self.saved_to.append(str(save_dir))
        super().save(save_dir, overwrite=overwrite)


__all__ = ["ScriptedEngine", "WordHashEmbedder", "scripted_memory"]
