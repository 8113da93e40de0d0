"""LangChain retriever over a MemoRAG engine: the memory's heads (or clues) over any store.

The retriever only translates types. The engine searches its own index, or any LangChain
retriever passed as ``base_retriever`` (a vector store's ``as_retriever()``, BM25, ...), lets
the memory's retrieval heads re-rank what the searches returned, and fuses the lists into
exactly ``min(k, corpus)`` passages; this module turns those passages into LangChain
``Document``s. A vector store's retriever (``search_type="similarity"``) is asked for its
relevance scores, so the store's own scores take part in fusion.
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
from langchain_core.vectorstores import VectorStore, VectorStoreRetriever
from pydantic import ConfigDict, Field

from langchain_memorag.chat_models import to_chat_turns
from shared_core.engine_ref import shared_engine_memo
from shared_core.errors import InputError, NoMemoryError
from shared_core.keywords import check_engine_keywords, refuse_unknown
from shared_core.retrieval.external import (
    ExternalSearch,
    Ranked,
    located,
    passage_metadata,
)
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


def _passage(doc: Document) -> Passage:
    """A LangChain document as an engine passage (the document rides along as the payload);
    a text splitter's ``start_index`` tells the heads where it lies in its document."""
    start = doc.metadata.get("start_index")
    end = start + len(doc.page_content) if isinstance(start, int) else None
    meta = located(doc.metadata, start=start, end=end)
    return Passage(id=_passage_id(doc), text=doc.page_content, metadata=meta, payload=doc)


def _ranked(docs: Sequence[Document]) -> list[Ranked]:
    """LangChain documents (rank order, no scores) -> engine items."""
    return [Ranked(_passage(d)) for d in docs]


def _scored(pairs: Sequence[tuple[Document, float]]) -> list[Ranked]:
    """A vector store's ``(document, relevance score)`` pairs -> engine items."""
    return [Ranked(_passage(d), float(score)) for d, score in pairs]


class _LangChainSource:
    """A LangChain retriever as a ``RankedSource``, run as a child of the caller's run."""

    def __init__(
        self, retriever: BaseRetriever, callbacks: CallbackManager | AsyncCallbackManager
    ) -> None:
        self.retriever = retriever
        self.callbacks = callbacks
        self.takes_k = _accepts_k(retriever._get_relevant_documents)
        self.atakes_k = self.takes_k and _accepts_k(retriever._aget_relevant_documents)

        self.store = _plain_store(retriever)

    def fetch(self, query: str, depth: int) -> list[Ranked]:
        if self.store is not None:
            kwargs = {**self.retriever.search_kwargs, "k": depth}  # type: ignore[union-attr]
            try:
                return _scored(self.store.similarity_search_with_relevance_scores(query, **kwargs))
            except NotImplementedError:  # the store has no relevance scale: rank only
                self.store = None
        extra = {"k": depth} if self.takes_k else {}
        return _ranked(self.retriever.invoke(query, config={"callbacks": self.callbacks}, **extra))

    async def afetch(self, query: str, depth: int) -> list[Ranked]:
        if self.store is not None:
            kwargs = {**self.retriever.search_kwargs, "k": depth}  # type: ignore[union-attr]
            try:
                found = await self.store.asimilarity_search_with_relevance_scores(query, **kwargs)
                return _scored(found)
            except NotImplementedError:  # the store has no relevance scale: rank only
                self.store = None
        if self.takes_k and not self.atakes_k:
            # Only the sync method takes k (LangChain's default async one does not): run it in
            # a thread, so the depth is the same whichever way the adapter is called.
            return await asyncio.to_thread(self.fetch, query, depth)
        extra = {"k": depth} if self.atakes_k else {}
        config = {"callbacks": self.callbacks}
        return _ranked(await self.retriever.ainvoke(query, config=config, **extra))


def _plain_store(retriever: BaseRetriever) -> VectorStore | None:
    """The vector store behind a plain similarity retriever (its scores can be asked for)."""
    if isinstance(retriever, VectorStoreRetriever) and retriever.search_type == "similarity":
        return retriever.vectorstore
    return None


def _to_document(scored: ScoredPassage, per_query: bool) -> Document:
    """An engine result -> a new LangChain ``Document``: a store's document keeps its id and
    metadata; an engine chunk gets its chunk id and position. ``per_query`` adds
    ``relevance_score`` and the clues that found it."""
    passage = scored.passage
    original = passage.payload if isinstance(passage.payload, Document) else None
    base = original.metadata if original is not None else passage.metadata
    metadata = passage_metadata(scored, base, own=original is None, per_query=per_query)
    if per_query:
        metadata["relevance_score"] = float(scored.score)
    if original is not None:
        return original.model_copy(update={"id": passage.id, "metadata": metadata})
    return Document(page_content=passage.text, metadata=metadata, id=passage.id)


class MemoRAGRetriever(BaseRetriever):
    """Retrieve with a MemoRAG memory (its retrieval heads, or its clues), fused into exactly
    ``k`` documents, over the engine's own index or any LangChain retriever.

    A document from ``base_retriever`` comes back as a copy with its own id and metadata
    (plus ``memorag_in_memory=False`` when the memory never read it); one from the engine's
    index has its chunk id as ``id`` and ``source_id``, ``doc_id``, ``start``, ``end``,
    ``chunk_id`` in its metadata. The metadata is the same whatever the query, so
    ``MultiQueryRetriever`` and ``EnsembleRetriever`` merge the same passage found twice.
    ``query_metadata=True`` adds per-query keys: ``relevance_score`` (the passage's cosine
    similarity to the query under the engine's embedder, in [-1, 1], falling down the list)
    and ``memorag_clues`` / ``memorag_clue_kinds`` (what found it); ``score_threshold`` drops
    documents whose relevance is below it.
    Per call: ``invoke(q, k=3)`` changes k; ``invoke(q, history=messages)`` passes earlier chat
    messages so the memory can resolve a follow-up ("Did he ...?") before writing clues.

    Attributes:
        engine: A ``RetrievalEngine`` (``shared_core.MemoRAG`` or any object with its methods).
        k: Number of documents returned (``invoke(q, k=3)`` overrides it per call).
        base_retriever: Optional LangChain retriever searched once per clue instead of the
            engine's own index; its documents (and metadata) come back as copies.
        search_k: Depth of each search (the query's and every clue's), over the engine's own
            index or ``base_retriever`` alike; default the engine's ``max(k, ret_hit)``, and at
            least the engine's ``candidate_k`` on the heads route.
        query_metadata: Add per-query metadata (``relevance_score``, clues); off by default so
            that framework de-duplication sees the same passage as equal.
        score_threshold: Drop documents whose relevance to the query is below this.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    engine: Any = Field(default=None, exclude=True)
    k: int = Field(default=4, ge=1)
    base_retriever: BaseRetriever | None = None
    search_k: int | None = Field(default=None, ge=1)
    query_metadata: bool = False
    score_threshold: float | None = None

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
        vectorstore: VectorStore | None = None,
        ids: Sequence[str] | None = None,
        **engine_kwargs: Any,
    ) -> MemoRAGRetriever:
        """Build a ``MemoRAG`` engine (``engine_kwargs``), memorize ``texts`` and wrap it.

        ``llm``: a LangChain chat model that writes the (gist) memory, the clues and answers.
        ``vectorstore``: also add the texts to this store (with the same ``ids``, default
        ``doc-0``, ``doc-1``, ...) and search it instead of the engine's own index; the heads
        re-rank what it returns.
        """
        from shared_core.types import Document as CoreDocument

        check_engine_keywords("MemoRAGRetriever.from_texts", engine_kwargs, _HINTS)
        if metadatas is not None and len(metadatas) != len(texts):
            raise ValueError(f"got {len(metadatas)} metadatas for {len(texts)} texts")
        if ids is not None and len(ids) != len(texts):
            raise ValueError(f"got {len(ids)} ids for {len(texts)} texts")
        metas = metadatas if metadatas is not None else [{}] * len(texts)
        names = list(ids) if ids is not None else [f"doc-{i}" for i in range(len(texts))]
        docs = [
            CoreDocument(text=t, doc_id=n, metadata=dict(m))
            for t, n, m in zip(texts, names, metas, strict=True)
        ]
        retriever = cls._memorize(docs, k=k, engine_kwargs=engine_kwargs, llm=llm)
        if vectorstore is not None:
            vectorstore.add_texts(list(texts), metadatas=[dict(m) for m in metas], ids=names)
            retriever.base_retriever = vectorstore.as_retriever()
        return retriever

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
        return self._documents(result)

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
        return self._documents(result)

    def _documents(self, result: RetrievalResult) -> list[Document]:
        cut = self.score_threshold
        kept = [p for p in result.passages if cut is None or p.score >= cut]
        return [_to_document(p, self.query_metadata) for p in kept]
