"""``MemoRAGQueryTransform``: the memory's clues as ``QueryBundle.custom_embedding_strs``.

Lets any LlamaIndex retriever or query engine use MemoRAG clues through
``TransformRetriever`` / ``TransformQueryEngine``. Note that ``VectorIndexRetriever`` *averages*
the embeddings of the custom strings; for one search per clue fused by rank, use
``MemoRAGRetriever`` instead.
"""

from __future__ import annotations

from typing import Any

from llama_index.core.indices.query.query_transform.base import BaseQueryTransform
from llama_index.core.prompts.mixin import PromptDictType
from llama_index.core.schema import QueryBundle

from shared_core.types import RetrievalEngine


class MemoRAGQueryTransform(BaseQueryTransform):
    """Add the clue texts ``engine.clues(query)`` to the bundle's embedding strings.

    The result's ``custom_embedding_strs`` are the original query, any custom strings the
    bundle already had, then the clues (duplicates dropped, order kept).
    """

    def __init__(self, engine: RetrievalEngine) -> None:
        if engine is None:
            raise ValueError("MemoRAGQueryTransform needs an engine that has memorized text")
        self._engine = engine
        super().__init__()

    @property
    def engine(self) -> RetrievalEngine:
        """The engine writing the clues."""
        return self._engine

    def _run(self, query_bundle: QueryBundle, metadata: dict[str, Any]) -> QueryBundle:
        query = query_bundle.query_str
        strings: list[str] = []
        for text in [
            query,
            *(query_bundle.custom_embedding_strs or ()),
            *(clue.text for clue in self._engine.clues(query)),
        ]:
            if text and text not in strings:
                strings.append(text)
        return QueryBundle(
            query_str=query,
            image_path=query_bundle.image_path,
            custom_embedding_strs=strings,
            embedding=query_bundle.embedding,
        )

    def _get_prompts(self) -> PromptDictType:
        return {}

    def _update_prompts(self, prompts: PromptDictType) -> None:
        return None
