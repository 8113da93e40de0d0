"""A total deadline for a blocking client call: the call runs in a worker thread and the
caller waits at most the deadline, however slowly the server trickles bytes (a client's own
timeouts bound each read, not the whole answer). A worker left behind stops at its next piece
(or its client's read timeout) and is never waited for."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

_DONE = object()
#: Pieces a streaming worker may run ahead of its caller.
_AHEAD = 64


class DeadlinePassed(TimeoutError):
    """The whole call took longer than its deadline."""


def call_within(fn: Callable[[], T], seconds: float) -> T:
    """``fn()``, or ``DeadlinePassed`` once ``seconds`` have passed (its exception re-raised)."""
    box: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=1)

    def work() -> None:
        try:
            box.put((True, fn()))
        except BaseException as exc:  # handed to the caller as is
            box.put((False, exc))

    threading.Thread(target=work, name="memorag-deadline", daemon=True).start()
    try:
        ok, value = box.get(timeout=seconds)
    except queue.Empty:
        raise DeadlinePassed(f"no whole answer within {seconds:g} s") from None
    if not ok:
        raise value
    return value  # type: ignore[no-any-return]


def iterate_within(make: Callable[[], Iterable[T]], seconds: float) -> Iterator[T]:
    """The items of ``make()`` as they come, ``DeadlinePassed`` once ``seconds`` have passed
    since the call began (a stream trickling one piece every few seconds included). Closing
    this iterator (or the deadline) stops the worker at its next item."""
    box: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=_AHEAD)
    stop = threading.Event()

    def put(item: tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                box.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        items = None
        try:
            items = iter(make())
            for item in items:
                if stop.is_set() or not put(("item", item)):
                    break
            else:
                put(("done", None))
        except BaseException as exc:
            put(("error", exc))
        finally:
            if isinstance(items, Generator):
                items.close()  # e.g. leaves the client's ``with stream:``: the socket closes

    end = time.monotonic() + seconds
    threading.Thread(target=work, name="memorag-deadline-stream", daemon=True).start()
    try:
        while True:
            left = end - time.monotonic()
            try:
                kind, value = box.get(timeout=max(left, 0.0))
            except queue.Empty:
                raise DeadlinePassed(f"the answer did not end within {seconds:g} s") from None
            if kind == "done":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()


__all__ = ["DeadlinePassed", "call_within", "iterate_within"]
