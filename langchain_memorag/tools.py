"""Expose a ``MemoRAGRetriever`` to agents as a LangChain tool, and the engine's cited answers
as another (``create_memorag_answer_tool``)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Literal

from langchain_core.prompts import BasePromptTemplate, PromptTemplate
from langchain_core.retrievers import BaseRetriever
from langchain_core.tools import BaseTool, StructuredTool, create_retriever_tool

from langchain_memorag.retrievers import MemoRAGRetriever, _to_document

if TYPE_CHECKING:
    from shared_core.types import Answer, RetrievalEngine

__all__ = [
    "ANSWER_TOOL_DESCRIPTION",
    "DEFAULT_TOOL_DESCRIPTION",
    "create_memorag_answer_tool",
    "create_memorag_tool",
]

DEFAULT_TOOL_DESCRIPTION = (
    "Search the long-term memory of the documents read so far. A memory model writes clues "
    "from the whole collection (names, sub-questions, a draft answer) and each clue is searched, "
    "so multi-hop and vague questions work. Input: a natural-language question. "
    "Output: the most relevant passages, each prefixed with its [source id]."
)


def create_memorag_tool(
    retriever: BaseRetriever,
    name: str = "memorag_search",
    description: str = DEFAULT_TOOL_DESCRIPTION,
    *,
    response_format: Literal["content", "content_and_artifact"] = "content_and_artifact",
    document_prompt: BasePromptTemplate[str] | None = None,
    document_separator: str = "\n\n",
) -> BaseTool:
    """Wrap a retriever as a tool (``{"query": str}``) built on ``create_retriever_tool``.

    Args:
        retriever: Usually a ``MemoRAGRetriever``; any ``BaseRetriever`` works.
        name: Tool name shown to the model.
        description: Tool description shown to the model.
        response_format: ``"content_and_artifact"`` (default) returns the passages as text and
            the ``Document`` list as the ``ToolMessage`` artifact; ``"content"`` text only.
        document_prompt: How one document is rendered; default ``"[{source_id}] {page_content}"``
            for a ``MemoRAGRetriever`` (which sets ``source_id``), else ``"{page_content}"``.
        document_separator: Text between rendered documents.

    Returns:
        A ``StructuredTool`` with sync and async implementations.
    """
    if document_prompt is None:
        template = (
            "[{source_id}] {page_content}"
            if isinstance(retriever, MemoRAGRetriever)
            else "{page_content}"
        )
        document_prompt = PromptTemplate.from_template(template)
    return create_retriever_tool(
        retriever,
        name,
        description,
        document_prompt=document_prompt,
        document_separator=document_separator,
        response_format=response_format,
    )


ANSWER_TOOL_DESCRIPTION = (
    "Answer a question from the long-term memory of the documents read so far. The answer is "
    "a short phrase copied from the passages, followed by its [source id]. Input: a "
    "natural-language question."
)


def create_memorag_answer_tool(
    engine: RetrievalEngine,
    name: str = "memorag_answer",
    description: str = ANSWER_TOOL_DESCRIPTION,
    *,
    k: int | None = None,
    answer_style: str | None = None,
) -> BaseTool:
    """A tool (``{"query": str}``) that answers with ``engine.answer``: the content is the
    answer and its ``[source id]``; the ``ToolMessage`` artifact is ``{"answer", "citations"
    (passage id, doc id, char offsets in the passage, quote), "documents"}``."""
    if not callable(getattr(engine, "answer", None)):
        raise ValueError("engine must be a MemoRAG (it has no answer())")

    def run(query: str) -> tuple[str, dict[str, Any]]:
        answer: Answer = engine.answer(query, k=k, answer_style=answer_style)  # type: ignore[attr-defined]
        sources = list(dict.fromkeys(c.doc_id for c in answer.citations))
        content = answer.text + "".join(f" [{s}]" for s in sources)
        artifact = {
            "answer": answer.text,
            "citations": [c.as_dict() for c in answer.citations],
            "documents": [_to_document(p, per_query=True) for p in answer.passages],
        }
        return content, artifact

    async def arun(query: str) -> tuple[str, dict[str, Any]]:
        return await asyncio.to_thread(run, query)

    return StructuredTool.from_function(
        func=run,
        coroutine=arun,
        name=name,
        description=description,
        response_format="content_and_artifact",
    )
