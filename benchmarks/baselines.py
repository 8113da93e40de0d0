"""Baselines to compare the memory against: BM25 search and corpus-blind query writers.

``hyde_queries`` and ``multi_query`` use a plain ``TextGenerator`` with no memory: they rewrite
the question from the model's own knowledge only, never having read the corpus.
``CachedGenerator`` keeps those greedy generations on disk, so a rerun skips the model.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rank_bm25 import BM25Okapi

from shared_core.inputs import check_k, check_query
from shared_core.types import Chunk, Generation, Hit, Passage, TextGenerator

Tokenizer = Callable[[str], list[str]]

_WORD = re.compile(r"\w+")
_LINE_PREFIX = re.compile(
    r"^\s*(?:[-*•]+|\(?\d+[.):]|(?:query|rewrite|question|q)\s*\d*\s*[:.)-])\s*", re.IGNORECASE
)
#: Longest rewrite kept by ``multi_query``, in characters.
MAX_QUERY_CHARS = 300

HYDE_PROMPT = (
    "Write one short paragraph that answers the question below, as it might appear in a "
    "book or an encyclopedia. Give concrete names, places and dates. Write only the "
    "paragraph.\n\nQuestion: {question}\n\nParagraph:"
)
MULTI_QUERY_PROMPT = (
    "Rewrite the search question below in {n} different ways, so that together they find "
    "every passage needed to answer it: use other words, name what it implies, split it into "
    "steps. Write exactly {n} lines, one search question per line, nothing else.\n\n"
    "Question: {question}\n\nRewrites:"
)


def simple_tokenize(text: str) -> list[str]:
    """Lowercase word tokens (``\\w+``)."""
    return _WORD.findall(text.lower())


class _BM25(BM25Okapi):
    """Okapi BM25 with the non-negative Lucene idf ``log(1 + (N - n + 0.5) / (n + 0.5))``.

    rank-bm25's own idf is 0 for a term in half of the documents and negative above that,
    which makes small corpora (a handful of chunks) rank nothing.
    """

    def _calc_idf(self, nd: dict[str, int]) -> None:
        n_docs = self.corpus_size
        for word, freq in nd.items():
            self.idf[word] = math.log(1.0 + (n_docs - freq + 0.5) / (freq + 0.5))
        self.average_idf = sum(self.idf.values()) / max(len(self.idf), 1)


class BM25Backend:
    """A ``SearchBackend`` over chunks, scored by BM25 (rank-bm25, k1=1.5, b=0.75).

    Passages carry the chunk's metadata plus ``doc_id``, ``start``, ``end`` and
    ``chunk_id``, like the dense index. Ties keep chunk order.
    """

    def __init__(
        self,
        chunks: Sequence[Chunk],
        *,
        tokenizer: Tokenizer = simple_tokenize,
        k1: float = 1.5,
        b: float = 0.75,
    ) -> None:
        self.chunks = list(chunks)
        self.tokenizer = tokenizer
        tokenized = [tokenizer(c.text) for c in self.chunks]
        # rank-bm25 divides by the corpus size and the mean length: guard the empty cases.
        self._bm25 = _BM25(tokenized, k1=k1, b=b) if any(tokenized) else None
        self._passages = [
            Passage(
                id=c.chunk_id,
                text=c.text,
                metadata={
                    **c.metadata,
                    "doc_id": c.doc_id,
                    "start": c.start,
                    "end": c.end,
                    "chunk_id": c.chunk_id,
                },
            )
            for c in self.chunks
        ]

    def __len__(self) -> int:
        return len(self.chunks)

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every chunk for ``query`` (zeros if nothing is indexable)."""
        if self._bm25 is None:
            return np.zeros(len(self.chunks))
        return np.asarray(self._bm25.get_scores(self.tokenizer(query)), dtype=float)

    def search(self, query: str, k: int) -> list[Hit]:
        """The top ``min(k, len(chunks))`` chunks, best first."""
        check_query(query)
        check_k(k)
        scores = self.scores(query)
        order = np.argsort(-scores, kind="stable")[:k]
        return [
            Hit(passage=self._passages[i], score=float(scores[i]), rank=rank)
            for rank, i in enumerate(order)
        ]


def hyde_queries(question: str, generator: TextGenerator, max_new_tokens: int = 96) -> list[str]:
    """HyDE: one hypothetical passage answering ``question`` (``[]`` if the model wrote none)."""
    prompt = HYDE_PROMPT.format(question=question.strip())
    text = generator.generate(prompt, max_new_tokens=max_new_tokens, temperature=0.0).text
    text = text.strip()
    return [text] if text else []


def parse_lines(text: str, n: int, *, exclude: str = "") -> list[str]:
    """Up to ``n`` distinct non-empty lines, stripped of bullets, numbering and quotes;
    header lines (ending with ``:``) and a line equal to ``exclude`` are dropped, each line is
    cut to ``MAX_QUERY_CHARS``."""
    seen = {" ".join(exclude.lower().split())} if exclude else set()
    out: list[str] = []
    for raw in text.splitlines():
        line = _LINE_PREFIX.sub("", raw.strip()).strip().strip("\"'“”").strip()
        if not line or line.endswith(":"):
            continue
        line = line[:MAX_QUERY_CHARS].strip()
        key = " ".join(line.lower().split())
        if key in seen:
            continue
        seen.add(key)
        out.append(line)
        if len(out) == n:
            break
    return out


def multi_query(
    question: str, generator: TextGenerator, n: int = 3, max_new_tokens: int = 160
) -> list[str]:
    """Up to ``n`` rewrites of ``question``, one per generated line (the question itself and
    duplicates are dropped; may return fewer, or none)."""
    check_k(n, name="n")
    prompt = MULTI_QUERY_PROMPT.format(question=question.strip(), n=n)
    text = generator.generate(prompt, max_new_tokens=max_new_tokens, temperature=0.0).text
    return parse_lines(text, n, exclude=question.strip())


class CachedGenerator:
    """A ``TextGenerator`` whose greedy outputs are cached in a JSONL file, keyed by the model
    name, the prompt and the token budget (``path`` None: in memory only). ``source`` builds
    the real generator on the first miss, so a fully cached run loads no model."""

    def __init__(self, name: str, source: Callable[[], TextGenerator], path: Path | None) -> None:
        self.name, self._source, self._real = name, source, None
        self.path = path
        self._hits: dict[str, dict[str, Any]] = {}
        if path is not None and path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by an interrupted run
                self._hits[row["key"]] = row

    def generate(self, prompt: str, *, max_new_tokens: int = 256, **kw: Any) -> Generation:
        key = hashlib.sha256(json.dumps([self.name, prompt, max_new_tokens]).encode()).hexdigest()
        row = self._hits.get(key)
        if row is None:
            if self._real is None:
                self._real = self._source()
            out = self._real.generate(prompt, max_new_tokens=max_new_tokens, temperature=0.0)
            row = {
                "key": key,
                "text": out.text,
                "prompt_tokens": out.prompt_tokens,
                "completion_tokens": out.completion_tokens,
            }
            self._hits[key] = row
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with self.path.open("a", encoding="utf-8") as fh:
                    fh.write(json.dumps(row) + "\n")
        return Generation(
            text=row["text"],
            prompt_tokens=row["prompt_tokens"],
            completion_tokens=row["completion_tokens"],
        )


def blind_keys(writer: str, question: str, generator: TextGenerator) -> list[str]:
    """The corpus-blind keys of ``writer`` (``hyde`` or ``multi_query``) for ``question``."""
    if writer == "hyde":
        return hyde_queries(question, generator)
    if writer == "multi_query":
        return multi_query(question, generator)
    raise ValueError(f"unknown key writer {writer!r} (hyde, multi_query)")
