"""Memory back-ends behind one interface (``base.Memory``), one module each; ``factory``
builds the one a config names."""

from shared_core.config import BACKENDS
from shared_core.memory.attention_memory import AttentionMemory
from shared_core.memory.base import Memory, MemoryStats
from shared_core.memory.compressed_kv import CompressedKVMemory
from shared_core.memory.factory import build_memory, create_memory

__all__ = [
    "BACKENDS",
    "AttentionMemory",
    "CompressedKVMemory",
    "Memory",
    "MemoryStats",
    "build_memory",
    "create_memory",
]
