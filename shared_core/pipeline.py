"""``MemoRAG``: wires memorize -> memory -> clues -> retrieval -> fusion -> generation.

Upstream-compatible names and calls; the ``RetrievalEngine`` both adapters call. Settings are
one ``MemoRAGConfig``; the parts are built once, on first use, after the prompt language is
known (``parts.py``), so constructing a pipeline is cheap. No model code lives here.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from shared_core.clues import CopySource
from shared_core.clues.copying import CopySourceCache
from shared_core.config import ANSWER_STYLES, MemoRAGConfig
from shared_core.errors import InputError, NoMemoryError
from shared_core.heads.route import heads_section
from shared_core.inputs import (
    ContextInput,
    as_documents,
    check_caps,
    check_k,
    check_max_new_tokens,
    check_query,
)
from shared_core.memory import Memory
from shared_core.models.streaming import TextStream, pieces_then_result
from shared_core.parts import Injected, Parts, build_parts
from shared_core.persistence import SaveDir
from shared_core.prompts import PromptSet, detect_language
from shared_core.retrieval.embeddings import Embedder
from shared_core.retrieval.index_choice import new_index
from shared_core.retrieval.vector_index import VectorIndex
from shared_core.retriever import Retriever
from shared_core.saved_settings import saved_settings
from shared_core.saving import (
    pipeline_section,
    read_index,
    read_save_info,
    saved_language,
    saved_pipeline,
    write_save,
)
from shared_core.tasks import TASKS, run_task
from shared_core.types import (
    Answer,
    AsyncSearchBackend,
    ChatTurn,
    Clue,
    Generation,
    GenerationOptions,
    RetrievalResult,
    SearchBackend,
    TextGenerator,
)

TASK_TYPES = tuple(TASKS)


class MemoRAG:
    """A global memory in front of dense retrieval, with a generator behind it.

    Settings: ``MemoRAGConfig`` fields as keywords, or ``config=``; parts can be injected
    (``memory=``, ``embedder=``, ``generator=``). Defaults: see ``docs/benchmarks.md``.
    """

    def __init__(
        self,
        mem_model_name_or_path: str | None = None,
        ret_model_name_or_path: str | None = None,
        gen_model_name_or_path: str | None = None,
        customized_gen_model: Any = None,
        *,
        config: MemoRAGConfig | None = None,
        memory: Memory | None = None,
        embedder: Embedder | None = None,
        generator: TextGenerator | None = None,
        search_index: VectorIndex | None = None,
        copy_source: CopySource | None = None,
        **options: Any,
    ) -> None:
        models = (mem_model_name_or_path, ret_model_name_or_path, gen_model_name_or_path)
        for role, name in zip(("mem", "ret", "gen"), models, strict=True):
            if name is not None:
                options[f"{role}_model_name_or_path"] = name
        if config is not None and not isinstance(config, MemoRAGConfig):
            raise InputError(f"config must be a MemoRAGConfig, got {type(config).__name__}")
        base = config.as_options() if config is not None else {}
        self.config = MemoRAGConfig.from_options({**base, **options})
        if generator is not None and customized_gen_model is not None:
            raise InputError("pass generator= or customized_gen_model, not both")
        self._injected = Injected(memory, embedder, generator or customized_gen_model)
        self._parts: Parts | None = None
        # An index and copy source built elsewhere (e.g. from precomputed vectors) serve until
        # the first memorize/add.
        self._index, self._given_copy = search_index, copy_source
        self._copies = CopySourceCache()
        self._retriever = Retriever(self.config)
        self._snapshots: set[str] = set()  # the snapshots this state is in (lost-update guard)
        self._build_lock = threading.Lock()
        # Re-entrant so add() on an empty pipeline can memorize() and save() under it.
        self._write_lock = threading.RLock()

    # -- parts ------------------------------------------------------------------------------
    def _built(self, language: str | None = None) -> Parts:
        """The parts, built once under one lock, in ``language`` when the config says auto."""
        with self._build_lock:
            if self._parts is None:
                chosen = self.config.language
                if chosen == "auto":
                    chosen = language or "en"
                self._parts = build_parts(self.config, chosen, self._injected)
            return self._parts

    @property
    def memory(self) -> Memory:
        return self._built().memory

    @property
    def embedder(self) -> Embedder:
        return self._built().embedder

    @property
    def prompts(self) -> PromptSet:
        return self._built().prompts

    @property
    def parts(self) -> Parts:
        """Everything the pipeline runs with (built on first use)."""
        return self._built()

    @property
    def generator(self) -> TextGenerator:
        generator = self._built().generator
        if generator is None:
            raise InputError("this memory has no model to generate with; pass generator=")
        return generator

    @property
    def index(self) -> VectorIndex:
        if self._index is None:
            raise NoMemoryError("nothing is memorized: call memorize(context) or load(dir) first")
        return self._index

    @property
    def corpus_size(self) -> int:
        """How many passages the engine's own index holds (0 before ``memorize``)."""
        return len(self._index) if self._index is not None else 0

    def _documents(self, context: ContextInput, start: int = 0) -> tuple[Parts, list[Any]]:
        docs = as_documents(context, start_index=start)
        parts = self._built(detect_language(docs[0].text))
        check_caps(docs, max_documents=parts.memory.max_documents, max_chars=parts.memory.max_chars)
        return parts, docs

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
        parts, docs = self._documents(context)  # limits refused before any text is processed
        with self._write_lock:
            cfg = self.config
            index = new_index(parts.embedder, cfg.index, cfg.search_mode, cfg.index_options)
            index.add(parts.chunker.split(docs), show_progress=print_stats)
            parts.memory.memorize(docs, show_progress=print_stats or None)
            self._index, self._snapshots = index, set()  # a new memory: in no snapshot yet
            self._given_copy = None
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
            parts, docs = self._documents(context, start=len(self.memory.documents))
            chunks = parts.chunker.split(docs)
            parts.memory.add(docs)
            self._index.add(chunks)
            self._given_copy = None
        if save_dir is not None:
            self.save(save_dir)
        return self

    # -- clues and retrieval ----------------------------------------------------------------
    def clues(self, query: str, *, history: Sequence[ChatTurn] = ()) -> list[Clue]:
        """The memory's retrieval clues for ``query`` (the query itself not included)."""
        check_query(query)
        return self._retriever.clues(self._built(), query, history, self._copy_source)

    def copy_source(self) -> CopySource | None:
        """The corpus in the memory model's tokens (copy clues, short ``qa`` answers)."""
        return self._copy_source()

    def _copy_source(self) -> CopySource | None:
        """The corpus in the memory model's tokens, for copy-from-text clues (cached)."""
        if self._given_copy is not None:
            return self._given_copy
        tokenizer, index = self.memory.tokenizer, self._index
        if tokenizer is None or index is None or len(index) == 0:
            return None
        return self._copies.get((id(index), len(index)), index.chunks, tokenizer)

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
        """The memory's pointers (its retrieval heads and/or clues), one search per key and the
        query, fused into exactly ``k`` passages (``search_k``: each search's depth)."""
        call = self._call(query, k, search, extra_queries, history, search_k)
        return self._retriever.run(self._built(), self.index, query, k, **call)

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
        call = self._call(query, k, search, extra_queries, history, search_k)
        return await self._retriever.arun(self._built(), self.index, query, k, **call)

    def _call(
        self,
        query: str,
        k: int,
        search: Any,
        extra_queries: Sequence[str],
        history: Sequence[ChatTurn],
        search_k: int | None,
    ) -> dict[str, Any]:
        check_query(query)
        check_k(k)
        return {
            "backend": search if search is not None else self.index,
            "history": history,
            "extra_queries": extra_queries,
            "search_k": search_k,
            "copy_source": self._copy_source,
        }

    def retrieve_with(
        self, query: str, k: int, clues: Sequence[Clue], *, query_weight: float | None = None
    ) -> RetrievalResult:
        """Search the index with caller-written ``clues`` (and ``query`` unless its weight is 0);
        the clues are searched as given (never anchored)."""
        check_query(query)
        check_k(k)
        return self._retriever.with_clues(self.index, query, k, clues, query_weight)

    # -- chat against the memory ------------------------------------------------------------
    def start_chat(self, messages: Sequence[ChatTurn], options: GenerationOptions) -> Any:
        """A ``GenerationRun`` for the last message against the memory (earlier turns: the
        history); after iterating it, ``.generation`` counts the real tokens."""
        if not messages:
            raise InputError("messages is empty")
        *history, last = messages
        return self.memory.start(last.content, history=history, options=options)

    def chat(self, messages: Sequence[ChatTurn], **options: Any) -> Generation:
        """Answer the last message against the memory; ``options``: ``GenerationOptions``."""
        run = self.start_chat(messages, GenerationOptions(**options))
        for _ in run:
            pass
        return run.generation

    def stream_chat(self, messages: Sequence[ChatTurn], **options: Any) -> TextStream:
        """The reply's pieces (``for`` or ``async for``); then ``.generation`` has its usage."""
        return TextStream(self.start_chat(messages, GenerationOptions(**options)))

    def astream_chat(self, messages: Sequence[ChatTurn], **options: Any) -> TextStream:
        """``stream_chat`` for ``async for``: one worker thread decodes the whole reply."""
        return self.stream_chat(messages, **options)

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
        answer_style: str | None = None,
    ) -> Answer:
        """Run one task and return the answer with its passages, clues and timings.

        ``on_text`` receives the answer's pieces as they are generated. ``answer_style``
        (default: the config's) picks a short answer copied from the passages, with its
        ``citations``, or free generation (``memorag`` / ``qa``; docs/answers.md).
        """
        check_max_new_tokens(max_new_tokens)
        style = self.config.answer_style if answer_style is None else answer_style
        if style not in ANSWER_STYLES:
            raise InputError(f"answer_style must be one of {ANSWER_STYLES}, got {style!r}")
        return run_task(
            self,
            task_type,
            query,
            k=self.config.ret_hit if k is None else check_k(k),
            history=history,
            prompt_template=prompt_template,
            max_new_tokens=max_new_tokens,
            use_memory_answer=use_memory_answer,
            on_text=on_text,
            answer_style=style,
        )

    def stream_answer(self, query: str | None = None, **kwargs: Any) -> Iterator[str | Answer]:
        """Yield the answer's text pieces as they are written, then the whole ``Answer``.

        Takes ``answer``'s arguments. Clues and retrieval run first, so the first piece comes
        after them; the final ``Answer`` carries the passages (sources) and timings.
        """
        return pieces_then_result(lambda on_text: self.answer(query, on_text=on_text, **kwargs))

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
    def save(self, save_dir: str | Path, *, overwrite: bool = False) -> None:
        """Atomically save memory + index + settings to ``save_dir`` (safetensors + JSON)."""
        index, parts = self.index, self._built()
        kind = self._injected.generator_kind(self.config)
        language = parts.prompts.language
        section = pipeline_section(self.config, parts.memory, parts.embedder, language, kind)
        section["head_set"] = heads_section(self._retriever.route, parts.memory)
        with self._write_lock:
            known = frozenset(self._snapshots)
            snapshot = write_save(
                save_dir,
                parts.memory,
                index,
                section,
                self.config,
                overwrite=overwrite,
                known=known,
            )
            self._snapshots.add(snapshot)

    def load(self, save_dir: str | Path, print_stats: bool = False) -> MemoRAG:
        """Restore memory and index from ``save_dir``, refusing mismatched parts."""
        # Reliability: SaveDir.read starts again if a concurrent save replaces the snapshot.
        SaveDir(save_dir).read(self._load_snapshot)
        if print_stats:
            print(self.stats_text())
        return self

    def _load_snapshot(self, folder: Path, manifest: dict[str, Any]) -> MemoRAG:
        parts = self._built(saved_language(manifest))
        index = read_index(folder, manifest, parts.embedder, self.config)
        where = folder / "manifest.json"
        self._retriever.route.adopt_saved(where, manifest["pipeline"], parts.memory)
        with self._write_lock:
            parts.memory.read_files(folder, manifest["memory"])
            self._index, self._snapshots = index, {folder.name}
        return self

    @classmethod
    def from_dir(cls, save_dir: str | Path, **kwargs: Any) -> MemoRAG:
        """Build a pipeline with the models and settings a save names, then load it."""
        folder, pipeline = saved_pipeline(save_dir)
        # Reliability: every saved setting is type-checked before it is used.
        settings = saved_settings(folder / "manifest.json", pipeline, kwargs)
        return cls(**settings).load(save_dir)

    # -- stats ------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        return {
            "memory": self.memory.stats().as_dict(),
            "chunks": self.corpus_size,
            "embedder": self._parts.embedder.name if self._parts else None,
        }

    def stats_text(self) -> str:
        return (
            f"{self.memory.stats().summary()}\n"
            f"retrieval corpus:  {self.corpus_size:,} chunks of <= "
            f"{self.config.retrieval_chunk_size} tokens"
        )


__all__ = ["TASK_TYPES", "Answer", "MemoRAG", "read_save_info"]
