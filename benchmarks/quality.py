"""Quality suite: evidence recall and answer quality of MemoRAG against dense, BM25, HyDE and
multi-query retrieval, with ablations and the diagnostics that explain them.

Every method shares one embedder (all-MiniLM-L6-v2), one chunking (the pipeline's own
``TokenChunker``: 256-token chunks, 32 overlap; every source document is chunked on its own, so
HotpotQA/MuSiQue chunks are paragraphs) and one small LLM (SmolLM2-135M-Instruct) for clue
writing, HyDE, rewrites and answers. Every method runs through ``MemoRAG.retrieve`` with the same
fusion (the pipeline's default, ``interleave``: round-robin over the keys' hit lists, the raw
query first; 10 hits per key) unless its name says otherwise:

- ``dense`` / ``bm25``: the query alone, on the dense index / on BM25 over the same chunks;
- ``hyde``: the query + one passage the model drafts without the corpus;
- ``multi_query``: the query + 3 rewrites written without the corpus;
- ``memorag``: the pipeline's defaults: the query + clues (``copy+surrogate``: evidence spans
  the memory copies from the text, and surrogate questions) written by a compressed-KV memory
  of the context at ratio 4 (the smallest ratio that fits when 4 is refused), each clue searched
  anchored to the query (``query + the clue's new words``);
- ablations: ratio 1 (full KV), ratio 8, gist memory, each clue kind alone, all three kinds,
  free-written clues, clues searched unanchored, RRF fusion (the round-1 defaults: free clues,
  unanchored, RRF), and ``blind``: the same clue writers run by the model *without* the memory
  (isolates what having read the corpus adds).

Settings: ``context`` (each question's own context: its 10/20 paragraphs, its meeting, the whole
novel) and ``pooled`` (every paragraph of the set memorized as one long text and searched as one
index; HotpotQA/MuSiQue only: QMSum is one meeting per query, the novel is one document).

Model outputs are greedy, hence deterministic: every generation is cached by (model, code,
memory, prompt) under ``benchmarks/.cache/`` together with the seconds it took, so reruns skip
the model; big memories are saved there too. ``--no-cache`` recomputes everything.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import re
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.baselines import BM25Backend, hyde_queries, multi_query
from benchmarks.datasets import BenchQuestion, BenchSet, load_set
from benchmarks.metrics import (
    all_hit_at_k,
    bootstrap_diff_ci,
    contains_answer,
    evidence_hits,
    exact_match,
    list_item_f1,
    mrr,
    recall_at_k,
    rouge_l,
    rouge_n,
    spans_of,
    token_f1,
)
from shared_core.clues import (
    ClueWriter,
    CompositeClueWriter,
    DraftAnswerClues,
    SpanClues,
    SurrogateClues,
    make_clue_writer,
)
from shared_core.clues.copying import CopySource
from shared_core.errors import LimitError
from shared_core.models.generation import format_passages
from shared_core.retrieval.fusion import fuse
from shared_core.types import ChatTurn, Chunk, Clue, Document, Generation, Hit, Passage

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
DEFAULT_CACHE = REPO / "benchmarks" / ".cache"

#: Questions per set with ``--limit`` unset (sized for < 1 h on 2 CPU cores, see docs).
DEFAULT_LIMITS: dict[str, int] = {
    "hotpotqa": 12,
    "musique": 8,
    "qmsum": 6,
    "longbook_needles": 10,
}
#: Fallback for a data folder with another name.
DEFAULT_LIMIT = 8
#: Paid ablations (new memories or generations) run on the first N questions of the tuning
#: sets only; the free ones (clue kinds that ``memorag`` already wrote) run everywhere.
DEFAULT_ABLATION_LIMITS: dict[str, int] = {"hotpotqa": 6, "qmsum": 3}
#: The gist memory writes a summary per 1k tokens: the costliest ablation (HotpotQA only).
GIST_LIMITS: dict[str, int] = {"hotpotqa": 4}
#: Answers are generated for the first N questions of each sample.
DEFAULT_GEN_LIMIT = 6
#: Sets whose numbers may be used to choose settings; the others are the untuned check.
TUNED_SETS = ("hotpotqa", "qmsum")
KS = (2, 5, 10)
DEPTH = 10  # fused list length = max k
GEN_K = 3  # passages shown to the generator
QUERY_WEIGHT = 2.0  # the pipeline default
SWEEP_WEIGHTS = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0)
RATIO_LADDER = (1, 2, 4, 8, 16, 32, 64)
#: Memories of more text tokens than this are saved to the cache (smaller ones are re-read).
PERSIST_TOKENS = 24_000


# ============================================================================ methods


@dataclass(frozen=True)
class Method:
    """One retrieval method. ``keys`` says where the extra retrieval keys come from."""

    name: str
    family: str  # baseline | memorag | ablation
    keys: str  # none | hyde | multi_query | clues
    search: str = "dense"  # dense | bm25
    clue_strategy: str = "copy+surrogate"  # the pipeline's default
    fusion: str | None = None  # None: the pipeline's default (interleave)
    memory: str = "compressed_kv"  # compressed_kv | gist | blind (no memory)
    ratio: int = 4
    fallback: bool = False  # use the next ratio that fits when ``ratio`` is refused
    generate: bool = False  # answer questions with this method's passages
    anchored: bool = True  # clues searched as ``query + their new words`` (pipeline default)
    description: str = ""

    @property
    def limited(self) -> bool:
        """Runs on the ablation subset only (costs model time beyond the main methods)."""
        return self.family in ("ablation", "fix") and self.name not in FREE_ABLATIONS


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("dense", "baseline", "none", generate=True, description="query only, dense"),
        Method("bm25", "baseline", "none", "bm25", generate=True, description="query only, BM25"),
        Method(
            "hyde",
            "baseline",
            "hyde",
            generate=True,
            description="query + a passage drafted without the corpus",
        ),
        Method(
            "multi_query",
            "baseline",
            "multi_query",
            generate=True,
            description="query + 3 rewrites written without the corpus",
        ),
        Method(
            "memorag",
            "memorag",
            "clues",
            fallback=True,
            generate=True,
            description="the pipeline's defaults: copied-span and surrogate clues from the "
            "compressed memory (ratio 4), each searched anchored to the query, interleaved",
        ),
        Method(
            "memorag_r1",
            "ablation",
            "clues",
            memory="compressed_kv",
            ratio=1,
            description="full KV memory (ratio 1)",
        ),
        Method("memorag_r8", "ablation", "clues", ratio=8, description="memory at ratio 8"),
        Method("memorag_gist", "ablation", "clues", memory="gist", description="gist memory"),
        Method(
            "memorag_span",
            "ablation",
            "clues",
            clue_strategy="span",
            fallback=True,
            description="free-written span clues only (no copying)",
        ),
        Method(
            "memorag_surrogate",
            "ablation",
            "clues",
            clue_strategy="surrogate",
            fallback=True,
            description="surrogate questions only",
        ),
        Method(
            "memorag_answer",
            "ablation",
            "clues",
            clue_strategy="answer",
            fallback=True,
            description="draft answer only",
        ),
        Method(
            "memorag_all",
            "ablation",
            "clues",
            clue_strategy="copy+surrogate+answer",
            fallback=True,
            description="all three clue kinds",
        ),
        Method(
            "blind",
            "ablation",
            "clues",
            memory="blind",
            description="the same clue writers (spans still copied from the text), model "
            "without the memory",
        ),
        Method(
            "memorag_free",
            "ablation",
            "clues",
            clue_strategy="span+surrogate",
            fallback=True,
            description="free-written span + surrogate clues (no copying), anchored, interleaved",
        ),
        Method(
            "memorag_rrf",
            "ablation",
            "clues",
            fusion="rrf",
            fallback=True,
            description="memorag's keys fused by weighted RRF (query 2, k=60) instead of "
            "interleaving",
        ),
        Method(
            "memorag_unanchored",
            "ablation",
            "clues",
            anchored=False,
            fallback=True,
            description="memorag's clues searched on their own, not anchored (the first "
            "round-2 default)",
        ),
        Method(
            "memorag_free_rrf",
            "ablation",
            "clues",
            clue_strategy="span+surrogate",
            fusion="rrf",
            anchored=False,
            fallback=True,
            description="round-1 defaults: free-written clues searched alone, RRF",
        ),
        Method(
            "memorag_copy_only",
            "fix",
            "clues",
            clue_strategy="copy",
            fallback=True,
            description="copied span clues only",
        ),
    )
}
#: Ablations whose clues are a subset of ``memorag``'s (cached): free, so run on every question.
FREE_ABLATIONS = (
    "memorag_surrogate",
    "memorag_copy_only",
    "memorag_unanchored",
    "memorag_rrf",
)
MAIN_METHODS = ("dense", "bm25", "hyde", "multi_query", "memorag")
ABLATIONS = tuple(name for name, m in METHODS.items() if m.family in ("ablation", "fix"))
#: Methods run in the pooled setting (memory-free keys are shared with the context setting).
POOLED_METHODS = (*MAIN_METHODS, *FREE_ABLATIONS)


# ============================================================================ caching


def _sha(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


@functools.cache
def code_fingerprint() -> str:
    """Hash of the engine code whose changes change generations (memory, decoding, models),
    read once: the code this process imported, even if the files change while it runs."""
    root = REPO / "shared_core"
    files = sorted(
        [
            *root.glob("memory/*.py"),
            root / "copying.py",
            root / "decoding.py",
            root / "generation.py",
            root / "models.py",
        ]
    )
    h = hashlib.sha256()
    for path in files:
        if path.is_file():
            h.update(path.name.encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


class GenCache:
    """Generations and memory outcomes, keyed by sha256; a JSONL file (``None``: this run only)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.entries: dict[str, dict[str, Any]] = {}
        if path is not None and path.is_file():
            with path.open(encoding="utf-8") as fh:
                for line in fh:
                    try:
                        row = json.loads(line)
                        self.entries[row["key"]] = row["value"]
                    except (json.JSONDecodeError, KeyError, TypeError):
                        continue  # a line cut short by an interrupted run

    def get(self, key: str) -> dict[str, Any] | None:
        return self.entries.get(key)

    def put(self, key: str, value: dict[str, Any]) -> None:
        self.entries[key] = value
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps({"key": key, "value": value}, ensure_ascii=False) + "\n")


@dataclass
class CallLog:
    """Every generation asked for during one method's run: (seconds, cached, tokens)."""

    calls: list[tuple[float, bool, int]] = field(default_factory=list)

    def mark(self) -> int:
        return len(self.calls)

    def since(self, mark: int) -> tuple[float, int, bool]:
        """(seconds, completion tokens, all from the cache) of the calls after ``mark``; a run
        with no calls is not "cached"."""
        part = self.calls[mark:]
        return (
            sum(c[0] for c in part),
            sum(c[2] for c in part),
            bool(part) and all(c[1] for c in part),
        )


class CachedGenerator:
    """A ``TextGenerator`` that answers from the cache, else from ``source()`` (built lazily)."""

    def __init__(
        self,
        identity: str,
        cache: GenCache,
        source: Callable[[], Any],
        log: CallLog,
        *,
        stop_ids: Callable[[], set[int]] | None = None,
        copies: bool = True,
    ) -> None:
        self.identity = identity
        self.stop_ids = stop_ids or (lambda: source().end_ids)
        self.cache = cache
        self.source = source
        self.log = log
        self.supports_copying = copies  # the source decodes under a constraint

    def generate(
        self,
        prompt: str,
        *,
        history: Sequence[ChatTurn] = (),
        max_new_tokens: int = 256,
        stop: Sequence[str] = (),
        temperature: float = 0.0,
    ) -> Generation:
        turns = [[t.role, t.content] for t in history]
        key = _sha("gen", self.identity, prompt, turns, max_new_tokens, list(stop), temperature)
        return self._cached(
            key,
            lambda g: g.generate(
                prompt,
                history=history,
                max_new_tokens=max_new_tokens,
                stop=stop,
                temperature=temperature,
            ),
        )

    def _cached(self, key: str, produce: Callable[[Any], Generation]) -> Generation:
        """The cached generation under ``key``, else ``produce(source())`` timed and stored."""
        hit = self.cache.get(key)
        cached = hit is not None
        if hit is None:
            generator = self.source()
            started = time.perf_counter()
            out = produce(generator)
            hit = {
                "text": out.text,
                "prompt_tokens": out.prompt_tokens,
                "completion_tokens": out.completion_tokens,
                "finish_reason": out.finish_reason,
                "seconds": time.perf_counter() - started,
            }
            self.cache.put(key, hit)
        self.log.calls.append((float(hit["seconds"]), cached, int(hit["completion_tokens"])))
        return Generation(
            text=hit["text"],
            prompt_tokens=hit["prompt_tokens"],
            completion_tokens=hit["completion_tokens"],
            finish_reason=hit["finish_reason"],
        )

    def stream(self, prompt: str, **kw: Any) -> Any:
        yield self.generate(prompt, **kw).text

    @property
    def end_ids(self) -> set[int]:
        """The model's end-of-reply ids, without building the source (a cache hit needs none)."""
        return self.stop_ids()

    def generate_constrained(
        self,
        prompt: str,
        constraint: Any,
        *,
        history: Sequence[ChatTurn] = (),
        max_new_tokens: int = 256,
    ) -> Generation:
        """``generate`` under a ``SpanCopier``, cached by the copier's source and settings."""
        turns = [[t.role, t.content] for t in history]
        src = constraint.source
        shape = [constraint.max_spans, constraint.min_tokens, constraint.max_tokens]
        fingerprint = hashlib.sha256(src.ids.tobytes() + src.starts.tobytes()).hexdigest()
        key = _sha("copy", self.identity, prompt, turns, max_new_tokens, shape, fingerprint)
        return self._cached(
            key,
            lambda g: g.generate_constrained(
                prompt, constraint, history=history, max_new_tokens=max_new_tokens
            ),
        )


class _Blind:
    """Stands in for a memory where a method writes no clues (never called)."""

    def generate(self, *args: Any, **kw: Any) -> Generation:  # pragma: no cover - guard
        raise RuntimeError("a memory-free method asked the memory for a generation")


# ============================================================================ copy sources


@dataclass
class SourcedClues:
    """Hands ``source`` (the scope's text as a ``CopySource``) to a copy-from-text writer, as
    ``MemoRAG`` does from its own index (the benchmark searches external backends)."""

    inner: Any
    source: CopySource

    def write(self, query: str, memory: Any, *, history: Sequence[ChatTurn] = ()) -> list[Clue]:
        return self.inner.write(query, memory, history=history, source=self.source)


# ============================================================================ runtime


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
            from shared_core.pipeline import MemoRAG

            self._chunker = MemoRAG(embedder=self.embedder, memory=_Blind()).chunker  # type: ignore[arg-type]
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


class VectorBackend:
    """Exact cosine search over precomputed chunk vectors (the ``DenseIndex`` computation on a
    subset of a set's chunks, so each question's corpus needs no re-embedding)."""

    def __init__(self, chunks: Sequence[Chunk], vectors: np.ndarray, embedder: Any) -> None:
        self.chunks = list(chunks)
        self.vectors = vectors
        self.embedder = embedder
        self._passages = [_passage(c) for c in self.chunks]

    def __len__(self) -> int:
        return len(self.chunks)

    def search(self, query: str, k: int) -> list[Hit]:
        return self.search_many([query], k)[0]

    def search_many(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        if not queries:
            return []
        q = self.embedder.embed_queries(list(queries))
        scores = q @ self.vectors.T
        out = []
        for row in scores:
            order = np.argsort(-row, kind="stable")[:k]
            out.append(
                [Hit(self._passages[i], float(row[i]), rank) for rank, i in enumerate(order)]
            )
        return out


def _passage(chunk: Chunk) -> Passage:
    meta = {
        **chunk.metadata,
        "doc_id": chunk.doc_id,
        "start": chunk.start,
        "end": chunk.end,
        "chunk_id": chunk.chunk_id,
    }
    return Passage(id=chunk.chunk_id, text=chunk.text, metadata=meta)


# ============================================================================ scoring


def retrieval_scores(passages: Sequence[Any], question: BenchQuestion) -> dict[str, Any]:
    """Ranks of each gold item and recall@k / all@k / MRR (``nan`` without gold)."""
    spans = spans_of(passages)
    ranks = evidence_hits(spans, question.gold)
    row: dict[str, Any] = {"ranks": ranks}
    for k in KS:
        row[f"recall@{k}"] = recall_at_k(ranks, k)
        row[f"all@{k}"] = all_hit_at_k(ranks, k)
    row["mrr"] = mrr(ranks)
    return row


def answer_scores(prediction: str, question: BenchQuestion, kind: str) -> dict[str, float]:
    if kind == "meeting":
        return {
            "rouge1": max(rouge_n(prediction, a, 1) for a in question.answers),
            "rouge2": max(rouge_n(prediction, a, 2) for a in question.answers),
            "rougeL": max(rouge_l(prediction, a) for a in question.answers),
        }
    scores = {
        "em": exact_match(prediction, question.answers),
        "f1": token_f1(prediction, question.answers),
        "contains": contains_answer(prediction, question.answers),
    }
    if question.type == "aggregation_list":
        scores["f1"] = list_item_f1(prediction, question.answers)
        scores["contains"] = float(scores["f1"] == 1.0)
    return scores


_WORDS = re.compile(r"[a-z0-9]+")


def _grams(text: str, n: int = 3) -> set[tuple[str, ...]]:
    words = _WORDS.findall(text.lower())
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def copy_rate(clue: str, context_grams: set[tuple[str, ...]]) -> float:
    """Share of the clue's word trigrams found in the memorized text (1.0: copied)."""
    grams = _grams(clue)
    if not grams:
        return math.nan
    return sum(1 for g in grams if g in context_grams) / len(grams)


# ============================================================================ running


@dataclass
class SetRun:
    """One (set, setting): its questions, per-question rows and notes."""

    name: str
    kind: str
    setting: str
    tuned: bool
    questions: list[BenchQuestion]
    rows: list[dict[str, Any]] = field(default_factory=list)
    refusals: list[dict[str, Any]] = field(default_factory=list)
    memories: dict[str, dict[str, Any]] = field(default_factory=dict)


def _scope_docs(bench: BenchSet, q: BenchQuestion, setting: str) -> list[Document]:
    return list(bench.documents) if setting == "pooled" else bench.scoped_documents(q)


def _keys_for(rt: Runtime, method: Method, question: str) -> list[str]:
    if method.keys == "hyde":
        return hyde_queries(question, rt.plain(), max_new_tokens=rt.hyde_tokens)
    if method.keys == "multi_query":
        return multi_query(question, rt.plain(), n=3, max_new_tokens=rt.mq_tokens)
    return []


def _resolve_memory(
    rt: Runtime,
    docs: Sequence[Document],
    method: Method,
    refusals: list[dict[str, Any]],
    handles: dict[tuple[str, int], MemoryHandle | str],
    scope: str,
) -> MemoryHandle | None:
    """The method's memory, walking up the ratio ladder when allowed; ``None`` if refused.

    ``handles`` remembers, per scope, each (back-end, ratio) built or refused; a refusal is
    recorded once per scope."""
    backend = method.memory
    ratios = [method.ratio]
    if method.fallback:
        ratios += [r for r in RATIO_LADDER if r > method.ratio]
    for ratio in ratios:
        key = (backend, ratio if backend == "compressed_kv" else 0)
        known = handles.get(key)
        if isinstance(known, MemoryHandle):
            return known
        if isinstance(known, str):
            if known.startswith("not available"):
                return None
            continue
        try:
            handle = rt.memory(docs, backend, ratio)
        except LimitError as exc:
            handles[key] = str(exc).splitlines()[0][:300]
        except (ImportError, TypeError) as exc:
            handles[key] = f"not available: {exc}"
        else:
            handles[key] = handle
            return handle
        refusals.append(
            {
                "scope": scope,
                "method": method.name,
                "backend": backend,
                "ratio": ratio,
                "error": handles[key],
            }
        )
        if handles[key].startswith("not available"):  # type: ignore[union-attr]
            return None
    return None


def run_method(
    rt: Runtime,
    method: Method,
    q: BenchQuestion,
    backends: Mapping[str, Any],
    memory: MemoryHandle | None,
) -> tuple[Any, dict[str, float], bool]:
    """Retrieve ``DEPTH`` passages for ``q`` with ``method`` through ``MemoRAG.retrieve``.

    Returns the result, the timings (clue/key writing seconds are the generations' own
    seconds, cached or not) and whether every generation came from the cache.
    """
    from shared_core.pipeline import MemoRAG

    mark = rt.log.mark()
    started = time.perf_counter()
    extra = _keys_for(rt, method, q.question)
    key_seconds = time.perf_counter() - started
    if method.keys == "clues":
        source: Any = rt.plain() if method.memory == "blind" else memory.generator()  # type: ignore[union-attr]
        writer: Any = rt.clue_writer(method.clue_strategy)
        if getattr(writer, "uses_source", False):
            writer = SourcedClues(writer, rt.copy_source(backends["texts"]))
        pipe = MemoRAG(
            memory=source,
            embedder=rt.embedder,
            query_weight=QUERY_WEIGHT,
            clue_strategy=writer,
            anchor_clues=method.anchored,
            **({"fusion": method.fusion} if method.fusion else {}),
        )
    else:
        pipe = MemoRAG(
            memory=_Blind(),
            embedder=rt.embedder,
            query_weight=QUERY_WEIGHT,  # type: ignore[arg-type]
            clue_strategy="none",
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = pipe.retrieve(
            q.question, DEPTH, search=backends[method.search], extra_queries=extra
        )
    gen_seconds, tokens, cached = rt.log.since(mark)
    timings = dict(result.timings)
    # Key writing = the model's generation seconds, as measured when generated (a cache hit
    # reports the original measurement); parsing adds milliseconds.
    timings["clues"] = gen_seconds + (0.0 if gen_seconds else key_seconds)
    timings["clue_tokens"] = float(tokens)
    return result, timings, cached


def _answer(
    rt: Runtime, q: BenchQuestion, passages: Sequence[Any], kind: str
) -> tuple[str, float, bool]:
    prompt = rt.prompts.answer.format(
        context=format_passages(list(passages)[:GEN_K]), question=q.question
    )
    tokens = rt.summary_tokens if kind == "meeting" else rt.qa_tokens
    mark = rt.log.mark()
    out = rt.plain().generate(prompt, max_new_tokens=tokens)
    seconds, _, cached = rt.log.since(mark)
    return out.text.strip(), seconds, cached


def _diagnose(
    result: Any, q: BenchQuestion, backend: Any, context_grams: set[tuple[str, ...]]
) -> dict[str, Any]:
    """Per-key hit lists of a clue method: each clue alone, and the query-weight sweep."""
    keys = list(result.clues)
    lists = backend.search_many([k.text for k in keys], DEPTH) if keys else []
    query_ranks: list[int] = []
    for key, hits in zip(keys, lists, strict=True):
        if key.kind == "query":
            query_ranks = retrieval_scores(hits, q)["ranks"]
    clues = []
    for key, hits in zip(keys, lists, strict=True):
        if key.kind == "query":
            continue
        scores = retrieval_scores(hits, q)
        new_gold = any(
            0 < r <= 5 and not (i < len(query_ranks) and 0 < query_ranks[i] <= 5)
            for i, r in enumerate(scores["ranks"])
        )
        clues.append(
            {
                "kind": key.kind,
                "text": key.text,
                "copy_rate": copy_rate(key.text, context_grams),
                "recall@5": scores["recall@5"],
                "new_gold@5": new_gold,
            }
        )
    sweep = {}
    for weight in SWEEP_WEIGHTS:
        pairs = []
        for key, hits in zip(keys, lists, strict=True):
            if key.kind == "query":
                if weight > 0:
                    pairs.append((Clue(key.text, "query", weight), hits))
            else:
                pairs.append((key, hits))
        fused = fuse(pairs, DEPTH) if pairs else []
        scores = retrieval_scores(fused, q)
        sweep[str(weight)] = {"recall@5": scores["recall@5"], "mrr": scores["mrr"]}
    # The engine's other fusion: round-robin over the lists, heaviest first.
    pairs = list(zip(keys, lists, strict=True))
    fused = fuse(pairs, DEPTH, method="interleave") if pairs else []
    scores = retrieval_scores(fused, q)
    sweep["interleave"] = {"recall@5": scores["recall@5"], "mrr": scores["mrr"]}
    return {"clues": clues, "sweep": sweep}


def run_set(
    rt: Runtime,
    bench: BenchSet,
    setting: str,
    methods: Sequence[str],
    *,
    ablation_limit: int,
    gen_limit: int,
    progress: Callable[[str], None] = print,
) -> SetRun:
    """Every method on every question of ``bench`` in ``setting``."""
    run = SetRun(bench.name, bench.kind, setting, bench.name in TUNED_SETS, list(bench.questions))
    needed: dict[str, Document] = {}
    for q in bench.questions:
        for d in _scope_docs(bench, q, setting):
            needed.setdefault(d.doc_id or "", d)
    chunks = rt.chunks_of(list(needed.values()))
    by_doc: dict[str, list[int]] = {}
    for i, c in enumerate(chunks):
        by_doc.setdefault(c.doc_id, []).append(i)
    vectors = rt.vectors_of(chunks)
    shared_handles: dict[str, dict[tuple[str, int], MemoryHandle | str]] = {}
    shared_backends: dict[str, dict[str, Any]] = {}
    for qi, q in enumerate(bench.questions):
        docs = _scope_docs(bench, q, setting)
        scope = "pooled" if setting == "pooled" else "|".join(d.doc_id or "" for d in docs)
        if scope not in shared_backends:
            idx = [i for d in docs for i in by_doc[d.doc_id or ""]]
            sub = [chunks[i] for i in idx]
            shared_backends = {
                scope: {
                    "dense": VectorBackend(sub, vectors[idx], rt.embedder),
                    "bm25": BM25Backend(sub),
                    "grams": _grams("\n\n".join(d.text for d in docs)),
                    "texts": [c.text for c in sub],
                }
            }
            for handles in shared_handles.values():
                for handle in handles.values():
                    if isinstance(handle, MemoryHandle):
                        handle.release()
            shared_handles = {scope: {}}
        backends = shared_backends[scope]
        handles = shared_handles[scope]
        for name in methods:
            method = METHODS[name]
            cap = ablation_limit
            if method.memory == "gist":
                cap = min(cap, GIST_LIMITS.get(bench.name, 0))
            if method.limited and qi >= cap:
                continue
            memory = None
            if method.keys == "clues" and method.memory != "blind":
                memory = _resolve_memory(
                    rt,
                    docs,
                    method,
                    run.refusals,
                    handles,
                    scope if setting != "pooled" else "pooled",
                )
                if memory is None:
                    continue
            started = time.perf_counter()
            result, timings, cached = run_method(rt, method, q, backends, memory)
            row: dict[str, Any] = {
                "set": bench.name,
                "setting": setting,
                "question_id": q.id,
                "type": q.type,
                "method": name,
                "question_index": qi,
                "ratio": memory.ratio if memory is not None else None,
                "retrieved": [p.passage.id for p in result.passages],
                "keys": [
                    {"kind": c.kind, "text": c.text, "weight": c.weight} for c in result.clues
                ],
                "cached": cached,
                **retrieval_scores(result.passages, q),
            }
            if method.keys == "clues":
                row["diagnostics"] = _diagnose(result, q, backends["dense"], backends["grams"])
            if method.generate and qi < gen_limit:
                answer, seconds, gen_cached = _answer(rt, q, result.passages, bench.kind)
                timings["generation"] = seconds
                row["answer"] = answer
                row["cached"] = cached and gen_cached
                row.update(answer_scores(answer, q, bench.kind))
            row["timings"] = timings
            run.rows.append(row)
            progress(
                f"  [{bench.name}/{setting}] q{qi + 1}/{len(bench.questions)} {name:<18} "
                f"R@5={_fmt(row['recall@5'])} mrr={_fmt(row['mrr'])} "
                f"({time.perf_counter() - started:.1f}s{', cached' if row['cached'] else ''})"
            )
        for handle in handles.values():
            if isinstance(handle, MemoryHandle) and handle.record:
                run.memories[f"{handle.backend}-r{handle.ratio}:{scope[:60]}"] = handle.record
    return run


def _fmt(x: float) -> str:
    return "  -  " if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2f}"


# ============================================================================ aggregation

RETRIEVAL_METRICS = (*(f"recall@{k}" for k in KS), "all@5", "mrr")
ANSWER_METRICS = ("em", "f1", "contains", "rouge1", "rouge2", "rougeL")
TIMING_PARTS = ("clues", "search", "fusion", "generation")


def _mean(values: Iterable[float]) -> float | None:
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return float(np.mean(vals)) if vals else None


def summarize(run: SetRun, seed: int = 0) -> dict[str, Any]:
    """Per-method means, paired bootstrap CIs against dense, timings and diagnostics."""
    by_method: dict[str, dict[str, dict[str, Any]]] = {}
    for row in run.rows:
        by_method.setdefault(row["method"], {})[row["question_id"]] = row
    dense = by_method.get("dense", {})
    methods: dict[str, Any] = {}
    for name, rows in by_method.items():
        entry: dict[str, Any] = {
            "n": len(rows),
            "description": METHODS[name].description,
            "family": METHODS[name].family,
        }
        ratios = sorted({r["ratio"] for r in rows.values() if r["ratio"] is not None})
        entry["ratio"] = ratios
        for metric in (*RETRIEVAL_METRICS, *ANSWER_METRICS):
            vals = [r.get(metric) for r in rows.values()]
            mean = _mean(v for v in vals if v is not None)
            if mean is None:
                continue
            entry[metric] = mean
            entry[f"n_{metric}"] = sum(
                1 for v in vals if v is not None and not (isinstance(v, float) and math.isnan(v))
            )
            if name == "dense":
                continue
            pairs = [
                (r[metric], dense[qid][metric])
                for qid, r in rows.items()
                if qid in dense and _defined(r.get(metric)) and _defined(dense[qid].get(metric))
            ]
            if pairs:
                a, b = zip(*pairs, strict=True)
                diff, lo, hi = bootstrap_diff_ci(a, b, seed=seed)
                entry[f"delta_{metric}"] = {
                    "mean": diff,
                    "lo": lo,
                    "hi": hi,
                    "n": len(pairs),
                    "dense_mean": float(np.mean(b)),
                    "wins": sum(x > y for x, y in pairs),
                    "losses": sum(x < y for x, y in pairs),
                }
        timing: dict[str, float] = {}
        for part in (*TIMING_PARTS, "clue_tokens"):
            vals = [r["timings"].get(part) for r in rows.values() if part in r["timings"]]
            if vals:
                timing[part] = float(np.median(vals))
        entry["timings_median_s"] = timing
        diag = [r["diagnostics"] for r in rows.values() if "diagnostics" in r]
        if diag:
            entry["clue_stats"] = _clue_stats(diag)
        methods[name] = entry
    return {
        "set": run.name,
        "kind": run.kind,
        "setting": run.setting,
        "tuned": run.tuned,
        "questions": len(run.questions),
        "methods": methods,
        "refusals": run.refusals,
        "memories": run.memories,
    }


def _defined(v: Any) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def _clue_stats(diags: Sequence[dict[str, Any]]) -> dict[str, Any]:
    clues = [c for d in diags for c in d["clues"]]
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for c in clues:
        by_kind.setdefault(c["kind"], []).append(c)
    stats: dict[str, Any] = {
        "questions": len(diags),
        "clues_per_question": len(clues) / max(len(diags), 1),
        "no_clue_share": sum(1 for d in diags if not d["clues"]) / max(len(diags), 1),
        "by_kind": {},
        "sweep": {},
    }
    for kind, items in by_kind.items():
        stats["by_kind"][kind] = {
            "n": len(items),
            "copy_rate": _mean(c["copy_rate"] for c in items),
            "copied_share": _mean(
                float(c["copy_rate"] >= 0.8) for c in items if _defined(c["copy_rate"])
            ),
            "recall@5_alone": _mean(c["recall@5"] for c in items),
            "new_gold@5_share": _mean(float(c["new_gold@5"]) for c in items),
        }
    for weight in (*SWEEP_WEIGHTS, "interleave"):
        stats["sweep"][str(weight)] = {
            metric: _mean(d["sweep"][str(weight)][metric] for d in diags)
            for metric in ("recall@5", "mrr")
        }
    return stats


# ============================================================================ entry point


@dataclass
class QualityConfig:
    data: list[Path]
    limit: int | None = None
    settings: tuple[str, ...] = ("context", "pooled")
    methods: tuple[str, ...] = (*MAIN_METHODS, *ABLATIONS)
    ablation_limit: int | None = None  # None: DEFAULT_ABLATION_LIMITS
    gen_limit: int = DEFAULT_GEN_LIMIT
    seed: int = 0
    #: Sets run in the pooled setting when ``settings`` was not chosen explicitly (MuSiQue pooled:
    #: ``--settings pooled``; it adds ~8 min of memorizing).
    pooled_sets: tuple[str, ...] = ("hotpotqa",)
    explicit_settings: bool = False


def resolve_data(paths: Sequence[Path]) -> list[Path]:
    """Set folders from ``paths``: each is a set folder (with questions.jsonl) or holds some."""
    out: list[Path] = []
    for path in paths:
        if (path / "questions.jsonl").is_file():
            out.append(path)
        elif path.is_dir():
            out += sorted(p for p in path.iterdir() if (p / "questions.jsonl").is_file())
        else:
            raise FileNotFoundError(f"{path}: not a data folder")
    if not out:
        raise FileNotFoundError(f"no data folders (with questions.jsonl) under {list(paths)}")
    return out


def run_quality(
    rt: Runtime, cfg: QualityConfig, progress: Callable[[str], None] = print
) -> dict[str, Any]:
    """Run every set and setting; returns the JSON-ready results (summaries + rows)."""
    results: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    for folder in resolve_data(cfg.data):
        name = folder.resolve().name
        limit = cfg.limit if cfg.limit is not None else DEFAULT_LIMITS.get(name, DEFAULT_LIMIT)
        bench = load_set(folder, limit=limit, seed=cfg.seed)
        for setting in cfg.settings:
            if setting == "pooled" and (
                bench.kind != "paragraph_qa"
                or (name not in cfg.pooled_sets and not cfg.explicit_settings)
            ):
                continue
            methods = [m for m in cfg.methods if setting == "context" or m in POOLED_METHODS]
            progress(
                f"[{name}/{setting}] {len(bench.questions)} questions, "
                f"methods: {', '.join(methods)}"
            )
            started = time.perf_counter()
            run = run_set(
                rt,
                bench,
                setting,
                methods,
                ablation_limit=(
                    cfg.ablation_limit
                    if cfg.ablation_limit is not None
                    else DEFAULT_ABLATION_LIMITS.get(name, 0)
                ),
                gen_limit=cfg.gen_limit,
                progress=progress,
            )
            summary = summarize(run, seed=cfg.seed)
            summary["seconds"] = time.perf_counter() - started
            summary["data"] = str(folder)
            summary["limit"] = limit
            results.append(summary)
            rows += run.rows
    return {"sets": results, "rows": rows}


def with_defaults(cfg: QualityConfig, **kw: Any) -> QualityConfig:
    return replace(cfg, **kw)


# ============================================================================ report


def _pct(x: Any) -> str:
    return "–" if x is None else f"{x:.3f}"


def _delta(entry: Mapping[str, Any], metric: str) -> str:
    d = entry.get(f"delta_{metric}")
    if not d:
        return "–"
    mark = "**" if d["lo"] > 0 or d["hi"] < 0 else ""
    return f"{mark}{d['mean']:+.3f}{mark} [{d['lo']:+.2f}, {d['hi']:+.2f}]"


def render_markdown(results: Mapping[str, Any]) -> str:
    """Tables for every (set, setting): retrieval, answers, ablations, clue diagnostics."""
    out: list[str] = []
    for s in results["sets"]:
        tag = "tuning set" if s["tuned"] else "untuned check"
        out.append(f"### {s['set']} — {s['setting']} setting ({tag}, {s['questions']} questions)")
        out.append("")
        grouped: dict[tuple[str, int], list[dict[str, Any]]] = {}
        for r in s["refusals"]:
            grouped.setdefault((r["backend"], r["ratio"]), []).append(r)
        for (backend, ratio), items in grouped.items():
            scopes = len({r["scope"] for r in items})
            methods = ", ".join(sorted({r["method"] for r in items}))
            out.append(
                f"- refused: {backend} ratio {ratio} for {scopes} context(s) ({methods}): "
                f"{items[0]['error'][:170]}"
            )
        if s["refusals"]:
            out.append("")
        methods = s["methods"]
        out.append(
            "| method | ratio | n | R@2 | R@5 | R@10 | all@5 | MRR | ΔR@5 vs dense [95% CI] "
            "| ΔMRR vs dense [95% CI] |"
        )
        out.append("|---|---|---|---|---|---|---|---|---|---|")
        for name, e in methods.items():
            if "recall@5" not in e:
                continue
            ratio = ",".join(str(r) for r in e["ratio"]) or "–"
            out.append(
                f"| {name} | {ratio} | {e['n_recall@5']} | {_pct(e.get('recall@2'))} "
                f"| {_pct(e.get('recall@5'))} | {_pct(e.get('recall@10'))} "
                f"| {_pct(e.get('all@5'))} | {_pct(e.get('mrr'))} "
                f"| {_delta(e, 'recall@5')} | {_delta(e, 'mrr')} |"
            )
        out.append("")
        answer_metrics = (
            ("rouge1", "rouge2", "rougeL") if s["kind"] == "meeting" else ("em", "f1", "contains")
        )
        gen = {n: e for n, e in methods.items() if answer_metrics[1] in e}
        if gen:
            head = " | ".join(answer_metrics)
            main = answer_metrics[1]
            out.append(
                f"| method (answers, top-{GEN_K} passages) | n | {head} "
                f"| Δ{main} vs dense [95% CI] |"
            )
            out.append("|---|---|" + "---|" * len(answer_metrics) + "---|")
            for name, e in gen.items():
                vals = " | ".join(_pct(e.get(m)) for m in answer_metrics)
                out.append(f"| {name} | {e[f'n_{main}']} | {vals} | {_delta(e, main)} |")
            out.append("")
        diag = {n: e["clue_stats"] for n, e in methods.items() if "clue_stats" in e}
        if diag:
            out.append(
                "| clue method | kind | clues/q | copied from text | R@5 of the clue alone "
                "| finds gold the query misses |"
            )
            out.append("|---|---|---|---|---|---|")
            for name, st in diag.items():
                for kind, k in st["by_kind"].items():
                    out.append(
                        f"| {name} | {kind} | {k['n'] / max(st['questions'], 1):.2f} "
                        f"| {_pct(k['copied_share'])} | {_pct(k['recall@5_alone'])} "
                        f"| {_pct(k['new_gold@5_share'])} |"
                    )
            out.append("")
            weights = [str(w) for w in SWEEP_WEIGHTS] + ["interleave"]
            heads = {"0.0": "clues only", "interleave": "interleave"}
            out.append(
                "| R@5 / MRR by fusion (RRF: the query weighs w, each clue 1) | "
                + " | ".join(heads.get(w, f"w={w}") for w in weights)
                + " |"
            )
            out.append("|---|" + "---|" * len(weights))
            for name, st in diag.items():
                cells = []
                for w in weights:
                    cell = st["sweep"].get(w)
                    cells.append(
                        "–" if not cell else f"{_pct(cell['recall@5'])} / {_pct(cell['mrr'])}"
                    )
                out.append(f"| {name} | {' | '.join(cells)} |")
            out.append("")
    return "\n".join(out)
