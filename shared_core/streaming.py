"""Streaming helpers: pieces from a worker thread, to a caller's thread or an event loop."""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


def pieces_then_result(work: Callable[[Callable[[str], None]], T]) -> Iterator[str | T]:
    """Run ``work(on_text)`` in a thread; yield each piece it hands to ``on_text`` as it comes,
    then its result. An exception in ``work`` is raised in the consumer's thread."""
    pieces: queue.Queue[tuple[str, Any]] = queue.Queue()

    def run() -> None:
        try:
            pieces.put(("done", work(lambda text: pieces.put(("text", text)))))
        except BaseException as exc:  # handed to the consumer's thread
            pieces.put(("error", exc))

    threading.Thread(target=run, daemon=True, name="memorag-stream").start()
    while True:
        kind, item = pieces.get()
        if kind == "error":
            raise item
        yield item
        if kind == "done":
            return


async def aiter_in_thread(items: Iterable[T]) -> AsyncIterator[T]:
    """Iterate a blocking iterable in a worker thread, one item at a time."""
    iterator = iter(items)
    done = object()
    while True:
        item = await asyncio.to_thread(next, iterator, done)
        if item is done:
            return
        yield item  # type: ignore[misc]
