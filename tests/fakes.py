"""Scripted stand-ins for the engine, used by adapter tests.

``ScriptedEngine`` implements the ``RetrievalEngine`` protocol with word-overlap search and a
scripted clue table, so adapter behaviour (exact k, clue-driven hits, metadata, async) can be
tested in milliseconds. The real engine is tested against the same adapters elsewhere.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence

from shared_core.inputs import check_k, check_query
from shared_core.types import (
    AsyncSearchBackend,
    ChatTurn,
    Clue,
    Generation,
    Hit,
    Passage,
    RetrievalResult,
    ScoredPassage,
    SearchBackend,
)

_WORD = re.compile(r"\w+")


def _words(text: str) -> set[str]:
    return {w.lower() for w in _WORD.findall(text) if len(w) > 2}


class WordOverlapSearch:
    """A tiny ``SearchBackend``: ranks passages by shared words with the query."""

    def __init__(self, passages: Sequence[Passage]) -> None:
        self.passages = list(passages)

    def __len__(self) -> int:
        return len(self.passages)

    def search(self, query: str, k: int) -> list[Hit]:
        q = _words(query)
        scored = [(len(q & _words(p.text)), -i, p) for i, p in enumerate(self.passages)]
        scored.sort(key=lambda t: (t[0], t[1]), reverse=True)
        return [Hit(passage=p, score=float(s), rank=r) for r, (s, _, p) in enumerate(scored[:k])]


class ScriptedEngine:
    """A deterministic ``RetrievalEngine`` whose clues come from a table."""

    def __init__(
        self,
        texts: Sequence[str],
        clue_table: Mapping[str, Sequence[str]] | None = None,
        reply: str = "The memory says hello.",
    ) -> None:
        self.passages = [
            Passage(
                id=f"doc-{i}#0",
                text=t,
                metadata={
                    "doc_id": f"doc-{i}",
                    "start": 0,
                    "end": len(t),
                    "chunk_id": f"doc-{i}#0",
                },
            )
            for i, t in enumerate(texts)
        ]
        self.index = WordOverlapSearch(self.passages)
        self.clue_table = dict(clue_table or {})
        self.reply = reply
        self.calls: list[tuple[str, tuple[ChatTurn, ...]]] = []
        self.saved_to: list[str] = []
        self._lock = threading.Lock()

    def clues(self, query: str, *, history: Sequence[ChatTurn] = ()) -> list[Clue]:
        with self._lock:
            self.calls.append((query, tuple(history)))
        return [Clue(text=t, kind="span") for t in self.clue_table.get(query, ())]

    def _fuse(self, query: str, k: int, lists: list[tuple[Clue, list[Hit]]]) -> RetrievalResult:
        scores: dict[str, float] = {}
        found: dict[str, list[Clue]] = {}
        ranks: dict[str, list[int]] = {}
        first: dict[str, Passage] = {}
        for clue, hits in lists:
            for hit in hits:
                pid = hit.passage.id
                first.setdefault(pid, hit.passage)
                scores[pid] = scores.get(pid, 0.0) + clue.weight / (60 + hit.rank + 1)
                found.setdefault(pid, []).append(clue)
                ranks.setdefault(pid, []).append(hit.rank)
        order = sorted(scores, key=lambda p: -scores[p])[:k]
        passages = tuple(
            ScoredPassage(first[p], scores[p], tuple(found[p]), tuple(ranks[p])) for p in order
        )
        return RetrievalResult(query=query, clues=tuple(c for c, _ in lists), passages=passages)

    def _queries(self, query: str, extra: Sequence[str], history: Sequence[ChatTurn]) -> list[Clue]:
        queries = [Clue(text=query, kind="query", weight=2.0)]
        queries += [Clue(text=e, kind="custom") for e in extra if e != query]
        return queries + self.clues(query, history=history)

    def retrieve(
        self,
        query: str,
        k: int,
        *,
        search: SearchBackend | None = None,
        extra_queries: Sequence[str] = (),
        history: Sequence[ChatTurn] = (),
    ) -> RetrievalResult:
        check_query(query)
        check_k(k)
        backend = search or self.index
        clues = self._queries(query, extra_queries, history)
        return self._fuse(query, k, [(c, backend.search(c.text, k)) for c in clues])

    async def aretrieve(
        self,
        query: str,
        k: int,
        *,
        search: SearchBackend | AsyncSearchBackend | None = None,
        extra_queries: Sequence[str] = (),
        history: Sequence[ChatTurn] = (),
    ) -> RetrievalResult:
        check_query(query)
        check_k(k)
        backend = search or self.index
        clues = await asyncio.to_thread(self._queries, query, extra_queries, history)
        if isinstance(backend, AsyncSearchBackend):
            lists = await asyncio.gather(*(backend.asearch(c.text, k) for c in clues))
        else:
            lists = [await asyncio.to_thread(backend.search, c.text, k) for c in clues]
        return self._fuse(query, k, list(zip(clues, lists, strict=True)))

    def _answer(
        self, messages: Sequence[ChatTurn], max_new_tokens: int, stop: Sequence[str]
    ) -> str:
        with self._lock:
            self.calls.append((messages[-1].content if messages else "", tuple(messages)))
        words = self.reply.split()[:max_new_tokens]
        text = " ".join(words)
        for s in stop:
            if s and s in text:
                text = text[: text.index(s)]
        return text

    def chat(
        self,
        messages: Sequence[ChatTurn],
        *,
        max_new_tokens: int = 256,
        stop: Sequence[str] = (),
        temperature: float = 0.0,
    ) -> Generation:
        text = self._answer(messages, max_new_tokens, stop)
        prompt_tokens = sum(len(m.content.split()) for m in messages)
        return Generation(
            text=text, prompt_tokens=prompt_tokens, completion_tokens=len(text.split())
        )

    def stream_chat(
        self,
        messages: Sequence[ChatTurn],
        *,
        max_new_tokens: int = 256,
        stop: Sequence[str] = (),
        temperature: float = 0.0,
    ) -> Iterator[str]:
        text = self._answer(messages, max_new_tokens, stop)
        for i, word in enumerate(text.split()):
            yield word if i == 0 else " " + word

    async def astream_chat(
        self,
        messages: Sequence[ChatTurn],
        *,
        max_new_tokens: int = 256,
        stop: Sequence[str] = (),
        temperature: float = 0.0,
    ) -> AsyncIterator[str]:
        for piece in self.stream_chat(messages, max_new_tokens=max_new_tokens, stop=stop):
            await asyncio.sleep(0)
            yield piece

    def save(self, save_dir: str, *, overwrite: bool = False) -> None:
        self.saved_to.append(save_dir)
