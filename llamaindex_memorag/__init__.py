"""MemoRAG for LlamaIndex: a memory-guided retriever, a memory-backed LLM and a query transform.

Imports only ``llama_index.core`` and ``shared_core``; models load only when an engine is built.
"""

from llamaindex_memorag.embeddings import MemoRAGEmbedding
from llamaindex_memorag.llms import MemoryLLM
from llamaindex_memorag.query_engine import (
    MemoRAGQueryEngine,
    memorag_query_engine,
    memorag_query_engine_tool,
)
from llamaindex_memorag.query_transforms import MemoRAGQueryTransform
from llamaindex_memorag.question_gen import MemoryQuestionGenerator, MemorySelector
from llamaindex_memorag.retrievers import MEMORAG_METADATA_KEYS, MemoRAGRetriever
from shared_core import __version__

__all__ = [
    "MEMORAG_METADATA_KEYS",
    "MemoRAGEmbedding",
    "MemoRAGQueryEngine",
    "MemoRAGQueryTransform",
    "MemoRAGRetriever",
    "MemoryLLM",
    "MemoryQuestionGenerator",
    "MemorySelector",
    "__version__",
    "memorag_query_engine",
    "memorag_query_engine_tool",
]
