"""A streamed reply: text pieces as they are decoded, then the finished ``Generation``.

A back-end's ``stream`` is a generator that yields the reply's pieces and *returns* the whole
``Generation`` (``Decoder`` iteration does; the memories pass it on). ``TextStream`` wraps such
a generator so a caller that only iterates still gets the pieces, and one that needs usage
reads ``generation`` afterwards: the decoder's own token counts, never an estimate.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from shared_core.types import Generation

_END = object()


class TextStream(Iterator[str]):
    """Iterate (``for`` or ``async for``) for the pieces, then read ``generation``.

    ``async for`` pulls each piece in one worker thread of its own, so decoding never blocks the
    event loop.
    The wrapped generator starts on the first piece asked for (errors surface there).
    """

    def __init__(self, pieces: Iterator[str]) -> None:
        self._pieces = pieces
        self._generation: Generation | None = None
        self._done = False
        self._worker: ThreadPoolExecutor | None = None

    def __iter__(self) -> TextStream:
        return self

    def __next__(self) -> str:
        try:
            return next(self._pieces)
        except StopIteration as stop:
            self._done = True
            if isinstance(stop.value, Generation):
                self._generation = stop.value
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
        """The finished reply with its token counts, once the stream is read to the end.

        ``None`` when the producer returned no ``Generation`` (a foreign generator whose
        ``stream`` only yields text): then the token counts are unknown.
        """
        if not self._done:
            raise RuntimeError("read the stream to its end before asking for its generation")
        return self._generation


__all__ = ["TextStream"]
