"""LangChain ``LLMChainFilter`` on ``MemoryLLM``: the filter's YES / NO prompt is answered
with YES or NO (a constrained choice), so ``BooleanOutputParser`` always parses it.

``python examples/recipes/chain_filter.py`` (embedded models, offline).
"""

from __future__ import annotations

import json
from typing import Any

from langchain_classic.retrievers.document_compressors import LLMChainFilter
from langchain_core.documents import Document

from langchain_memorag import MemoryLLM
from shared_core import MemoRAG

TEXTS = [
    "Mary Shelley left her house in Bath to her sister Ann.",
    "Mary Shelley left her library to the village school in Marlow.",
    "The school in Marlow was founded in 1820 by John Smith.",
    "Bath is a city in Somerset known for its Roman baths.",
]
QUESTION = "Who founded the school in Marlow?"


def run(engine: Any) -> dict[str, Any]:
    """Filter the four passages for the question; return the ones kept."""
    filt = LLMChainFilter.from_llm(MemoryLLM(engine=engine))
    kept = filt.compress_documents([Document(page_content=t) for t in TEXTS], QUESTION)
    return {"kept": [d.page_content for d in kept], "of": len(TEXTS)}


def main() -> None:
    engine = MemoRAG()
    engine.memorize(TEXTS)
    print(json.dumps(run(engine), indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
