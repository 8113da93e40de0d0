"""MemoRAG engine: a compressed global memory in front of dense retrieval, framework-free.

Data flow: memorize -> memory -> clues -> retrieval -> fusion -> generation.
"""

from shared_core.errors import (
    IncompatibleMemoryError,
    InputError,
    LimitError,
    MemoRAGError,
    NoMemoryError,
    PersistenceError,
)
from shared_core.memory import CompressedKVMemory, Memory, MemoryStats, create_memory
from shared_core.pipeline import Answer, MemoRAG
from shared_core.types import (
    ChatTurn,
    Chunk,
    Clue,
    Document,
    Generation,
    Hit,
    Passage,
    RetrievalResult,
    ScoredPassage,
)

__version__ = "0.1.0"

__all__ = [
    "Answer",
    "ChatTurn",
    "Chunk",
    "Clue",
    "CompressedKVMemory",
    "Document",
    "Generation",
    "Hit",
    "IncompatibleMemoryError",
    "InputError",
    "LimitError",
    "MemoRAG",
    "MemoRAGError",
    "Memory",
    "MemoryStats",
    "NoMemoryError",
    "Passage",
    "PersistenceError",
    "RetrievalResult",
    "ScoredPassage",
    "__version__",
    "create_memory",
]
