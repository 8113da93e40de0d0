"""Gist memory: the text is cut into chunks, each summarised by any generator, and the gists
become the memory context (MemoRAG-Lite style). For models whose KV cache you cannot reach,
including generators behind an API: everything stays text, saved as JSON.
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from shared_core.config import OPTION_DEFAULTS
from shared_core.errors import NoMemoryError, PersistenceError
from shared_core.inputs import ContextInput, as_documents, check_query
from shared_core.memory.base import Memory, MemoryStats
from shared_core.memory.reading import new_documents, wait_bar
from shared_core.models.decoding import RunRequest
from shared_core.models.generation import run_of
from shared_core.persistence import read_json, write_json
from shared_core.retrieval.chunking import TokenChunker, approx_token_count
from shared_core.types import ChatTurn, GenerationRun, TextGenerator

_GISTS = "gists.json"


class GistMemory(Memory):
    """A memory of short gists written by ``generator``, shown to it before every prompt."""

    backend = "gist"

    def __init__(
        self,
        generator: TextGenerator,
        *,
        prompts: Any = None,
        intro: str | None = None,
        ack: str | None = None,
        chunk_tokens: int = OPTION_DEFAULTS["chunk_tokens"],
        gist_tokens: int = OPTION_DEFAULTS["gist_tokens"],
        name: str | None = None,
        max_chars: int | None = OPTION_DEFAULTS["max_chars"],
        max_documents: int | None = OPTION_DEFAULTS["max_documents"],
    ) -> None:
        if prompts is None:
            from shared_core.prompts import get_prompts

            prompts = get_prompts("en")
        self.generator = generator
        self.prompts = prompts
        self.intro = prompts.memory_intro if intro is None else intro
        self.ack = prompts.memory_ack if ack is None else ack
        self.chunker = TokenChunker(chunk_tokens=chunk_tokens, overlap_tokens=0)
        self.gist_tokens = gist_tokens
        self.name = name or getattr(generator, "name", type(generator).__name__)
        self.max_chars = max_chars
        self.max_documents = max_documents
        self._gists: tuple[str, ...] = ()
        self._documents: tuple[dict[str, Any], ...] = ()
        self._tokens = 0
        self._seconds = 0.0
        self._lineage = uuid.uuid4().hex
        self._lock = threading.Lock()

    @property
    def is_empty(self) -> bool:
        return not self._gists

    @property
    def lineage(self) -> str:
        return self._lineage

    @property
    def documents(self) -> tuple[dict[str, Any], ...]:
        return self._documents

    @property
    def gists(self) -> tuple[str, ...]:
        return self._gists

    def _summarise(
        self, docs: Sequence[Any], show: bool | None = None
    ) -> tuple[list[str], int, float]:
        started = time.perf_counter()
        gists = []
        chunks = self.chunker.split(docs)
        bar = wait_bar(len(chunks), "memorize (gists)", "chunk", show)
        for chunk in chunks:
            prompt = self.prompts.gist.format(context=chunk.text)
            text = self.generator.generate(prompt, max_new_tokens=self.gist_tokens).text.strip()
            gists.append(" ".join(text.split()) or chunk.text[:200])
            bar.update(1)
        bar.close()
        tokens = sum(approx_token_count(d.text) for d in docs)
        return gists, tokens, time.perf_counter() - started

    def memorize(self, context: ContextInput, *, show_progress: bool | None = None) -> MemoryStats:
        docs = as_documents(context, max_documents=self.max_documents, max_chars=self.max_chars)
        gists, tokens, seconds = self._summarise(docs, show_progress)
        with self._lock:
            self._gists = tuple(gists)
            self._documents = tuple({"doc_id": d.doc_id, "chars": len(d.text)} for d in docs)
            self._tokens, self._seconds = tokens, seconds
            self._lineage = uuid.uuid4().hex
        return self.stats()

    def add(self, context: ContextInput, *, show_progress: bool | None = None) -> MemoryStats:
        if self.is_empty:
            return self.memorize(context, show_progress=show_progress)
        docs = new_documents(
            context, self._documents, max_documents=self.max_documents, max_chars=self.max_chars
        )
        gists, tokens, seconds = self._summarise(docs, show_progress)
        with self._lock:
            self._gists += tuple(gists)
            self._documents += tuple({"doc_id": d.doc_id, "chars": len(d.text)} for d in docs)
            self._tokens += tokens
            self._seconds += seconds
        return self.stats()

    def _history(self, history: Sequence[ChatTurn]) -> list[ChatTurn]:
        if self.is_empty:
            raise NoMemoryError("this memory is empty: call memorize(text) or load(dir) first")
        body = "\n".join(f"- {g}" for g in self._gists)
        return [ChatTurn("user", f"{self.intro}{body}"), ChatTurn("assistant", self.ack), *history]

    def answer_generator(self) -> TextGenerator:
        """The generator that writes the gists answers too."""
        return self.generator

    def _open_run(self, request: RunRequest) -> GenerationRun:
        prompt = check_query(request.prompt)
        history = self._history(request.history)
        return run_of(self.generator, prompt, history=history, options=request.options)

    def stats(self) -> MemoryStats:
        size = sum(len(g.encode("utf-8")) for g in self._gists)
        return MemoryStats(
            backend=self.backend,
            tokens_read=self._tokens,
            documents=len(self._documents),
            windows=len(self._gists),
            memory_bytes=size,
            window=self.chunker.chunk_tokens,
            seconds=self._seconds,
            extra={"generator": self.name},
        )

    def write_files(self, folder: Path) -> dict[str, Any]:
        if self.is_empty:
            raise NoMemoryError("nothing to save: this memory is empty")
        write_json(folder / _GISTS, {"gists": list(self._gists)})
        digest = hashlib.sha256("\n".join(self._gists).encode()).hexdigest()
        return {
            "backend": self.backend,
            "generator": self.name,
            "documents": list(self._documents),
            "tokens": self._tokens,
            "seconds": self._seconds,
            "gists_sha256": digest,
            "lineage": self._lineage,
        }

    def read_files(self, folder: Path, section: Mapping[str, Any]) -> None:
        where = folder / _GISTS
        if section.get("backend") != self.backend:
            raise PersistenceError(f"{folder / 'manifest.json'}: not a gist memory")
        data = read_json(where)
        gists = data.get("gists") if isinstance(data, dict) else None
        if not isinstance(gists, list) or not all(isinstance(g, str) for g in gists) or not gists:
            raise PersistenceError(f"{where}: 'gists' must be a non-empty list of strings")
        documents = section.get("documents")
        if not isinstance(documents, list) or not all(isinstance(d, dict) for d in documents):
            raise PersistenceError(f"{folder / 'manifest.json'}: documents must be a list")
        tokens = section.get("tokens")
        with self._lock:
            self._gists = tuple(gists)
            self._documents = tuple(documents)
            self._tokens = tokens if isinstance(tokens, int) and tokens >= 0 else 0
            self._seconds = float(section.get("seconds") or 0.0)
            self._lineage = str(section.get("lineage") or uuid.uuid4().hex)
