"""A streamed reply: text pieces as they are decoded, then the finished ``Generation``.

``TextStream`` wraps a ``GenerationRun`` (what every generator's ``start`` opens) so that a
caller that only iterates gets the pieces, sync or async, and one that needs usage reads
``generation`` afterwards: the decoder's own token counts. ``pieces_then_result`` runs any
call that reports pieces through a callback in a thread, for streaming its result.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from shared_core.types import Generation, GenerationRun

_END = object()


class TextStream(Iterator[str]):
    """Iterate (``for`` or ``async for``) for the pieces, then read ``generation``.

    ``async for`` pulls each piece in one worker thread of its own, so decoding never blocks the
    event loop.
    The wrapped generator starts on the first piece asked for (errors surface there).
    """

    def __init__(self, run: GenerationRun | Iterable[str]) -> None:
        """``run``: a ``GenerationRun`` (usage known) or plain pieces (usage unknown)."""
        self._run = run if isinstance(run, GenerationRun) else None
        self._pieces = iter(run)
        self._generation: Generation | None = None
        self._done = False
        self._worker: ThreadPoolExecutor | None = None

    def __iter__(self) -> TextStream:
        return self

    def __next__(self) -> str:
        try:
            return next(self._pieces)
        except StopIteration:
            self._done = True
            self._generation = self._run.generation if self._run is not None else None
            raise StopIteration from None

    def __aiter__(self) -> TextStream:
        return self

    async def __anext__(self) -> str:
        # One worker thread for the whole stream: decoding state that torch keeps per thread
        # (inference mode) must see every step of a decoder, so pieces never hop threads.
        if self._worker is None:
            self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="memorag-stream")
        loop = asyncio.get_running_loop()
        piece: Any = await loop.run_in_executor(self._worker, next, self, _END)
        if piece is _END:
            self._worker.shutdown(wait=False)
            raise StopAsyncIteration
        return piece  # type: ignore[no-any-return]

    @property
    def done(self) -> bool:
        """True once every piece was read."""
        return self._done

    @property
    def generation(self) -> Generation | None:
        """The finished reply with its token counts, once the stream is read to the end
        (``None`` for plain pieces: their token counts are unknown)."""
        if not self._done:
            raise RuntimeError("read the stream to its end before asking for its generation")
        return self._generation


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


__all__ = ["TextStream", "pieces_then_result"]
