"""LangChain ``MultiQueryRetriever`` on ``MemoryLLM``: the framework's query-generation prompt
gets search queries back, each searched by ``MemoRAGRetriever``.

``python examples/recipes/multi_query.py`` (embedded models, offline).
"""

from __future__ import annotations

import json
from typing import Any

from langchain_classic.retrievers.multi_query import MultiQueryRetriever

from langchain_memorag import MemoRAGRetriever, MemoryLLM
from shared_core import MemoRAG

TEXTS = [
    "Mary Shelley left her house in Bath to her sister Ann.",
    "Mary Shelley left her library to the village school in Marlow.",
    "The school in Marlow was founded in 1820 by John Smith.",
]
QUESTION = "What did Mary Shelley leave to the school?"


def run(engine: Any) -> dict[str, Any]:
    """Return the generated queries and the documents found for them."""
    llm = MemoryLLM(engine=engine, max_tokens=60)
    retriever = MultiQueryRetriever.from_llm(MemoRAGRetriever.from_engine(engine, k=1), llm)
    queries = retriever.llm_chain.invoke({"question": QUESTION})  # what it will search for
    docs = retriever.invoke(QUESTION)
    return {"queries": queries, "documents": [d.page_content for d in docs]}


def main() -> None:
    engine = MemoRAG()
    engine.memorize(TEXTS)
    print(json.dumps(run(engine), indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
