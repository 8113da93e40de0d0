"""``MemoRAG``: wires memorize -> memory -> clues -> retrieval -> fusion -> generation.

Upstream-compatible (``MemoRAG(mem_model_name_or_path=..., ret_model_name_or_path=...)``,
``memorize``, ``load``, ``__call__(query, context, task_type=...)``), and the
``RetrievalEngine`` the LangChain and LlamaIndex adapters call. It holds no model code of its
own: models load lazily on first use, so constructing one is cheap and every argument defaults
to the embedded offline models.
"""

from __future__ import annotations

import asyncio
import copy
import queue
import threading
import time
import warnings
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from shared_core.clues.copying import CopySource
from shared_core.clues.writers import ClueWriter, anchor_clues, make_clue_writer, resolve_followup
from shared_core.errors import InputError, NoMemoryError, PersistenceError
from shared_core.inputs import ContextInput, as_documents, check_k, check_query
from shared_core.memory import BACKENDS, Memory, create_memory
from shared_core.models.generation import LocalGenerator, as_generator
from shared_core.persistence import SaveDir, write_manifest
from shared_core.prompts import PromptSet, detect_language, get_prompts
from shared_core.retrieval.attention_route import (
    AttentionRoute,
    RoutePlan,
    heads_section,
    query_similarity,
)
from shared_core.retrieval.chunking import TokenChunker
from shared_core.retrieval.embeddings import Embedder
from shared_core.retrieval.fusion import fuse
from shared_core.retrieval.index import DenseIndex
from shared_core.saved_settings import check_memory_fields, saved_settings
from shared_core.tasks import TASKS, run_task
from shared_core.types import (
    Answer,
    AsyncSearchBackend,
    ChatTurn,
    Clue,
    Generation,
    Hit,
    RetrievalResult,
    SearchBackend,
    TextGenerator,
)

TASK_TYPES = tuple(TASKS)


class MemoRAG:
    """A global memory in front of dense retrieval, with a generator behind it.

    Defaults chosen on the tuning sets (HotpotQA context and pooled, QMSum; see
    ``docs/benchmarks.md``): clues are evidence spans the memory copies verbatim from the text
    plus surrogate questions (``clue_strategy="copy+surrogate"``); each clue is searched
    anchored to the query, as ``query + the clue's new words`` (``anchor_clues=True``); the
    keys' hit lists are interleaved, query first (``fusion="interleave"``; best for k <= 5,
    while ``fusion="rrf"`` keeps recall at depth 10 and the better MRR).
    """

    #: Cap on the clues one query gets from the clue writer (each clue costs a search).
    max_clues: int = 16

    def __init__(
        self,
        mem_model_name_or_path: str | None = None,
        ret_model_name_or_path: str | None = None,
        gen_model_name_or_path: str | None = None,
        *,
        customized_gen_model: Any = None,
        memory: Memory | None = None,
        embedder: Embedder | None = None,
        generator: TextGenerator | None = None,
        cache_dir: str | None = None,
        access_token: str | None = None,
        beacon_ratio: int = 4,
        load_in_4bit: bool = False,
        device: str | None = "auto",
        dtype: Any = None,
        memory_backend: str = "auto",
        window: int = 2048,
        scorer: str = "key_norm",
        ret_hit: int = 3,
        retrieval_chunk_size: int = 512,
        chunk_overlap: int = 32,
        clue_strategy: str | ClueWriter = "copy+surrogate",
        query_weight: float = 2.0,
        fusion: str = "auto",
        rrf_k: int = 60,
        retrieval: str = "auto",
        head_set: Any = None,
        heads_weight: float = 1.0,
        anchor_clues: bool = True,
        language: str = "auto",
        enable_flash_attn: bool = False,
        **memory_kwargs: Any,
    ) -> None:
        del enable_flash_attn  # accepted for upstream compatibility; attention is picked by HF
        self.mem_model_name_or_path = mem_model_name_or_path
        self.ret_model_name_or_path = ret_model_name_or_path
        self.gen_model_name_or_path = gen_model_name_or_path
        self.model_kwargs = {
            "cache_dir": cache_dir,
            "access_token": access_token,
            "device": device,
            "dtype": dtype,
            "load_in_4bit": load_in_4bit,
        }
        # Issue 13: keep full KV while the text fits the model's positions (heads need it).
        memory_kwargs.setdefault("compress", "when_needed")
        self.memory_options = {
            "beacon_ratio": beacon_ratio,
            "window": window,
            "scorer": scorer,
            "backend": memory_backend,
            **memory_kwargs,
        }
        self.ret_hit = check_k(ret_hit, name="ret_hit")
        self.retrieval_chunk_size = retrieval_chunk_size
        self.chunk_overlap = chunk_overlap
        self.clue_strategy = clue_strategy
        self.query_weight = query_weight
        self.fusion = fusion
        self.rrf_k = rrf_k
        # Memory-native retrieval (issue 13): see retrieval/attention_route.py.
        self._route = AttentionRoute(retrieval, head_set, heads_weight, fusion)
        self.anchor_clues = anchor_clues
        self.language = language
        self._memory = memory
        self._embedder = embedder
        self._generator = as_generator(generator) if generator is not None else None
        self._custom_gen = customized_gen_model
        self._index: DenseIndex | None = None
        self._prompts: PromptSet | None = None
        self._clue_writer: ClueWriter | None = None
        self._copy_cache: tuple[tuple[int, int, int], CopySource] | None = None
        self._copy_lock = threading.Lock()
        self._load_lock = threading.Lock()
        # Reliability: re-entrant so add() on an empty pipeline can memorize() and save()
        # under the same lock (two concurrent first add() calls cannot both memorize).
        self._write_lock = threading.RLock()
        self._chunk_tokenizer: Any = None

    # -- lazy parts -------------------------------------------------------------------------
    @property
    def memory(self) -> Memory:
        with self._load_lock:
            if self._memory is None:
                self._memory = create_memory(
                    self.mem_model_name_or_path,
                    **self.model_kwargs,
                    **self.memory_options,
                    prompts=self.prompts,
                )
        return self._memory

    @property
    def embedder(self) -> Embedder:
        with self._load_lock:
            if self._embedder is None:
                kw = {k: self.model_kwargs[k] for k in ("cache_dir", "access_token")}
                self._embedder = Embedder.load(self.ret_model_name_or_path, **kw)
        return self._embedder

    @property
    def generator(self) -> TextGenerator:
        if self._generator is None:
            if self._custom_gen is not None:
                self._generator = as_generator(self._custom_gen)
            elif self.gen_model_name_or_path is not None:
                from shared_core.models.loading import load_causal_lm

                lm = load_causal_lm(self.gen_model_name_or_path, **self.model_kwargs)
                self._generator = LocalGenerator(lm.model, lm.tokenizer, name=lm.name)
            else:
                self._generator = self._shared_generator()
        return self._generator

    def _shared_generator(self) -> TextGenerator:
        memory = self.memory
        model = getattr(memory, "model", None)
        if model is not None and getattr(memory, "tokenizer", None) is not None:
            return LocalGenerator(model, memory.tokenizer, name=getattr(memory, "name", None))
        generator = getattr(memory, "generator", None)
        if generator is not None:
            return generator
        raise InputError("this memory has no model to generate with; pass generator=")

    @property
    def prompts(self) -> PromptSet:
        if self._prompts is None:
            self._prompts = get_prompts("en" if self.language == "auto" else self.language)
        return self._prompts

    @property
    def clue_writer(self) -> ClueWriter:
        if self._clue_writer is None:
            self._clue_writer = make_clue_writer(self.clue_strategy, self.prompts)
        return self._clue_writer

    @property
    def index(self) -> DenseIndex:
        if self._index is None:
            raise NoMemoryError("nothing is memorized: call memorize(context) or load(save_dir)")
        return self._index

    @property
    def corpus_size(self) -> int:
        """How many passages the engine's own index holds (0 before ``memorize``)."""
        return len(self._index) if self._index is not None else 0

    @property
    def chunker(self) -> TokenChunker:
        size = min(self.retrieval_chunk_size, self.embedder.max_tokens or self.retrieval_chunk_size)
        # Reliability: chunking counts tokens with its own copy of the embedder's tokenizer. A
        # HF fast tokenizer keeps truncation/padding state; chunking (no truncation) and query
        # embedding (truncation) on one object from two threads broke both.
        embedder = self.embedder
        with self._load_lock:
            if self._chunk_tokenizer is None:
                self._chunk_tokenizer = copy.deepcopy(embedder.tokenizer)
        return TokenChunker.from_tokenizer(
            self._chunk_tokenizer,
            chunk_tokens=size,
            overlap_tokens=self.chunk_overlap,
        )

    def _text_caps(self) -> dict[str, Any]:
        """The memory's caps on one call's text, checked before any chunking or embedding."""
        memory = self.memory
        return {
            "max_documents": getattr(memory, "max_documents", None),
            "max_chars": getattr(memory, "max_chars", None),
        }

    # -- memorize ---------------------------------------------------------------------------
    def memorize(
        self,
        context: ContextInput,
        save_dir: str | Path | None = None,
        print_stats: bool = False,
        *,
        overwrite: bool = False,
    ) -> MemoRAG:
        """Read ``context`` (a text or documents) into the memory and the index."""
        docs = as_documents(context, **self._text_caps())  # limits refused before any compute
        if self.language == "auto" and self._prompts is None:
            self._prompts = get_prompts(detect_language(docs[0].text))
        with self._write_lock:
            index = DenseIndex(self.embedder)
            index.add(self.chunker.split(docs), show_progress=print_stats)
            self.memory.memorize(docs, show_progress=print_stats or None)
            self._index = index
        if save_dir is not None:
            self.save(save_dir, overwrite=overwrite)
        if print_stats:
            print(self.stats_text())
        return self

    def add(self, context: ContextInput, save_dir: str | Path | None = None) -> MemoRAG:
        """Read more documents on top of the memory and the index (nothing is re-read)."""
        with self._write_lock:
            if self._index is None:
                return self.memorize(context, save_dir)
            docs = as_documents(
                context, start_index=len(self.memory.documents), **self._text_caps()
            )
            chunks = self.chunker.split(docs)
            self.memory.add(docs)
            self.index.add(chunks)
        if save_dir is not None:
            self.save(save_dir)
        return self

    # -- clues and retrieval ----------------------------------------------------------------
    def clues(self, query: str, *, history: Sequence[ChatTurn] = ()) -> list[Clue]:
        """The memory's retrieval clues for ``query`` (the query itself not included)."""
        check_query(query)
        standalone = self._standalone(query, history)
        writer = self.clue_writer
        extra = {"source": self._copy_source()} if getattr(writer, "uses_source", False) else {}
        clues = list(writer.write(standalone, self.memory, **extra))[: self.max_clues]
        if standalone != query:
            clues.insert(0, Clue(text=standalone, kind="history", weight=self.query_weight))
        return clues

    def _copy_source(self) -> CopySource | None:
        """The corpus in the memory model's tokens, for copy-from-text clues (cached)."""
        tokenizer = getattr(self.memory, "tokenizer", None)
        index = self._index
        if tokenizer is None or index is None or len(index) == 0:
            return None
        key = (id(index), len(index), id(tokenizer))
        with self._copy_lock:
            if self._copy_cache is None or self._copy_cache[0] != key:
                texts = [chunk.text for chunk in index.chunks]
                self._copy_cache = (key, CopySource.from_texts(texts, tokenizer))
            return self._copy_cache[1]

    def _standalone(self, query: str, history: Sequence[ChatTurn]) -> str:
        if not history:
            return query
        return resolve_followup(query, history, self.memory, self.prompts)

    def _keys(
        self, query: str, clues: Sequence[Clue], extra: Sequence[str], *, anchor: bool = True
    ) -> list[Clue]:
        if anchor and self.anchor_clues:
            anchor = next((c.text for c in clues if c.kind == "history"), query)
            clues = anchor_clues(clues, anchor)
        keys = [Clue(text=query, kind="query", weight=self.query_weight)]
        keys += [Clue(text=e, kind="custom") for e in extra if isinstance(e, str) and e.strip()]
        keys += clues
        seen: set[str] = set()
        unique = []
        for key in keys:
            norm = " ".join(key.text.lower().split())
            if norm not in seen:
                seen.add(norm)
                unique.append(key)
        return unique

    def _fuse(
        self,
        query: str,
        k: int,
        keys: Sequence[Clue],
        lists: Sequence[Sequence[Hit]],
        timings: dict[str, float],
        backend: object,
        plan: RoutePlan | None = None,
    ) -> RetrievalResult:
        started = time.perf_counter()
        pairs = list(zip(keys, lists, strict=True))
        method = plan.fusion if plan is not None else self.fusion.replace("auto", "interleave")
        size = self.ret_hit if method == "union" else k
        fused = fuse(pairs, size, method=method, rrf_k=self.rrf_k)
        if plan is not None and plan.heads:  # relevance of passages only the heads found
            found = {p.passage.id for p in fused}
            found -= {h.passage.id for c, hs in pairs if c.kind != "attention" for h in hs}
            similarity = query_similarity(self.index, query, found)
            fused = fuse(pairs, size, method=method, rrf_k=self.rrf_k, similarity=similarity)
        timings["fusion"] = time.perf_counter() - started
        size = len(backend) if hasattr(backend, "__len__") else None  # type: ignore[arg-type]
        if size is not None and k > size:
            warnings.warn(
                f"k={k} is more than the {size} passages in the corpus; returning all", stacklevel=3
            )
        return RetrievalResult(
            query=query,
            clues=tuple(keys),
            passages=tuple(fused),
            timings=dict(timings),
            route=plan.name if plan is not None else "custom",
            notes=plan.notes if plan is not None else (),
        )

    def _plan_clues(
        self, query: str, history: Sequence[ChatTurn], backend: object
    ) -> tuple[RoutePlan, list[Clue]]:
        """The route for this query and its clues (only the history's rewrite on heads)."""
        plan = self._route.plan(self.memory, backend is self._index)
        if plan.clues:
            return plan, self.clues(query, history=history)
        standalone = self._standalone(query, history)
        if standalone == query:
            return plan, []
        return plan, [Clue(text=standalone, kind="history", weight=self.query_weight)]

    def _add_heads(
        self,
        query: str,
        keys: list[Clue],
        lists: list[list[Hit]],
        depth: int,
        timings: dict[str, float],
        plan: RoutePlan,
    ) -> None:
        """Append the memory's attention ranking as one more scored list."""
        if not plan.heads:
            return
        started = time.perf_counter()
        heads_query = next((c.text for c in keys if c.kind == "history"), query)
        lists.append(self._route.attention_hits(self.memory, self.index, heads_query, depth))
        keys.append(Clue(text=heads_query, kind="attention", weight=self._route.weight))
        timings["heads"] = time.perf_counter() - started

    def retrieve(
        self,
        query: str,
        k: int = 3,
        *,
        search: SearchBackend | None = None,
        extra_queries: Sequence[str] = (),
        history: Sequence[ChatTurn] = (),
        search_k: int | None = None,
    ) -> RetrievalResult:
        """Clues from the memory, one search per clue and the query, fused into exactly ``k``.

        ``search_k`` is the depth of each search (default ``max(k, ret_hit)``). The default
        fusion, ``interleave``, takes the query's best hit, then each clue's, then the query's
        second, ... (``fusion="rrf"``: weighted reciprocal-rank fusion with ``rrf_k``).
        """
        check_query(query)
        check_k(k)
        backend = search if search is not None else self.index
        timings: dict[str, float] = {}
        started = time.perf_counter()
        plan, clues = self._plan_clues(query, history, backend)
        keys = self._keys(query, clues, extra_queries)
        timings["clues"] = time.perf_counter() - started
        started = time.perf_counter()
        depth = check_k(search_k, name="search_k") if search_k else max(k, self.ret_hit)
        depth = self._route.depth(plan, depth, len(self.index)) if plan.heads else depth
        if hasattr(backend, "search_many"):
            lists = backend.search_many([c.text for c in keys], depth)  # type: ignore[union-attr]
        else:
            lists = [backend.search(c.text, depth) for c in keys]
        timings["search"] = time.perf_counter() - started
        lists = list(lists)
        self._add_heads(query, keys, lists, depth, timings, plan)
        return self._fuse(query, k, keys, lists, timings, backend, plan)

    async def aretrieve(
        self,
        query: str,
        k: int = 3,
        *,
        search: SearchBackend | AsyncSearchBackend | None = None,
        extra_queries: Sequence[str] = (),
        history: Sequence[ChatTurn] = (),
        search_k: int | None = None,
    ) -> RetrievalResult:
        """``retrieve`` without blocking the event loop (model work runs in a thread)."""
        check_query(query)
        check_k(k)
        backend = search if search is not None else self.index
        timings: dict[str, float] = {}
        started = time.perf_counter()
        plan, clues = await asyncio.to_thread(self._plan_clues, query, history, backend)
        keys = self._keys(query, clues, extra_queries)
        timings["clues"] = time.perf_counter() - started
        started = time.perf_counter()
        depth = check_k(search_k, name="search_k") if search_k else max(k, self.ret_hit)
        depth = self._route.depth(plan, depth, len(self.index)) if plan.heads else depth
        texts = [c.text for c in keys]
        if isinstance(backend, AsyncSearchBackend):
            lists = await asyncio.gather(*(backend.asearch(t, depth) for t in texts))
        elif hasattr(backend, "search_many"):
            lists = await asyncio.to_thread(backend.search_many, texts, depth)
        else:
            lists = [await asyncio.to_thread(backend.search, t, depth) for t in texts]
        timings["search"] = time.perf_counter() - started
        lists = list(lists)
        await asyncio.to_thread(self._add_heads, query, keys, lists, depth, timings, plan)
        return self._fuse(query, k, keys, lists, timings, backend, plan)

    def retrieve_with(
        self, query: str, k: int, clues: Sequence[Clue], *, query_weight: float | None = None
    ) -> RetrievalResult:
        """Search the index with caller-written ``clues`` (and ``query`` unless its weight is 0);
        the clues are searched as given (never anchored)."""
        check_query(query)
        check_k(k)
        keys = self._keys(query, clues, (), anchor=False)
        weight = self.query_weight if query_weight is None else query_weight
        keys = [replace(c, weight=weight) if c.kind == "query" else c for c in keys]
        keys = [c for c in keys if c.weight > 0] or keys
        timings: dict[str, float] = {}
        started = time.perf_counter()
        lists = self.index.search_many([c.text for c in keys], max(k, self.ret_hit))
        timings["search"] = time.perf_counter() - started
        return self._fuse(query, k, keys, lists, timings, self.index)

    # -- chat against the memory ------------------------------------------------------------
    @staticmethod
    def _split(messages: Sequence[ChatTurn]) -> tuple[list[ChatTurn], str]:
        if not messages:
            raise InputError("messages is empty")
        *history, last = messages
        return list(history), last.content

    def chat(
        self,
        messages: Sequence[ChatTurn],
        *,
        max_new_tokens: int = 256,
        stop: Sequence[str] = (),
        temperature: float = 0.0,
    ) -> Generation:
        """Answer the last message against the memory; earlier turns are the history."""
        history, prompt = self._split(messages)
        return self.memory.generate(
            prompt,
            history=history,
            max_new_tokens=max_new_tokens,
            stop=stop,
            temperature=temperature,
        )

    def stream_chat(
        self,
        messages: Sequence[ChatTurn],
        *,
        max_new_tokens: int = 256,
        stop: Sequence[str] = (),
        temperature: float = 0.0,
    ) -> Iterator[str]:
        history, prompt = self._split(messages)
        yield from self.memory.stream(
            prompt,
            history=history,
            max_new_tokens=max_new_tokens,
            stop=stop,
            temperature=temperature,
        )

    async def astream_chat(
        self,
        messages: Sequence[ChatTurn],
        *,
        max_new_tokens: int = 256,
        stop: Sequence[str] = (),
        temperature: float = 0.0,
    ) -> AsyncIterator[str]:
        """Stream in a worker thread, handing pieces to the event loop as they come."""
        iterator = self.stream_chat(
            messages, max_new_tokens=max_new_tokens, stop=stop, temperature=temperature
        )
        done = object()
        while True:
            piece = await asyncio.to_thread(next, iterator, done)
            if piece is done:
                return
            yield piece  # type: ignore[misc]

    # -- tasks ------------------------------------------------------------------------------
    def answer(
        self,
        query: str | None = None,
        *,
        task_type: str = "memorag",
        k: int | None = None,
        history: Sequence[ChatTurn] = (),
        prompt_template: str | None = None,
        max_new_tokens: int = 256,
        use_memory_answer: bool = False,
        on_text: Callable[[str], None] | None = None,
    ) -> Answer:
        """Run one task and return the answer with its passages, clues and timings.

        ``on_text`` receives the answer's pieces as they are generated.
        """
        return run_task(
            self,
            task_type,
            query,
            k=k or self.ret_hit,
            history=history,
            prompt_template=prompt_template,
            max_new_tokens=max_new_tokens,
            use_memory_answer=use_memory_answer,
            on_text=on_text,
        )

    def stream_answer(self, query: str | None = None, **kwargs: Any) -> Iterator[str | Answer]:
        """Yield the answer's text pieces as they are written, then the whole ``Answer``.

        Takes ``answer``'s arguments. Clues and retrieval run first, so the first piece comes
        after them; the final ``Answer`` carries the passages (sources) and timings.
        """
        pieces: queue.Queue[tuple[str, Any]] = queue.Queue()

        def work() -> None:
            try:
                result = self.answer(query, on_text=lambda t: pieces.put(("text", t)), **kwargs)
                pieces.put(("done", result))
            except BaseException as exc:  # handed to the consumer's thread
                pieces.put(("error", exc))

        threading.Thread(target=work, daemon=True, name="memorag-answer").start()
        while True:
            kind, item = pieces.get()
            if kind == "error":
                raise item
            yield item
            if kind == "done":
                return

    def __call__(
        self,
        query: str | None = None,
        context: ContextInput | None = None,
        task_type: str = "memorag",
        prompt_template: str | None = None,
        max_new_tokens: int = 256,
        reset_each_call: bool = False,
        use_memory_answer: bool = False,
        *,
        history: Sequence[ChatTurn] = (),
        k: int | None = None,
    ) -> str:
        """Upstream-style call: memorize ``context`` if given (or nothing is held), answer."""
        if context is not None and (reset_each_call or self._index is None):
            self.memorize(context)
        return self.answer(
            query,
            task_type=task_type,
            k=k,
            history=history,
            prompt_template=prompt_template,
            max_new_tokens=max_new_tokens,
            use_memory_answer=use_memory_answer,
        ).text

    # -- persistence ------------------------------------------------------------------------
    def _section(self) -> dict[str, Any]:
        options = {k: v for k, v in self.memory_options.items() if k != "backend"}
        return {
            "mem_model_name_or_path": self.mem_model_name_or_path,
            "ret_model_name_or_path": self.ret_model_name_or_path,
            "embedder": self.embedder.name,
            "memory_options": {
                k: v
                for k, v in options.items()
                if isinstance(v, (str, int, float, bool, type(None)))
            },
            "memory_backend": self.memory.backend,
            "retrieval_chunk_size": self.retrieval_chunk_size,
            "chunk_overlap": self.chunk_overlap,
            "language": self.prompts.language,
            "documents": [d["doc_id"] for d in self.memory.documents],
            "head_set": heads_section(self._route, self.memory),
        }

    def save(self, save_dir: str | Path, *, overwrite: bool = False) -> None:
        """Atomically save memory + index + settings to ``save_dir`` (safetensors + JSON)."""
        index = self.index
        memory = self.memory
        with (
            self._write_lock,
            SaveDir(save_dir).stage(lineage=memory.lineage, overwrite=overwrite) as folder,
        ):
            section = memory.write_files(folder)
            index_section = index.save(folder)
            write_manifest(
                folder,
                {
                    "kind": "memorag",
                    "lineage": memory.lineage,
                    "memory": section,
                    "index": index_section,
                    "pipeline": self._section(),
                },
            )

    def load(self, save_dir: str | Path) -> MemoRAG:
        """Restore memory and index from ``save_dir``, refusing mismatched parts."""
        # Reliability: SaveDir.read starts again if a concurrent save replaces the snapshot.
        return SaveDir(save_dir).read(self._load_snapshot)

    def _load_snapshot(self, folder: Path, manifest: dict[str, Any]) -> MemoRAG:
        where = folder / "manifest.json"
        if manifest.get("kind") != "memorag":
            raise PersistenceError(f"{where} holds a {manifest.get('kind')!r}, not a MemoRAG save")
        for key in ("memory", "index", "pipeline"):
            if not isinstance(manifest.get(key), dict):
                raise PersistenceError(f"{where} has no {key!r} section")
        pipeline = manifest["pipeline"]
        language = pipeline.get("language")
        if language in ("en", "zh"):
            self._prompts = get_prompts(language)
        index = DenseIndex.load(folder, self.embedder, expected=manifest["index"])
        doc_ids = pipeline.get("documents")
        chunk_docs = {c.doc_id for c in index.chunks}
        if not isinstance(doc_ids, list) or not all(isinstance(d, str) for d in doc_ids):
            raise PersistenceError(f"{where}: pipeline.documents must be a list of doc ids")
        if set(doc_ids) != chunk_docs:
            raise PersistenceError(f"{where}: the index and the memory hold different documents")
        check_memory_fields(where, manifest["memory"])
        self._route.adopt_saved(where, pipeline, self.memory)
        if [d["doc_id"] for d in manifest["memory"]["documents"]] != doc_ids:
            raise PersistenceError(f"{where}: the memory section lists other documents")
        with self._write_lock:
            self.memory.read_files(folder, manifest["memory"])
            self._index = index
        return self

    @classmethod
    def from_dir(cls, save_dir: str | Path, **kwargs: Any) -> MemoRAG:
        """Build a pipeline with the models and settings a save names, then load it."""
        folder, manifest = SaveDir(save_dir).require()
        pipeline = manifest.get("pipeline")
        if not isinstance(pipeline, dict):
            raise PersistenceError(f"{folder / 'manifest.json'} is not a MemoRAG save")
        # Reliability: every saved setting is type-checked, and a save cannot make this load
        # run code shipped with a model (trust_remote_code) unless the caller names the model.
        settings = saved_settings(folder / "manifest.json", pipeline, kwargs, BACKENDS)
        return cls(**settings).load(save_dir)

    # -- stats ------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        memory = self.memory.stats().as_dict()
        chunks = len(self._index) if self._index is not None else 0
        return {
            "memory": memory,
            "chunks": chunks,
            "embedder": self._embedder.name if self._embedder else None,
        }

    def stats_text(self) -> str:
        chunks = len(self._index) if self._index is not None else 0
        return (
            f"{self.memory.stats().summary()}\n"
            f"retrieval corpus:  {chunks:,} chunks of <= {self.retrieval_chunk_size} tokens"
        )


def read_save_info(save_dir: str | Path) -> dict[str, Any]:
    """The manifest of a save directory, checked (for ``memorag stats``)."""
    folder, manifest = SaveDir(save_dir).require()
    manifest = dict(manifest)
    manifest["snapshot"] = folder.name
    del manifest["files"]
    return manifest


__all__ = ["TASK_TYPES", "Answer", "MemoRAG", "read_save_info"]
