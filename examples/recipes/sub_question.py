"""LlamaIndex ``SubQuestionQueryEngine`` driven by ``MemoryLLM``: ``MemoryQuestionGenerator``
writes the sub-questions under a JSON grammar (each names one of the tools), each tool answers
with a MemoRAG query engine, and ``MemoryLLM`` writes the final answer.

``python examples/recipes/sub_question.py`` (embedded models, offline).
"""

from __future__ import annotations

import json
from typing import Any

from llama_index.core.query_engine import SubQuestionQueryEngine
from llama_index.core.tools import QueryEngineTool

from llamaindex_memorag import (
    MemoRAGRetriever,
    MemoryLLM,
    MemoryQuestionGenerator,
    memorag_query_engine,
)
from shared_core import MemoRAG

TEXTS = [
    "Mary Shelley left her house in Bath to her sister Ann.",
    "Mary Shelley left her library to the village school in Marlow.",
    "The school in Marlow was founded in 1820 by John Smith.",
]
QUESTION = "What did Ann get, and who founded the school that got the library?"


def run(engine: Any) -> dict[str, Any]:
    """Return the sub-questions asked (with their tool) and the final answer."""
    llm = MemoryLLM(engine=engine, num_output=48)
    tool = QueryEngineTool.from_defaults(
        memorag_query_engine(MemoRAGRetriever(engine, similarity_top_k=1), llm=llm),
        name="estate",
        description="Facts about Mary Shelley's will and the school in Marlow.",
    )
    asked: list[tuple[str, str]] = []

    class Recording(MemoryQuestionGenerator):
        def generate(self, tools, query):  # type: ignore[no-untyped-def]
            questions = super().generate(tools, query)
            asked.extend((q.sub_question, q.tool_name) for q in questions)
            return questions

    generator = Recording(engine)
    engine_qe = SubQuestionQueryEngine.from_defaults(
        [tool], llm=llm, question_gen=generator, use_async=False
    )
    response = engine_qe.query(QUESTION)
    return {"sub_questions": asked, "answer": str(response)}


def main() -> None:
    engine = MemoRAG()
    engine.memorize(TEXTS)
    print(json.dumps(run(engine), indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
