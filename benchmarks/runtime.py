"""Models, caches and memories shared by every set and method of one quality run."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.gen_cache import CachedGenerator, CallLog, GenCache, _sha, code_fingerprint
from benchmarks.methods import PERSIST_TOKENS
from shared_core.clues.copying import CopySource
from shared_core.clues.writers import (
    ClueWriter,
    CompositeClueWriter,
    DraftAnswerClues,
    SpanClues,
    SurrogateClues,
    make_clue_writer,
)
from shared_core.errors import LimitError
from shared_core.types import Chunk, Document


@dataclass
class Runtime:
    """Models, caches and settings shared by every set and method of one run."""

    cache: GenCache
    cache_dir: Path | None
    clue_tokens: int | None = None  # override every clue writer's max_new_tokens (smoke)
    hyde_tokens: int = 96
    mq_tokens: int = 160
    qa_tokens: int = 32
    summary_tokens: int = 96
    log: CallLog = field(default_factory=CallLog)
    notes: list[str] = field(default_factory=list)
    memory_records: dict[str, dict[str, Any]] = field(default_factory=dict)
    _lm: Any = None
    _embedder: Any = None
    _generator: Any = None
    _chunker: Any = None
    _prompts: Any = None
    _vectors: dict[str, np.ndarray] = field(default_factory=dict)
    _copy_sources: dict[str, CopySource] = field(default_factory=dict)

    # -- models (loaded on first use) -----------------------------------------------------
    @property
    def lm(self) -> Any:
        if self._lm is None:
            from shared_core.models.loading import load_causal_lm

            self._lm = load_causal_lm(None, device="cpu")
        return self._lm

    @property
    def embedder(self) -> Any:
        if self._embedder is None:
            from shared_core.retrieval.embeddings import Embedder

            self._embedder = Embedder.load(None, device="cpu")
        return self._embedder

    @property
    def prompts(self) -> Any:
        if self._prompts is None:
            from shared_core.prompts import get_prompts

            self._prompts = get_prompts("en")
        return self._prompts

    @property
    def chunker(self) -> Any:
        if self._chunker is None:
            from shared_core.config import MemoRAGConfig
            from shared_core.parts import make_chunker

            self._chunker = make_chunker(MemoRAGConfig(), self.embedder)  # the pipeline's
        return self._chunker

    def plain_generator(self) -> Any:
        if self._generator is None:
            from shared_core.models.generation import LocalGenerator

            self._generator = LocalGenerator(self.lm.model, self.lm.tokenizer, name=self.lm.name)
        return self._generator

    @property
    def model_names(self) -> dict[str, str]:
        from shared_core.models.loading import DEFAULT_LM_NAME
        from shared_core.retrieval.embeddings import DEFAULT_EMBEDDER_NAME

        return {"llm": DEFAULT_LM_NAME, "embedder": DEFAULT_EMBEDDER_NAME}

    def identity(self, *parts: Any) -> str:
        """Cache identity: default model names + engine code hash + ``parts``."""
        return _sha(self.model_names, code_fingerprint(), *parts)

    def plain(self) -> CachedGenerator:
        """The memory-free generator (HyDE, rewrites, answers, the blind control)."""
        return CachedGenerator(
            self.identity("plain"),
            self.cache,
            self.plain_generator,
            self.log,
            stop_ids=self.stop_ids,
        )

    def stop_ids(self) -> set[int]:
        """End-of-reply token ids of the default model (as every generator of it uses)."""
        from shared_core.models.decoding import eos_ids

        return eos_ids(self.lm.model, self.lm.tokenizer)

    # -- chunks and vectors -----------------------------------------------------------------
    def chunks_of(self, docs: Sequence[Document]) -> list[Chunk]:
        return self.chunker.split(list(docs))

    def vectors_of(self, chunks: Sequence[Chunk]) -> np.ndarray:
        """Passage vectors, cached by chunk text (in memory and under the cache dir)."""
        missing = [c for c in chunks if _sha(c.text) not in self._vectors]
        if missing and self.cache_dir is not None:
            self._load_vectors()
            missing = [c for c in chunks if _sha(c.text) not in self._vectors]
        if missing:
            texts = list(dict.fromkeys(c.text for c in missing))
            vecs = self.embedder.embed_passages(texts)
            for text, vec in zip(texts, vecs, strict=True):
                self._vectors[_sha(text)] = vec
            self._save_vectors()
        return np.stack([self._vectors[_sha(c.text)] for c in chunks]).astype(np.float32)

    def _vector_file(self) -> Path | None:
        if self.cache_dir is None:
            return None
        return self.cache_dir / f"vectors-{_sha(self.model_names['embedder'])[:12]}.npz"

    def _load_vectors(self) -> None:
        path = self._vector_file()
        if path is not None and path.is_file() and not getattr(self, "_vectors_loaded", False):
            with np.load(path) as data:
                for key in data.files:
                    self._vectors.setdefault(key, data[key])
            self._vectors_loaded = True

    def _save_vectors(self) -> None:
        path = self._vector_file()
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, **self._vectors)
        os.replace(tmp, path)

    # -- clue writers -------------------------------------------------------------------------
    def clue_writer(self, strategy: str) -> ClueWriter:
        """The engine's writer for ``strategy`` (``clue_tokens`` shortens every one: smoke)."""
        if self.clue_tokens is None:
            return make_clue_writer(strategy, self.prompts)
        kinds = {"span": SpanClues, "surrogate": SurrogateClues, "answer": DraftAnswerClues}
        writers: list[Any] = []
        for name in strategy.split("+"):
            if name == "copy":
                span = max(4, self.clue_tokens // 2)
                writers.append(
                    SpanClues(
                        prompts=self.prompts,
                        copy_from_text=True,
                        copy_min_tokens=min(4, span),
                        copy_max_tokens=span,
                    )
                )
            else:
                writers.append(kinds[name](prompts=self.prompts, max_new_tokens=self.clue_tokens))
        return writers[0] if len(writers) == 1 else CompositeClueWriter(writers)

    def copy_source(self, texts: Sequence[str]) -> CopySource:
        """The scope's passages in the memory model's tokens (for copy-from-text clues)."""
        key = _sha(list(texts))
        if key not in self._copy_sources:
            self._copy_sources.clear()  # one scope at a time
            self._copy_sources[key] = CopySource.from_texts(list(texts), self.lm.tokenizer)
        return self._copy_sources[key]

    # -- memories -----------------------------------------------------------------------------
    def memory(self, docs: Sequence[Document], backend: str, ratio: int) -> MemoryHandle:
        """A lazily built memory of ``docs``; raises ``LimitError`` if it is known refused."""
        text = "\n\n".join(d.text for d in docs)
        ident = self.identity(
            "memory",
            backend,
            ratio,
            2048,
            "key_norm",
            _sha(text),
            self.prompts.memory_intro,
            self.prompts.memory_ack,
        )
        handle = MemoryHandle(self, ident, list(docs), backend, ratio)
        meta = self.cache.get(_sha("memory-meta", ident))
        if meta is not None:
            self.memory_records[ident] = meta
            if meta["status"] == "refused":
                raise LimitError(meta["error"])
        else:
            handle.build()  # first time: memorize now (or learn that it is refused)
        return handle


class MemoryHandle:
    """A memory built on first use: memorized, or loaded from the cache dir when saved."""

    def __init__(
        self, rt: Runtime, identity: str, docs: list[Document], backend: str, ratio: int
    ) -> None:
        self.rt = rt
        self.identity = identity
        self.docs = docs
        self.backend = backend
        self.ratio = ratio
        self._memory: Any = None

    @property
    def record(self) -> dict[str, Any]:
        return self.rt.memory_records.get(self.identity, {})

    def _new(self) -> Any:
        lm, prompts = self.rt.lm, self.rt.prompts
        if self.backend == "gist":
            from shared_core.memory.gist import GistMemory  # type: ignore[import-not-found]
            from shared_core.models.generation import LocalGenerator

            generator = LocalGenerator(lm.model, lm.tokenizer, name=lm.name)
            return GistMemory(
                generator, prompts=prompts, intro=prompts.memory_intro, ack=prompts.memory_ack
            )
        from shared_core.memory import CompressedKVMemory

        return CompressedKVMemory(
            lm.model,
            lm.tokenizer,
            name=lm.name,
            revision=lm.revision,
            beacon_ratio=self.ratio,
            window=2048,
            scorer="key_norm",
            intro=prompts.memory_intro,
            ack=prompts.memory_ack,
        )

    def _save_dir(self) -> Path | None:
        if self.rt.cache_dir is None:
            return None
        return self.rt.cache_dir / "memories" / self.identity[:24]

    def build(self) -> Any:
        if self._memory is not None:
            return self._memory
        memory = self._new()
        folder = self._save_dir()
        meta_key = _sha("memory-meta", self.identity)
        if folder is not None and folder.is_dir() and any(folder.iterdir()):
            memory.load(folder)
            self._memory = memory
            return memory
        try:
            stats = memory.memorize(self.docs)
        except LimitError as exc:
            meta = {
                "status": "refused",
                "error": str(exc),
                "backend": self.backend,
                "ratio": self.ratio,
            }
            self.rt.cache.put(meta_key, meta)
            self.rt.memory_records[self.identity] = meta
            raise
        record = stats.as_dict()
        meta = {
            "status": "ok",
            "backend": self.backend,
            "ratio": self.ratio,
            "stats": {k: v for k, v in record.items() if k != "extra"},
            "extra": {k: str(v) for k, v in record.get("extra", {}).items()},
        }
        self.rt.cache.put(meta_key, meta)
        self.rt.memory_records[self.identity] = meta
        if folder is not None and stats.tokens_read >= PERSIST_TOKENS:
            memory.save(folder, overwrite=True)
        self._memory = memory
        return memory

    def generator(self) -> CachedGenerator:
        return CachedGenerator(
            self.identity,
            self.rt.cache,
            self.build,
            self.rt.log,
            stop_ids=self.rt.stop_ids,
            copies=self.backend != "gist",
        )

    def release(self) -> None:
        self._memory = None


# ============================================================================ search
