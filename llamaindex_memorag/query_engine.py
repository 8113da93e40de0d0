"""Thin helpers wiring MemoRAG retrievers and LLMs into LlamaIndex query engines and tools."""

from __future__ import annotations

from typing import Any

from llama_index.core.base.base_query_engine import BaseQueryEngine
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.llms import LLM
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.tools import QueryEngineTool

DEFAULT_TOOL_DESCRIPTION = (
    "Answers questions about the memorized documents. MemoRAG first recalls clues from a "
    "long-term memory of the whole text, then retrieves the passages they point to. "
    "Input: a full natural-language question."
)


def memorag_query_engine(
    retriever: BaseRetriever, llm: LLM, *, streaming: bool = False, **kwargs: Any
) -> RetrieverQueryEngine:
    """``RetrieverQueryEngine.from_args(retriever, llm=llm, streaming=streaming, **kwargs)``.

    ``llm`` is required so LlamaIndex never falls back to its global (OpenAI) default.
    """
    if llm is None:
        raise ValueError("pass llm= (e.g. MemoryLLM(engine=...)); the global default is OpenAI")
    return RetrieverQueryEngine.from_args(retriever, llm=llm, streaming=streaming, **kwargs)


def memorag_query_engine_tool(
    query_engine: BaseQueryEngine,
    name: str = "memorag",
    description: str = DEFAULT_TOOL_DESCRIPTION,
    **kwargs: Any,
) -> QueryEngineTool:
    """``QueryEngineTool.from_defaults(query_engine, name=name, description=description)``."""
    return QueryEngineTool.from_defaults(query_engine, name=name, description=description, **kwargs)
