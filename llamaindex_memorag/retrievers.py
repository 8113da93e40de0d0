"""``MemoRAGRetriever``: MemoRAG clue-driven retrieval as a LlamaIndex ``BaseRetriever``.

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
from shared_core.types import Document, Hit, Passage, RetrievalResult, ScoredPassage

if TYPE_CHECKING:
    from llama_index.core.indices.base import BaseIndex
    from llama_index.core.llms import LLM

    from shared_core.types import RetrievalEngine

logger = logging.getLogger(__name__)

#: Metadata keys this retriever adds to every node (kept out of embeddings and prompts).
MEMORAG_METADATA_KEYS: tuple[str, ...] = ("memorag_clues", "memorag_clue_kinds", "source_id")
#: Bookkeeping keys the engine puts on its own passages; shown to neither embedder nor LLM.
_ENGINE_METADATA_KEYS: tuple[str, ...] = ("doc_id", "chunk_id", "start", "end")


class _RetrieverSearch:
    """A LlamaIndex retriever seen as a ``SearchBackend`` / ``AsyncSearchBackend``.

    The wrapped retriever decides how many hits it returns; ``top_k`` (if set) caps them.
    Each ``NodeWithScore`` rides along as the passage payload, untouched.
    """

    def __init__(self, retriever: BaseRetriever, top_k: int | None = None) -> None:
        self.retriever = retriever
        self.top_k = top_k

    def _hits(self, nodes: Sequence[NodeWithScore]) -> list[Hit]:
        if self.top_k is not None:
            nodes = nodes[: self.top_k]
        return [
            Hit(
                passage=Passage(
                    id=nws.node.node_id,
                    text=nws.node.get_content(metadata_mode=MetadataMode.NONE),
                    metadata=dict(nws.node.metadata),
                    payload=nws,
                ),
                score=float(nws.score) if nws.score is not None else 0.0,
                rank=rank,
            )
            for rank, nws in enumerate(nodes)
        ]

    def search(self, query: str, k: int) -> list[Hit]:
        return self._hits(self.retriever.retrieve(query))

    async def asearch(self, query: str, k: int) -> list[Hit]:
        return self._hits(await self.retriever.aretrieve(query))


def _extend_unique(keys: Sequence[str], extra: Sequence[str]) -> list[str]:
    return [*keys, *(key for key in extra if key not in keys)]


def _to_node(scored: ScoredPassage) -> NodeWithScore:
    """Translate one fused passage into a ``NodeWithScore`` (a copy; inputs are never mutated)."""
    passage = scored.passage
    clue_keys = {
        "memorag_clues": [clue.text for clue in scored.found_by],
        "memorag_clue_kinds": [clue.kind for clue in scored.found_by],
    }
    payload = passage.payload
    original = payload.node if isinstance(payload, NodeWithScore) else payload
    if isinstance(original, BaseNode):
        node = original.model_copy()
        node.metadata = {"source_id": passage.id, **original.metadata, **clue_keys}
        node.relationships = dict(original.relationships)
        hidden: Sequence[str] = MEMORAG_METADATA_KEYS
    else:
        metadata = dict(passage.metadata)
        doc_id = metadata.get("doc_id")
        start, end = metadata.get("start"), metadata.get("end")
        node = TextNode(
            id_=passage.id,
            text=passage.text,
            metadata={"source_id": passage.id, **metadata, **clue_keys},
            start_char_idx=start if isinstance(start, int) else None,
            end_char_idx=end if isinstance(end, int) else None,
        )
        if isinstance(doc_id, str) and doc_id != passage.id:
            node.relationships = {NodeRelationship.SOURCE: RelatedNodeInfo(node_id=doc_id)}
        hidden = (*MEMORAG_METADATA_KEYS, *_ENGINE_METADATA_KEYS)
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
        search_top_k: with ``base_retriever``, keep at most this many of its hits per clue.
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
            if base_retriever is None:
                raise ValueError(
                    "search_top_k caps the hits taken from base_retriever; without a "
                    "base_retriever the engine's own index decides its search depth"
                )
        if base_retriever is not None and not isinstance(base_retriever, BaseRetriever):
            raise TypeError(
                "base_retriever must be a llama_index BaseRetriever, got "
                f"{type(base_retriever).__name__}"
            )
        base_k = getattr(base_retriever, "similarity_top_k", None)
        if isinstance(base_k, int) and base_k < similarity_top_k:
            logger.warning(
                "base_retriever returns %d nodes per query, fewer than similarity_top_k=%d: "
                "results may be fewer than similarity_top_k",
                base_k,
                similarity_top_k,
            )
        self._engine = engine
        self._base_retriever = base_retriever
        self._similarity_top_k = similarity_top_k
        self._search_top_k = search_top_k
        self._search = (
            _RetrieverSearch(base_retriever, search_top_k) if base_retriever is not None else None
        )
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
        ``engine``) and searched with its own index. ``index`` is searched through
        ``index.as_retriever(similarity_top_k=search_top_k or similarity_top_k)`` and its
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
        base_retriever: BaseRetriever | None = None
        if index is not None:
            items = list(index.docstore.docs.values())
            if not items:
                raise ValueError(
                    "index has no nodes in its docstore (an external vector store that keeps "
                    "the text elsewhere?); pass nodes= to memorize them"
                )
            base_retriever = index.as_retriever(similarity_top_k=search_top_k or similarity_top_k)
            search_top_k = None
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
        return cls(
            engine,
            base_retriever=base_retriever,
            similarity_top_k=similarity_top_k,
            search_top_k=search_top_k,
            callback_manager=callback_manager,
            verbose=verbose,
        )

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

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        result = self._engine.retrieve(
            query_bundle.query_str,
            self._similarity_top_k,
            search=self._search,
            extra_queries=self._extra_queries(query_bundle),
        )
        return self._nodes(result)

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        result = await self._engine.aretrieve(
            query_bundle.query_str,
            self._similarity_top_k,
            search=self._search,
            extra_queries=self._extra_queries(query_bundle),
        )
        return self._nodes(result)

    def _get_prompts(self) -> PromptDictType:
        return {}

    def _update_prompts(self, prompts: PromptDictType) -> None:
        return None
