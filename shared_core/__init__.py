"""MemoRAG engine: a compressed global memory in front of dense retrieval, framework-free.

Data flow: memorize -> memory -> clues -> retrieval -> fusion -> generation.
Heavy names (``MemoRAG``, the memories) import torch/transformers on first use only, so the
framework adapters can import the plain types cheaply.
"""

from __future__ import annotations

import importlib
from typing import Any

from shared_core.errors import (
    GeneratorError,
    IncompatibleMemoryError,
    InputError,
    LimitError,
    MemoRAGError,
    NoMemoryError,
    NotPicklableError,
    PersistenceError,
)
from shared_core.types import (
    Answer,
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

_LAZY = {
    "MemoRAG": "shared_core.pipeline",
    "MemoRAGLite": "shared_core.lite",
    "Memory": "shared_core.memory",
    "MemoryStats": "shared_core.memory",
    "CompressedKVMemory": "shared_core.memory",
    "create_memory": "shared_core.memory",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'shared_core' has no attribute {name!r}")


__all__ = [
    "Answer",
    "ChatTurn",
    "Chunk",
    "Clue",
    "CompressedKVMemory",
    "Document",
    "Generation",
    "GeneratorError",
    "Hit",
    "IncompatibleMemoryError",
    "InputError",
    "LimitError",
    "MemoRAG",
    "MemoRAGError",
    "MemoRAGLite",
    "Memory",
    "MemoryStats",
    "NoMemoryError",
    "NotPicklableError",
    "Passage",
    "PersistenceError",
    "RetrievalResult",
    "ScoredPassage",
    "__version__",
    "create_memory",
]
