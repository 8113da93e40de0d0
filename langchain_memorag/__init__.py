"""MemoRAG for LangChain: a memory-guided retriever, a memory-backed chat model and an agent tool.

Only ``langchain_core`` is imported; models load when an engine is built, never on import.
"""

from __future__ import annotations

from langchain_memorag.chat_models import ChatMemoRAG, MemoryLLM
from langchain_memorag.embeddings import MemoRAGEmbeddings
from langchain_memorag.retrievers import MemoRAGRetriever
from langchain_memorag.tools import create_memorag_answer_tool, create_memorag_tool
from shared_core import __version__

__all__ = [
    "ChatMemoRAG",
    "MemoRAGEmbeddings",
    "MemoRAGRetriever",
    "MemoryLLM",
    "__version__",
    "create_memorag_answer_tool",
    "create_memorag_tool",
]
