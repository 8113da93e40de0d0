"""``MemoRAGEmbeddings``: the engine's embedder (offline all-MiniLM-L6-v2 by default) as
LangChain ``Embeddings``, so your own vector store can be built without a hosted model."""

from __future__ import annotations

from typing import Any

from langchain_core.embeddings import Embeddings

from shared_core.retrieval.embeddings import Embedder

__all__ = ["MemoRAGEmbeddings"]


class MemoRAGEmbeddings(Embeddings):
    """LangChain embeddings over a ``shared_core`` ``Embedder`` (the model loads on first use).

    ``MemoRAGEmbeddings()``: the embedded default; ``MemoRAGEmbeddings("org/model")``: a
    sentence-transformers model; ``MemoRAGEmbeddings.from_engine(engine)``: the engine's own.
    """

    def __init__(
        self,
        model_name_or_path: str | None = None,
        *,
        embedder: Embedder | None = None,
        **load_options: Any,
    ) -> None:
        self.embedder = embedder or Embedder.load(model_name_or_path, **load_options)

    @classmethod
    def from_engine(cls, engine: Any) -> MemoRAGEmbeddings:
        """Embed with the same model (and loaded weights) as ``engine``'s own index."""
        return cls(embedder=engine.embedder)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.embedder.embed_passages(texts).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.embedder.embed_queries([text])[0].tolist()
