"""LangChain retriever over a MemoRAG engine: memory-written clues, one search each, fused to k.

The retriever only translates types. The engine writes the clues, runs one search per clue
(over its own index, or over any LangChain retriever passed as ``base_retriever``) and fuses
the hit lists into exactly ``min(k, corpus)`` passages; this module turns those passages into
LangChain ``Document``s with provenance in their metadata.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, Field

from langchain_memorag.chat_models import to_chat_turns
from shared_core.errors import NoMemoryError
from shared_core.types import Hit, Passage, ScoredPassage

if TYPE_CHECKING:
    from langchain_core.callbacks import AsyncCallbackManager, CallbackManager

    from shared_core.types import RetrievalResult

__all__ = ["MemoRAGRetriever"]

_NO_ENGINE = (
    "MemoRAGRetriever has no engine. Build one first, e.g. "
    "`engine = MemoRAG(); engine.memorize(texts)` then `MemoRAGRetriever(engine=engine)`, "
    "or use `MemoRAGRetriever.from_texts(texts)`."
)


def _accepts_k(method: Any) -> bool:
    """Whether a retriever method takes a ``k`` keyword (by name or through ``**kwargs``)."""
    try:
        params = inspect.signature(method).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "k" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def _passage_id(doc: Document) -> str:
    """The document's own id, else a stable hash of its text."""
    if doc.id:
        return str(doc.id)
    digest = hashlib.sha256(doc.page_content.encode("utf-8")).hexdigest()[:16]
    return f"lc-{digest}"


def _to_hits(docs: Sequence[Document], limit: int) -> list[Hit]:
    """LangChain documents (in rank order) -> engine hits, deduplicated by passage id.

    LangChain retrievers return ranked lists without scores, so the score is ``1 / (rank + 1)``.
    """
    hits: list[Hit] = []
    seen: set[str] = set()
    for doc in docs:
        pid = _passage_id(doc)
        if pid in seen:
            continue
        seen.add(pid)
        passage = Passage(id=pid, text=doc.page_content, metadata=dict(doc.metadata), payload=doc)
        rank = len(hits)
        hits.append(Hit(passage=passage, score=1.0 / (rank + 1), rank=rank))
        if len(hits) >= limit:
            break
    return hits


class _RetrieverSearch:
    """A ``SearchBackend`` that runs a LangChain retriever as a child run of the caller's run."""

    def __init__(
        self,
        retriever: BaseRetriever,
        callbacks: CallbackManager | AsyncCallbackManager,
        *,
        min_depth: int,
        fixed_depth: int | None,
    ) -> None:
        self.retriever = retriever
        self.callbacks = callbacks
        self.min_depth = min_depth
        self.fixed_depth = fixed_depth

    def _depth(self, k: int) -> int:
        return self.fixed_depth if self.fixed_depth is not None else max(k, self.min_depth)

    def search(self, query: str, k: int) -> list[Hit]:
        """Run the base retriever for one clue."""
        depth = self._depth(k)
        extra = {"k": depth} if _accepts_k(self.retriever._get_relevant_documents) else {}
        docs = self.retriever.invoke(query, config={"callbacks": self.callbacks}, **extra)
        return _to_hits(docs, depth)


class _AsyncRetrieverSearch(_RetrieverSearch):
    """``_RetrieverSearch`` plus a native ``asearch`` (an ``AsyncSearchBackend``)."""

    async def asearch(self, query: str, k: int) -> list[Hit]:
        """Run the base retriever's ``ainvoke`` for one clue."""
        depth = self._depth(k)
        takes_k = _accepts_k(self.retriever._get_relevant_documents) and _accepts_k(
            self.retriever._aget_relevant_documents
        )
        extra = {"k": depth} if takes_k else {}
        docs = await self.retriever.ainvoke(query, config={"callbacks": self.callbacks}, **extra)
        return _to_hits(docs, depth)


def _to_document(scored: ScoredPassage) -> Document:
    """An engine result -> a new LangChain ``Document`` with provenance metadata."""
    passage = scored.passage
    extra = {
        "relevance_score": float(scored.score),
        "memorag_clues": [clue.text for clue in scored.found_by],
        "memorag_clue_kinds": [clue.kind for clue in scored.found_by],
    }
    if isinstance(passage.payload, Document):
        metadata = {**passage.payload.metadata, **extra}
        metadata.setdefault("source_id", passage.id)
        return passage.payload.model_copy(update={"id": passage.id, "metadata": metadata})
    metadata = {**passage.metadata, **extra}
    metadata.setdefault("source_id", passage.id)
    return Document(page_content=passage.text, metadata=metadata, id=passage.id)


class MemoRAGRetriever(BaseRetriever):
    """Retrieve with clues written by a MemoRAG memory, fused into exactly ``k`` documents.

    Each returned ``Document`` has ``id`` set to the passage id and these metadata keys:
    ``relevance_score`` (fused score), ``memorag_clues`` / ``memorag_clue_kinds`` (the clues
    that found it), and ``source_id`` (the chunk id, unless the document already had one).
    Per call: ``invoke(q, k=3)`` changes k; ``invoke(q, history=messages)`` passes earlier chat
    messages so the memory can resolve a follow-up ("Did he ...?") before writing clues.

    Attributes:
        engine: A ``RetrievalEngine`` (``shared_core.MemoRAG`` or any object with its methods).
        k: Number of documents returned (``invoke(q, k=3)`` overrides it per call).
        base_retriever: Optional LangChain retriever searched once per clue instead of the
            engine's own index; its documents (and metadata) come back as copies.
        search_k: Documents asked from ``base_retriever`` per clue; default ``max(k, 4)``.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    engine: Any = Field(default=None, exclude=True)
    k: int = Field(default=4, ge=1)
    base_retriever: BaseRetriever | None = None
    search_k: int | None = Field(default=None, ge=1)

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def from_engine(cls, engine: Any, **kwargs: Any) -> MemoRAGRetriever:
        """Wrap an existing engine (``k``, ``base_retriever``, ... go in ``kwargs``)."""
        return cls(engine=engine, **kwargs)

    @classmethod
    def from_texts(
        cls,
        texts: Sequence[str],
        metadatas: Sequence[dict[str, Any]] | None = None,
        *,
        k: int = 4,
        llm: BaseChatModel | None = None,
        **engine_kwargs: Any,
    ) -> MemoRAGRetriever:
        """Build a ``MemoRAG`` engine (``engine_kwargs``), memorize ``texts`` and wrap it.

        ``llm``: a LangChain chat model that writes the (gist) memory, the clues and answers.
        """
        from shared_core.types import Document as CoreDocument

        if metadatas is not None and len(metadatas) != len(texts):
            raise ValueError(f"got {len(metadatas)} metadatas for {len(texts)} texts")
        metas = metadatas if metadatas is not None else [{}] * len(texts)
        docs = [CoreDocument(text=t, metadata=dict(m)) for t, m in zip(texts, metas, strict=True)]
        return cls._memorize(docs, k=k, engine_kwargs=engine_kwargs, llm=llm)

    @classmethod
    def from_documents(
        cls,
        documents: Sequence[Document],
        *,
        k: int = 4,
        llm: BaseChatModel | None = None,
        **engine_kwargs: Any,
    ) -> MemoRAGRetriever:
        """Like ``from_texts`` for LangChain ``Document``s (their ids become doc ids)."""
        from shared_core.types import Document as CoreDocument

        docs = [
            CoreDocument(text=d.page_content, doc_id=d.id, metadata=dict(d.metadata))
            for d in documents
        ]
        return cls._memorize(docs, k=k, engine_kwargs=engine_kwargs, llm=llm)

    @classmethod
    def _memorize(
        cls,
        docs: list[Any],
        *,
        k: int,
        engine_kwargs: dict[str, Any],
        llm: BaseChatModel | None = None,
    ) -> MemoRAGRetriever:
        from shared_core import MemoRAG

        if llm is not None:
            from langchain_memorag.llm_bridge import memorag_with_chat_model

            engine = memorag_with_chat_model(llm, **engine_kwargs)
        else:
            engine = MemoRAG(**engine_kwargs)
        engine.memorize(docs)
        return cls(engine=engine, k=k)

    def save(self, save_dir: str, overwrite: bool = False) -> None:
        """Save the engine's memory and index to ``save_dir``."""
        self._require_engine().save(save_dir, overwrite=overwrite)

    @classmethod
    def load(cls, save_dir: str, *, k: int = 4, **engine_kwargs: Any) -> MemoRAGRetriever:
        """Load a memory saved with ``save`` (``engine_kwargs`` go to ``MemoRAG.from_dir``)."""
        from shared_core import MemoRAG

        return cls(engine=MemoRAG.from_dir(save_dir, **engine_kwargs), k=k)

    # -- retrieval ---------------------------------------------------------------------------

    def _require_engine(self) -> Any:
        if self.engine is None:
            raise NoMemoryError(_NO_ENGINE)
        return self.engine

    def _backend(
        self, callbacks: CallbackManager | AsyncCallbackManager, k: int, *, is_async: bool
    ) -> _RetrieverSearch | None:
        if self.base_retriever is None:
            return None
        backend_cls = _AsyncRetrieverSearch if is_async else _RetrieverSearch
        return backend_cls(
            self.base_retriever, callbacks, min_depth=max(k, 4), fixed_depth=self.search_k
        )

    def _get_relevant_documents(
        self,
        query: str,
        *,
        run_manager: CallbackManagerForRetrieverRun,
        k: int | None = None,
        history: Sequence[BaseMessage] | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        """Retrieve ``k`` (default ``self.k``) documents.

        ``history`` (earlier chat messages) lets the memory resolve a follow-up such as
        "Did he ...?" before writing clues. Other keyword arguments are ignored.
        """
        engine = self._require_engine()
        k = self.k if k is None else k
        search = self._backend(run_manager.get_child(), k, is_async=False)
        turns = to_chat_turns(history or ())
        result: RetrievalResult = engine.retrieve(query, k, search=search, history=turns)
        return [_to_document(p) for p in result.passages]

    async def _aget_relevant_documents(
        self,
        query: str,
        *,
        run_manager: AsyncCallbackManagerForRetrieverRun,
        k: int | None = None,
        history: Sequence[BaseMessage] | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        """Async ``_get_relevant_documents``: awaits ``engine.aretrieve``."""
        engine = self._require_engine()
        k = self.k if k is None else k
        search = self._backend(run_manager.get_child(), k, is_async=True)
        turns = to_chat_turns(history or ())
        result: RetrievalResult = await engine.aretrieve(query, k, search=search, history=turns)
        return [_to_document(p) for p in result.passages]
