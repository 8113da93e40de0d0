"""MemoRAG for LangChain: a clue-driven retriever, a memory-backed chat model and an agent tool.

Only ``langchain_core`` is imported; models load when an engine is built, never on import.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from langchain_memorag.chat_models import ChatMemoRAG, MemoryLLM
from langchain_memorag.retrievers import MemoRAGRetriever
from langchain_memorag.tools import create_memorag_tool

try:
    __version__ = version("memorag-integrations")
except PackageNotFoundError:  # running from a source checkout that is not installed
    __version__ = "0.1.0"

__all__ = [
    "ChatMemoRAG",
    "MemoRAGRetriever",
    "MemoryLLM",
    "create_memorag_tool",
]
