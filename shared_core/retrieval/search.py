"""Run one search per retrieval key on any back-end, sync or async."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from shared_core.types import AsyncSearchBackend, Hit, SearchBackend


@runtime_checkable
class BatchSearchBackend(Protocol):
    """A back-end that embeds and searches several queries in one call (the own index)."""

    def search_many(self, queries: Sequence[str], k: int) -> list[list[Hit]]: ...


@runtime_checkable
class SizedBackend(Protocol):
    """A back-end that knows how many passages it holds."""

    def __len__(self) -> int: ...


def search_all(backend: SearchBackend, texts: Sequence[str], depth: int) -> list[list[Hit]]:
    """One hit list of ``depth`` per text."""
    if isinstance(backend, BatchSearchBackend):
        return backend.search_many(list(texts), depth)
    return [backend.search(text, depth) for text in texts]


async def asearch_all(
    backend: SearchBackend | AsyncSearchBackend, texts: Sequence[str], depth: int
) -> list[list[Hit]]:
    """``search_all`` without blocking the event loop (native coroutines run concurrently)."""
    if isinstance(backend, AsyncSearchBackend):
        return list(await asyncio.gather(*(backend.asearch(t, depth) for t in texts)))
    return await asyncio.to_thread(search_all, backend, texts, depth)  # type: ignore[arg-type]


def corpus_size(backend: object) -> int | None:
    """How many passages ``backend`` holds, when it says."""
    return len(backend) if isinstance(backend, SizedBackend) else None
