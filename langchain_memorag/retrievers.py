"""LangChain retriever over a MemoRAG engine: memory-written clues, one search each, fused to k.

The retriever only translates types. The engine writes the clues, runs one search per clue
(over its own index, or over any LangChain retriever passed as ``base_retriever``) and fuses
the hit lists into exactly ``min(k, corpus)`` passages; this module turns those passages into
LangChain ``Document``s with provenance in their metadata.
"""

from __future__ import annotations

import asyncio
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
from shared_core.engine_ref import shared_engine_memo
from shared_core.errors import InputError, NoMemoryError
from shared_core.keywords import check_engine_keywords, refuse_unknown
from shared_core.retrieval.external import ExternalSearch, Ranked, provenance_metadata
from shared_core.types import Passage, ScoredPassage

if TYPE_CHECKING:
    from langchain_core.callbacks import AsyncCallbackManager, CallbackManager

    from shared_core.types import RetrievalResult

__all__ = ["MemoRAGRetriever"]

_NO_ENGINE = (
    "MemoRAGRetriever has no engine. Build one first, e.g. "
    "`engine = MemoRAG(); engine.memorize(texts)` then `MemoRAGRetriever(engine=engine)`, "
    "or use `MemoRAGRetriever.from_texts(texts)`."
)


#: Other retrievers' spellings, and what this one takes instead.
_HINTS = {
    "top_k": "k= is the number of documents returned",
    "n": "k= is the number of documents returned",
    "fetch_k": "search_k= is the depth of each search",
    "search_type": "the memory always fuses its searches; pass "
    "base_retriever=store.as_retriever(search_type=...) to search a store that way",
    "vectorstore": "pass base_retriever=vectorstore.as_retriever()",
    "retriever": "pass base_retriever=",
    "llm": "only from_texts / from_documents take llm=",
    "search_kwargs": "pass k=; MemoRAGRetriever(search_kwargs={'k': n}) means k=n",
}
#: ``invoke(query, **kwargs)``: what a call may change.
_CALL_KEYWORDS = ("k", "history")


def _fields(data: dict[str, Any], known: Sequence[str]) -> dict[str, Any]:
    """Constructor keywords, checked: ``search_kwargs={"k": n}`` (a vector-store retriever's
    spelling) means ``k=n``; any other key of it, and any unknown keyword, is refused."""
    data = dict(data)
    search_kwargs = data.pop("search_kwargs", None)
    refuse_unknown("MemoRAGRetriever", data, known, _HINTS)
    if search_kwargs is None:
        return data
    if not isinstance(search_kwargs, dict):
        raise InputError(f"search_kwargs must be a dict such as {{'k': 4}}, got {search_kwargs!r}")
    other = sorted(set(search_kwargs) - {"k"})
    if other:
        raise InputError(
            f"search_kwargs key(s) {other} are not supported: only 'k' (the number of documents "
            "returned); to search a vector store with filters or another search type, pass "
            "base_retriever=store.as_retriever(search_kwargs=...)"
        )
    if "k" in search_kwargs:
        if "k" in data and data["k"] != search_kwargs["k"]:
            raise InputError(
                f"k={data['k']!r} and search_kwargs={{'k': {search_kwargs['k']!r}}} disagree: "
                "pass one of them"
            )
        data["k"] = search_kwargs["k"]
    return data


def _accepts_k(method: Any) -> bool:
    """Whether a retriever method takes a ``k`` keyword (by name or through ``**kwargs``).

    LangChain has no declared way to ask a retriever for ``k`` results; a ``k`` keyword is
    the convention (vector-store retrievers, ``BM25Retriever``, ...).
    """
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


def _ranked(docs: Sequence[Document]) -> list[Ranked]:
    """LangChain documents (rank order, no scores) -> engine items; the document rides along."""
    return [
        Ranked(
            Passage(id=_passage_id(d), text=d.page_content, metadata=dict(d.metadata), payload=d)
        )
        for d in docs
    ]


class _LangChainSource:
    """A LangChain retriever as a ``RankedSource``, run as a child of the caller's run."""

    def __init__(
        self, retriever: BaseRetriever, callbacks: CallbackManager | AsyncCallbackManager
    ) -> None:
        self.retriever = retriever
        self.callbacks = callbacks
        self.takes_k = _accepts_k(retriever._get_relevant_documents)
        self.atakes_k = self.takes_k and _accepts_k(retriever._aget_relevant_documents)

    def fetch(self, query: str, depth: int) -> list[Ranked]:
        extra = {"k": depth} if self.takes_k else {}
        return _ranked(self.retriever.invoke(query, config={"callbacks": self.callbacks}, **extra))

    async def afetch(self, query: str, depth: int) -> list[Ranked]:
        if self.takes_k and not self.atakes_k:
            # Only the sync method takes k (LangChain's default async one does not): run it in
            # a thread, so the depth is the same whichever way the adapter is called.
            return await asyncio.to_thread(self.fetch, query, depth)
        extra = {"k": depth} if self.atakes_k else {}
        config = {"callbacks": self.callbacks}
        return _ranked(await self.retriever.ainvoke(query, config=config, **extra))


def _to_document(scored: ScoredPassage) -> Document:
    """An engine result -> a new LangChain ``Document`` with provenance metadata."""
    passage = scored.passage
    original = passage.payload if isinstance(passage.payload, Document) else None
    base = original.metadata if original is not None else passage.metadata
    metadata = {**provenance_metadata(scored, base), "relevance_score": float(scored.score)}
    if original is not None:
        return original.model_copy(update={"id": passage.id, "metadata": metadata})
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
        search_k: Depth of each search (the query's and every clue's), over the engine's own
            index or ``base_retriever`` alike; default the engine's ``max(k, ret_hit)``.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    engine: Any = Field(default=None, exclude=True)
    k: int = Field(default=4, ge=1)
    base_retriever: BaseRetriever | None = None
    search_k: int | None = Field(default=None, ge=1)

    def __init__(self, **data: Any) -> None:
        """Unknown keywords are refused by name; ``search_kwargs={"k": n}`` is ``k=n``."""
        known = [*type(self).model_fields, *(f.alias for f in type(self).model_fields.values())]
        super().__init__(**_fields(data, [name for name in known if name]))

    def __deepcopy__(self, memo: dict[int, Any] | None = None) -> MemoRAGRetriever:
        """A copy around the same engine (its weights and memory are shared, not cloned)."""
        return super().__deepcopy__(shared_engine_memo(memo, self.engine))

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

        check_engine_keywords("MemoRAGRetriever.from_texts", engine_kwargs, _HINTS)
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

        check_engine_keywords("MemoRAGRetriever.from_documents", engine_kwargs, _HINTS)
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

        check_engine_keywords("MemoRAGRetriever.load", engine_kwargs, _HINTS)
        return cls(engine=MemoRAG.from_dir(save_dir, **engine_kwargs), k=k)

    # -- retrieval ---------------------------------------------------------------------------

    def _require_engine(self) -> Any:
        if self.engine is None:
            raise NoMemoryError(_NO_ENGINE)
        return self.engine

    def _options(
        self,
        run_manager: CallbackManagerForRetrieverRun | AsyncCallbackManagerForRetrieverRun,
        history: Sequence[BaseMessage] | None,
    ) -> dict[str, Any]:
        """The engine's retrieve options: back-end (a child run), history, search depth."""
        search = None
        if self.base_retriever is not None:
            source = _LangChainSource(self.base_retriever, run_manager.get_child())
            search = ExternalSearch(source)
        turns = to_chat_turns(history or ())
        return {"search": search, "history": turns, "search_k": self.search_k}

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
        "Did he ...?" before writing clues. Other keyword arguments are refused by name.
        """
        refuse_unknown("MemoRAGRetriever.invoke", kwargs, _CALL_KEYWORDS, _HINTS)
        engine = self._require_engine()
        result: RetrievalResult = engine.retrieve(
            query, self.k if k is None else k, **self._options(run_manager, history)
        )
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
        refuse_unknown("MemoRAGRetriever.ainvoke", kwargs, _CALL_KEYWORDS, _HINTS)
        engine = self._require_engine()
        result: RetrievalResult = await engine.aretrieve(
            query, self.k if k is None else k, **self._options(run_manager, history)
        )
        return [_to_document(p) for p in result.passages]
