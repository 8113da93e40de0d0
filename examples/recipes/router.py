"""LlamaIndex ``RouterQueryEngine`` driven by ``MemoryLLM``: ``MemorySelector`` picks the query
engine by its description (a constrained choice: always one of the engines).

``python examples/recipes/router.py`` (embedded models, offline).
"""

from __future__ import annotations

import json
from typing import Any

from llama_index.core.query_engine import RouterQueryEngine
from llama_index.core.tools import QueryEngineTool

from llamaindex_memorag import MemoRAGRetriever, MemoryLLM, MemorySelector, memorag_query_engine
from shared_core import MemoRAG

TEXTS = [
    "Mary Shelley left her house in Bath to her sister Ann.",
    "Mary Shelley left her library to the village school in Marlow.",
    "The school in Marlow was founded in 1820 by John Smith.",
]
QUESTIONS = ["Summarize the whole text.", "Who founded the school in Marlow?"]


def run(engine: Any) -> dict[str, Any]:
    """Route each question; return which engine answered it."""
    llm = MemoryLLM(engine=engine, num_output=48)
    tools = [
        QueryEngineTool.from_defaults(
            memorag_query_engine(
                MemoRAGRetriever(engine, similarity_top_k=3),
                llm=llm,
                response_mode="tree_summarize",
            ),
            name="summary",
            description="Summaries of the whole text.",
        ),
        QueryEngineTool.from_defaults(
            memorag_query_engine(MemoRAGRetriever(engine, similarity_top_k=1), llm=llm),
            name="facts",
            description="Specific facts: who, what, when.",
        ),
    ]
    router = RouterQueryEngine(selector=MemorySelector(engine), query_engine_tools=tools, llm=llm)
    routed = []
    for question in QUESTIONS:
        response = router.query(question)
        index = response.metadata["selector_result"].ind
        routed.append({"question": question, "engine": tools[index].metadata.name})
    return {"routed": routed}


def main() -> None:
    engine = MemoRAG()
    engine.memorize(TEXTS)
    print(json.dumps(run(engine), indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
