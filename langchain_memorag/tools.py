"""Expose a ``MemoRAGRetriever`` to agents as a LangChain tool."""

from __future__ import annotations

from typing import Literal

from langchain_core.prompts import BasePromptTemplate, PromptTemplate
from langchain_core.retrievers import BaseRetriever
from langchain_core.tools import BaseTool, create_retriever_tool

from langchain_memorag.retrievers import MemoRAGRetriever

__all__ = ["DEFAULT_TOOL_DESCRIPTION", "create_memorag_tool"]

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
