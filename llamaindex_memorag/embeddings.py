"""``MemoRAGEmbedding``: the engine's embedder (offline all-MiniLM-L6-v2 by default) as a
LlamaIndex embedding model, so an index can be built without the OpenAI default."""

from __future__ import annotations

from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.bridge.pydantic import PrivateAttr

from shared_core.retrieval.embeddings import Embedder

__all__ = ["MemoRAGEmbedding"]


class MemoRAGEmbedding(BaseEmbedding):
    """A LlamaIndex ``BaseEmbedding`` over a ``shared_core`` ``Embedder`` (loads on first use).

    ``MemoRAGEmbedding()``: the embedded default; ``MemoRAGEmbedding("org/model")``: a
    sentence-transformers model; ``MemoRAGEmbedding.from_engine(engine)``: the engine's own.
    """

    _embedder: Embedder = PrivateAttr()

    def __init__(
        self,
        model_name_or_path: str | None = None,
        *,
        embedder: Embedder | None = None,
        **load_options: Any,
    ) -> None:
        embedder = embedder or Embedder.load(model_name_or_path, **load_options)
        super().__init__(model_name=embedder.name)
        self._embedder = embedder

    @classmethod
    def from_engine(cls, engine: Any) -> MemoRAGEmbedding:
        """Embed with the same model (and loaded weights) as ``engine``'s own index."""
        return cls(embedder=engine.embedder)

    @classmethod
    def class_name(cls) -> str:
        return "MemoRAGEmbedding"

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._embedder.embed_queries([query])[0].tolist()

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._embedder.embed_passages([text])[0].tolist()

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self._embedder.embed_passages(texts).tolist()
