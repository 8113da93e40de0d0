"""``MemoRAG``: wires memorize -> memory -> clues -> retrieval -> fusion -> generation.

Upstream-compatible names and calls; the ``RetrievalEngine`` both adapters call. Settings are
one ``MemoRAGConfig``; the parts are built once, on first use, after the prompt language is
known (``parts.py``), so constructing a pipeline is cheap. No model code lives here.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from shared_core.clues import CopySource
from shared_core.clues.copying import CopySourceCache
from shared_core.config import ANSWER_STYLES, MemoRAGConfig
from shared_core.engine_ref import EngineRef, Resume, plain_options, refuse_injected, refuse_unsaved
from shared_core.errors import (
    IncompatibleMemoryError,
    InputError,
    MemoRAGError,
    NoMemoryError,
    PersistenceError,
)
from shared_core.heads.route import heads_section
from shared_core.inputs import (
    ContextInput,
    as_documents,
    check_caps,
    check_extra_queries,
    check_history,
    check_k,
    check_max_new_tokens,
    check_query,
)
from shared_core.memory import Memory
from shared_core.memory_chat import start_memory_chat
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
from shared_core.structured import StructuredReply, ToolSpec, chat_json, chat_tools
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
from shared_core.unsaved import UnsavedDocuments

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
        self._unsaved = UnsavedDocuments()  # added since the last save or load
        self._build_lock = threading.Lock()
        # Re-entrant so add() on an empty pipeline can memorize() and save() under it.
        self._write_lock = threading.RLock()
        # The save this exact state is in, (root, snapshot), if any: what a pickle refers to.
        self._saved_as: tuple[Path, str] | None = None
        self._resume = Resume()  # an unpickled engine's pending load of its save
        self._loaded: tuple[str, float] | None = None  # (save dir, seconds) of the last load

    # -- parts ------------------------------------------------------------------------------
    def _built(self, language: str | None = None) -> Parts:
        """The parts, built once under one lock, in ``language`` when the config says auto."""
        self._resume.run(self.load, _live_snapshot)
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
        self._resume.run(self.load, _live_snapshot)
        if self._index is None:
            raise NoMemoryError("nothing is memorized: call memorize(context) or load(dir) first")
        return self._index

    @property
    def corpus_size(self) -> int:
        """How many passages the engine's own index holds (0 before ``memorize``)."""
        self._resume.run(self.load, _live_snapshot)
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
        self._resume.cancel()  # an unpickled engine's save would be replaced unread
        parts, docs = self._documents(context)  # limits refused before any text is processed
        with self._write_lock:
            cfg = self.config
            index = new_index(parts.embedder, cfg.index, cfg.search_mode, cfg.index_options)
            index.add(parts.chunker.split(docs), show_progress=print_stats)
            parts.memory.memorize(docs, show_progress=print_stats or None)
            self._index, self._snapshots = index, set()  # a new memory: in no snapshot yet
            self._unsaved.clear()
            self._unsaved.added(docs, 0)
            self._given_copy, self._saved_as, self._loaded = None, None, None
        if save_dir is not None:
            self._save_added(save_dir, overwrite=overwrite)
        if print_stats:
            print(self.stats_text())
        return self

    def add(self, context: ContextInput, save_dir: str | Path | None = None) -> MemoRAG:
        """Read more documents on top of the memory and the index (nothing is re-read).

        If the save fails (a full disk), the documents stay in memory, unsaved, and the error
        says so; the same ``add(context, save_dir)`` again then saves them.
        """
        self._resume.run(self.load, _live_snapshot)
        with self._write_lock:
            if self._index is None:
                return self.memorize(context, save_dir)
            held = self.memory.documents
            count = len(held)
            parts, docs = self._documents(context, start=count)
            retry = save_dir is not None and self._is_retry(context, docs)
            if not retry:
                known = {d["doc_id"] for d in held}
                for doc in docs:  # refused before anything changes (the memory would refuse it)
                    if doc.doc_id in known:
                        raise InputError(f"document {doc.doc_id!r} is already in the memory")
                chunks = parts.chunker.split(docs)
                # As memorize: the index first, then the memory; if the memory refuses, the
                # index is put back as it was (each step changes nothing when it fails itself).
                index, size = self._index, len(self._index)
                index.add(chunks)
                try:
                    parts.memory.add(docs)
                except BaseException:
                    index.truncate(size)
                    raise
                self._given_copy, self._saved_as = None, None
                self._unsaved.added(docs, count)
            if save_dir is not None:
                self._save_added(save_dir)
        return self

    def _is_retry(self, context: ContextInput, docs: list[Any]) -> bool:
        """Whether ``docs`` are the unsaved documents of a failed ``add`` (numbered as then)."""
        if self._unsaved.matches(docs):
            return True
        start = self._unsaved.start
        return start is not None and self._unsaved.matches(self._documents(context, start)[1])

    def _save_added(self, save_dir: str | Path, *, overwrite: bool = False) -> None:
        try:
            self.save(save_dir, overwrite=overwrite)
        except (OSError, MemoRAGError) as exc:
            if isinstance(exc, OSError) and not isinstance(exc, MemoRAGError):
                exc = PersistenceError(f"cannot save to {save_dir}: {exc.strerror or exc}")
            raise type(exc)(f"{exc}; {self._unsaved.note(save_dir)}") from None

    # -- clues and retrieval ----------------------------------------------------------------
    def clues(self, query: str, *, history: Sequence[ChatTurn] = ()) -> list[Clue]:
        """The memory's retrieval clues for ``query`` (the query itself not included)."""
        check_query(query)
        history = check_history(history)
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
        return self._copies.get(index, tokenizer)

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
            "history": check_history(history),
            "extra_queries": check_extra_queries(extra_queries),
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
        return start_memory_chat(
            self.memory, self._plain_generator, self.prompts.memory_ack, messages, options
        )

    def _plain_generator(self) -> TextGenerator | None:
        """The answer generator, or ``None`` when this memory has no model to generate with."""
        try:
            return self.generator
        except InputError:
            return None

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

    def chat_json(self, messages: Sequence[ChatTurn], schema: dict[str, Any]) -> StructuredReply:
        """Answer the last message against the memory as JSON valid for ``schema`` (decoded
        under the schema's grammar)."""
        return chat_json(self.memory, messages, schema)

    def chat_tools(
        self,
        messages: Sequence[ChatTurn],
        tools: Sequence[ToolSpec],
        tool_choice: str = "auto",
        *,
        after_tool_result: bool = False,
    ) -> StructuredReply | None:
        """A tool call for the last message (``None``: answer in text instead); see
        ``structured.chat_tools``."""
        return chat_tools(
            self.memory, messages, tools, tool_choice, after_tool_result=after_tool_result
        )

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
            history=check_history(history),
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
        self._resume.run(self.load, _live_snapshot)
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
            self._unsaved.clear()
            self._saved_as = (Path(save_dir).resolve(), snapshot)

    def load(self, save_dir: str | Path, print_stats: bool = False) -> MemoRAG:
        """Restore memory and index from ``save_dir``, refusing mismatched parts."""
        started = time.perf_counter()
        # Reliability: SaveDir.read starts again if a concurrent save replaces the snapshot.
        try:
            SaveDir(save_dir).read(self._load_snapshot)
        except IncompatibleMemoryError as exc:
            raise type(exc)(
                f"{exc}; or load it with MemoRAG.from_dir({str(save_dir)!r}), which builds the "
                "pipeline with the models and settings the save names"
            ) from None
        self._loaded = (str(save_dir), time.perf_counter() - started)
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
            self._unsaved.clear()
            self._saved_as = (folder.parent.resolve(), folder.name)
        return self

    @classmethod
    def from_dir(cls, save_dir: str | Path, **kwargs: Any) -> MemoRAG:
        """Build a pipeline with the models and settings a save names, then load it.

        ``kwargs`` are ``MemoRAG`` arguments: a runtime setting given here wins over the save;
        one the saved memory depends on (``window``, ``beacon_ratio``, chunking, ...) must
        agree with it (``saved_settings``)."""
        folder, pipeline, memory = saved_pipeline(save_dir)
        # Reliability: every saved setting goes through MemoRAGConfig's checks before use;
        # which of a save and an explicit argument wins: saved_settings' docstring.
        settings = saved_settings(folder / "manifest.json", pipeline, kwargs, memory)
        return cls(**settings).load(save_dir)

    # -- pickling and copies (shared_core/engine_ref.py) ------------------------------------
    def reference(self) -> EngineRef:
        """What a pickle or copy of this engine holds: its settings and its save directory.

        Raises ``NotPicklableError`` when no save holds this state (save it first) or the
        engine was built around caller objects (``memory=``, ``embedder=``, ``generator=``).
        """
        given = self._injected
        parts = {"memory": given.memory, "embedder": given.embedder, "generator": given.generator}
        injected = [name for name, part in parts.items() if part is not None]
        if injected:
            raise refuse_injected(injected)
        options = plain_options(self.config.as_options())
        pending = self._resume.ref
        if pending is not None:  # unpickled and not used yet: the same reference again
            return EngineRef(pending.save_dir, pending.snapshot, options)
        with self._write_lock:
            if self._saved_as is not None:
                return EngineRef(self._saved_as[0], self._saved_as[1], options)
            if self._index is None:
                return EngineRef(None, None, options)  # nothing memorized: settings only
        raise refuse_unsaved()

    def __reduce__(self) -> tuple[Any, ...]:
        return (_restore, (type(self), self.reference()))

    def __deepcopy__(self, memo: dict[int, Any]) -> MemoRAG:
        """An independent engine on the same save (read again on first use)."""
        return _restore(type(self), self.reference())

    # -- stats ------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """The memory's figures (its ``seconds``: the memorize time, also after a load), the
        corpus size, and ``load_seconds`` when this state was loaded from a save."""
        return {
            "memory": self.memory.stats().as_dict(),
            "chunks": self.corpus_size,
            "embedder": self._parts.embedder.name if self._parts else None,
            "load_seconds": self._loaded[1] if self._loaded else None,
        }

    def stats_text(self) -> str:
        text = (
            f"{self.memory.stats().summary()}\n"
            f"retrieval corpus:  {self.corpus_size:,} chunks of <= "
            f"{self.config.retrieval_chunk_size} tokens"
        )
        if self._loaded is not None:  # the memorize time above was measured when it was saved
            where, seconds = self._loaded
            text += f"\nloaded:            in {seconds:,.1f} s from {where} (memorized earlier)"
        return text


def _live_snapshot(save_dir: Path) -> str | None:
    live = SaveDir(save_dir).current()
    return live.name if live is not None else None


def _restore(cls: type[MemoRAG], ref: EngineRef) -> MemoRAG:
    """Unpickle: the engine rebuilt from its settings (cheap); its save is read on first use."""
    engine = cls(**ref.options)
    if ref.save_dir is not None:
        engine._resume = Resume(ref)
    return engine


__all__ = ["TASK_TYPES", "Answer", "MemoRAG", "read_save_info"]
