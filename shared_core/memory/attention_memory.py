"""What a memory must offer for memory-native retrieval (``heads/``): the ``AttentionMemory``
protocol.

A memory that ranks chunks by its retrieval heads gives, for a query and some ``(layer,
query head)`` pairs, the calibrated attention mass on each kept entry and each entry's text
origin (``entry_attention``, an ``EntryAttention``); the documents it read, in order (so a
chunk's ``doc_id`` maps to a document index); its model's identity (``fingerprint``, what a
``HeadSet`` is bound to) and shape (``head_grid``); and ``memorize`` (calibration reads each
question's paragraphs into it). ``CompressedKVMemory`` (also full KV) and ``NativeBeaconMemory``
implement it; the heads' ranker, route and calibration (the ``heads`` package, a layer above)
take any ``isinstance(memory, AttentionMemory)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from shared_core.inputs import ContextInput
from shared_core.memory.attention_probe import EntryAttention
from shared_core.memory.base import MemoryStats


@runtime_checkable
class AttentionMemory(Protocol):
    """A memory whose model's attention heads can rank the chunks it read."""

    name: str
    revision: str
    backend: str

    @property
    def documents(self) -> tuple[dict[str, Any], ...]:
        """One record (``doc_id``, ``chars``, ...) per memorized document, in order."""
        ...

    def fingerprint(self) -> str:
        """The memory model's identity (what a ``HeadSet`` records and is checked against)."""
        ...

    def head_grid(self) -> tuple[int, int]:
        """``(layers, query heads per layer)`` of the memory model."""
        ...

    def entry_attention(self, query: str, heads: Sequence[tuple[int, int]]) -> EntryAttention:
        """Calibrated attention of ``heads`` from ``query`` onto every kept entry."""
        ...

    def memorize(
        self, context: ContextInput, *, show_progress: bool | None = None
    ) -> MemoryStats: ...

    def stats(self) -> MemoryStats: ...
