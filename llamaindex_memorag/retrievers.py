"""``MemoRAGRetriever``: MemoRAG memory-guided retrieval as a LlamaIndex ``BaseRetriever``.

The memory writes clues for the query, every clue (and the query, and any
``QueryBundle.custom_embedding_strs``) is searched, and the engine fuses the hit lists into
exactly ``min(similarity_top_k, corpus)`` nodes. The search back-end is the engine's own index,
or any LlamaIndex retriever passed as ``base_retriever``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.callbacks.base import CallbackManager
from llama_index.core.constants import DEFAULT_SIMILARITY_TOP_K
from llama_index.core.indices.base import BaseIndex
from llama_index.core.indices.vector_store.retrievers import VectorIndexRetriever
from llama_index.core.prompts.mixin import PromptDictType
from llama_index.core.schema import (
    BaseNode,
    MetadataMode,
    NodeRelationship,
    NodeWithScore,
    QueryBundle,
    RelatedNodeInfo,
    TextNode,
)
from llama_index.core.utils import print_text

from shared_core.inputs import check_k
from shared_core.retrieval.external import (
    PROVENANCE_KEYS,
    ExternalSearch,
    Ranked,
    RankedSource,
    provenance_metadata,
)
from shared_core.types import Document, Passage, RetrievalResult, ScoredPassage

if TYPE_CHECKING:
    from llama_index.core.llms import LLM

    from shared_core.types import RetrievalEngine

logger = logging.getLogger(__name__)

#: Metadata keys this retriever adds to every node (kept out of embeddings and prompts).
MEMORAG_METADATA_KEYS: tuple[str, ...] = PROVENANCE_KEYS
#: Bookkeeping keys the engine puts on its own passages; shown to neither embedder nor LLM.
_ENGINE_METADATA_KEYS: tuple[str, ...] = ("doc_id", "chunk_id", "start", "end")


def _ranked(nodes: Sequence[NodeWithScore]) -> list[Ranked]:
    """LlamaIndex results -> engine items; each ``NodeWithScore`` rides along untouched."""
    return [
        Ranked(
            Passage(
                id=nws.node.node_id,
                text=nws.node.get_content(metadata_mode=MetadataMode.NONE),
                metadata=dict(nws.node.metadata),
                payload=nws,
            ),
            None if nws.score is None else float(nws.score),
        )
        for nws in nodes
    ]


class _RetrieverSource:
    """A LlamaIndex retriever as a ``RankedSource``.

    A LlamaIndex ``BaseRetriever`` takes no per-call depth: it returns what it was built to
    return, and the engine keeps the first ``depth`` distinct nodes.
    """

    def __init__(self, retriever: BaseRetriever) -> None:
        self.retriever = retriever

    def fetch(self, query: str, depth: int) -> list[Ranked]:
        return _ranked(self.retriever.retrieve(query))

    async def afetch(self, query: str, depth: int) -> list[Ranked]:
        return _ranked(await self.retriever.aretrieve(query))


class _IndexSource:
    """A LlamaIndex index as a ``RankedSource`` that is asked for exactly ``depth`` nodes."""

    def __init__(self, index: BaseIndex[Any]) -> None:
        self.index = index

    def fetch(self, query: str, depth: int) -> list[Ranked]:
        return _ranked(self.index.as_retriever(similarity_top_k=depth).retrieve(query))

    async def afetch(self, query: str, depth: int) -> list[Ranked]:
        retriever = self.index.as_retriever(similarity_top_k=depth)
        return _ranked(await retriever.aretrieve(query))


def _extend_unique(keys: Sequence[str], extra: Sequence[str]) -> list[str]:
    return [*keys, *(key for key in extra if key not in keys)]


def _to_node(scored: ScoredPassage) -> NodeWithScore:
    """Translate one fused passage into a ``NodeWithScore`` (a copy; inputs are never mutated)."""
    passage = scored.passage
    payload = passage.payload
    original = payload.node if isinstance(payload, NodeWithScore) else payload
    if isinstance(original, BaseNode):
        node = original.model_copy()
        node.metadata = provenance_metadata(scored, original.metadata)
        node.relationships = dict(original.relationships)
        hidden: Sequence[str] = PROVENANCE_KEYS
    else:
        metadata = dict(passage.metadata)
        doc_id = metadata.get("doc_id")
        start, end = metadata.get("start"), metadata.get("end")
        node = TextNode(
            id_=passage.id,
            text=passage.text,
            metadata=provenance_metadata(scored, metadata),
            start_char_idx=start if isinstance(start, int) else None,
            end_char_idx=end if isinstance(end, int) else None,
        )
        if isinstance(doc_id, str) and doc_id != passage.id:
            node.relationships = {NodeRelationship.SOURCE: RelatedNodeInfo(node_id=doc_id)}
        hidden = (*PROVENANCE_KEYS, *_ENGINE_METADATA_KEYS)
    node.excluded_embed_metadata_keys = _extend_unique(node.excluded_embed_metadata_keys, hidden)
    node.excluded_llm_metadata_keys = _extend_unique(node.excluded_llm_metadata_keys, hidden)
    return NodeWithScore(node=node, score=scored.score)


def _to_documents(nodes: Sequence[BaseNode]) -> list[Document]:
    return [
        Document(
            text=node.get_content(metadata_mode=MetadataMode.NONE),
            doc_id=node.node_id,
            metadata=dict(node.metadata),
        )
        for node in nodes
    ]


class MemoRAGRetriever(BaseRetriever):
    """Retrieve with the query plus the clues a MemoRAG memory writes for it.

    Args:
        engine: a ``RetrievalEngine`` (``shared_core.MemoRAG``) that has memorized the corpus.
        base_retriever: optional LlamaIndex retriever searched once per clue instead of the
            engine's own index; its nodes (ids, metadata, relationships) are returned as copies.
            It should return at least ``similarity_top_k`` nodes per query.
        similarity_top_k: how many nodes to return (exactly, unless the corpus is smaller).
        search_top_k: depth of each search (the query's and every clue's), over the engine's
            own index or ``base_retriever`` alike; default the engine's
            ``max(similarity_top_k, ret_hit)``. A ``base_retriever`` returns what it was built
            to return (LlamaIndex retrievers take no per-call depth) and is cut to this depth;
            ``from_defaults(index=...)`` asks the index for exactly this many nodes.
        callback_manager: LlamaIndex callback manager.
        verbose: print retrieval progress.

    Every node's metadata gains ``memorag_clues`` / ``memorag_clue_kinds`` (which clues found
    it, in fusion order) and ``source_id`` (the passage id, unless the metadata already has
    one); these keys are excluded from embedding and LLM metadata. Nodes built from the
    engine's own passages get a ``SOURCE`` relationship to their document (``ref_doc_id``).
    """

    def __init__(
        self,
        engine: RetrievalEngine,
        *,
        base_retriever: BaseRetriever | None = None,
        similarity_top_k: int = DEFAULT_SIMILARITY_TOP_K,
        search_top_k: int | None = None,
        callback_manager: CallbackManager | None = None,
        verbose: bool = False,
    ) -> None:
        if engine is None:
            raise ValueError("MemoRAGRetriever needs an engine, e.g. MemoRAG().memorize(...)")
        check_k(similarity_top_k, name="similarity_top_k")
        if search_top_k is not None:
            check_k(search_top_k, name="search_top_k")
        if base_retriever is not None and not isinstance(base_retriever, BaseRetriever):
            raise TypeError(
                "base_retriever must be a llama_index BaseRetriever, got "
                f"{type(base_retriever).__name__}"
            )
        if (
            isinstance(base_retriever, VectorIndexRetriever)
            and base_retriever.similarity_top_k < similarity_top_k
        ):
            logger.warning(
                "base_retriever returns %d nodes per query, fewer than similarity_top_k=%d: "
                "results may be fewer than similarity_top_k",
                base_retriever.similarity_top_k,
                similarity_top_k,
            )
        self._engine = engine
        self._base_retriever = base_retriever
        self._similarity_top_k = similarity_top_k
        self._search_top_k = search_top_k
        source: RankedSource | None = None
        if isinstance(base_retriever, BaseRetriever):
            source = _RetrieverSource(base_retriever)
        self._search = ExternalSearch(source) if source is not None else None
        super().__init__(callback_manager=callback_manager, verbose=verbose)

    @property
    def engine(self) -> RetrievalEngine:
        """The engine this retriever calls."""
        return self._engine

    @property
    def similarity_top_k(self) -> int:
        """How many nodes each call returns (at most the corpus size)."""
        return self._similarity_top_k

    @property
    def base_retriever(self) -> BaseRetriever | None:
        """The wrapped LlamaIndex retriever, or ``None`` for the engine's own index."""
        return self._base_retriever

    # -- constructors -------------------------------------------------------------------------

    @classmethod
    def from_defaults(
        cls,
        *,
        nodes: Sequence[BaseNode] | None = None,
        documents: Sequence[BaseNode] | None = None,
        index: BaseIndex[Any] | None = None,
        similarity_top_k: int = DEFAULT_SIMILARITY_TOP_K,
        search_top_k: int | None = None,
        engine: RetrievalEngine | None = None,
        callback_manager: CallbackManager | None = None,
        verbose: bool = False,
        llm: LLM | None = None,
        **engine_kwargs: Any,
    ) -> MemoRAGRetriever:
        """Memorize exactly one of ``nodes``, ``documents`` or ``index`` and wrap it.

        ``llm``: a LlamaIndex LLM that writes the (gist) memory, the clues and the answers.

        ``nodes`` / ``documents`` are memorized by a new ``MemoRAG(**engine_kwargs)`` (or by
        ``engine``) and searched with its own index. ``index`` is searched itself, asked for
        ``search_top_k`` nodes per search (the engine's default depth when unset), and its
        docstore nodes are memorized, so results keep the index's node ids and metadata.
        """
        check_k(similarity_top_k, name="similarity_top_k")
        sources = {"nodes": nodes, "documents": documents, "index": index}
        given = [name for name, value in sources.items() if value is not None]
        if len(given) != 1:
            hint = (
                "; to wrap an engine that has already memorized, use MemoRAGRetriever(engine)"
                if not given and engine is not None
                else ""
            )
            found = ", ".join(given) or "none"
            raise ValueError(
                f"pass exactly one of nodes=, documents= or index= (got: {found}){hint}"
            )
        if engine is not None and engine_kwargs:
            raise ValueError(
                f"engine= and engine options {sorted(engine_kwargs)} both given: "
                "configure the engine you pass, or let from_defaults build one"
            )
        if index is not None:
            items = list(index.docstore.docs.values())
            if not items:
                raise ValueError(
                    "index has no nodes in its docstore (an external vector store that keeps "
                    "the text elsewhere?); pass nodes= to memorize them"
                )
        else:
            items = list(nodes if nodes is not None else documents)  # type: ignore[arg-type]
            if not items:
                raise ValueError(f"{given[0]}= is empty: there is nothing to memorize")
        bad = [type(item).__name__ for item in items if not isinstance(item, BaseNode)]
        if bad:
            raise TypeError(f"{given[0]} must hold LlamaIndex nodes/documents, got {bad[0]}")
        if engine is not None and llm is not None:
            raise ValueError("engine= and llm= both given: pass one of them")
        if engine is None and llm is not None:
            from llamaindex_memorag.llm_bridge import memorag_with_llama_llm

            engine = memorag_with_llama_llm(llm, **engine_kwargs)
        if engine is None:
            from shared_core import MemoRAG

            engine = MemoRAG(**engine_kwargs)
        engine.memorize(_to_documents(items))  # type: ignore[attr-defined]
        retriever = cls(
            engine,
            similarity_top_k=similarity_top_k,
            search_top_k=search_top_k,
            callback_manager=callback_manager,
            verbose=verbose,
        )
        if index is not None:
            # The index itself is the back-end, so every search asks it for its exact depth.
            retriever._base_retriever = index.as_retriever(
                similarity_top_k=search_top_k or similarity_top_k
            )
            retriever._search = ExternalSearch(_IndexSource(index))
        return retriever

    def persist(self, path: str, *, overwrite: bool = False) -> None:
        """Save the engine's memory and index to ``path`` (a ``base_retriever`` is not saved)."""
        self._engine.save(path, overwrite=overwrite)

    @classmethod
    def from_persist_dir(
        cls,
        path: str,
        *,
        similarity_top_k: int = DEFAULT_SIMILARITY_TOP_K,
        base_retriever: BaseRetriever | None = None,
        callback_manager: CallbackManager | None = None,
        verbose: bool = False,
        **engine_kwargs: Any,
    ) -> MemoRAGRetriever:
        """Load an engine saved by ``persist`` with ``MemoRAG.from_dir(path, **engine_kwargs)``."""
        check_k(similarity_top_k, name="similarity_top_k")
        from shared_core import MemoRAG

        return cls(
            MemoRAG.from_dir(path, **engine_kwargs),
            base_retriever=base_retriever,
            similarity_top_k=similarity_top_k,
            callback_manager=callback_manager,
            verbose=verbose,
        )

    # -- retrieval ----------------------------------------------------------------------------

    def _extra_queries(self, query_bundle: QueryBundle) -> list[str]:
        query = query_bundle.query_str
        extra: list[str] = []
        for text in query_bundle.custom_embedding_strs or ():
            if text and text != query and text not in extra:
                extra.append(text)
        return extra

    def _nodes(self, result: RetrievalResult) -> list[NodeWithScore]:
        if self._verbose:
            clues = "; ".join(f"{c.kind}: {c.text}" for c in result.clues)
            print_text(f"MemoRAG clues for {result.query!r}: {clues}\n", color="llama_pink")
        return [_to_node(scored) for scored in result.passages]

    def _options(self, query_bundle: QueryBundle) -> dict[str, Any]:
        """The engine's retrieve options: back-end, extra queries, search depth."""
        return {
            "search": self._search,
            "extra_queries": self._extra_queries(query_bundle),
            "search_k": self._search_top_k,
        }

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        query, k = query_bundle.query_str, self._similarity_top_k
        return self._nodes(self._engine.retrieve(query, k, **self._options(query_bundle)))

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        query, k = query_bundle.query_str, self._similarity_top_k
        result = await self._engine.aretrieve(query, k, **self._options(query_bundle))
        return self._nodes(result)

    def _get_prompts(self) -> PromptDictType:
        return {}

    def _update_prompts(self, prompts: PromptDictType) -> None:
        return None
