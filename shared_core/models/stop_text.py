"""Stop strings applied on the client side, for generators whose server cannot (or may not)
honour all of them: a whole reply is cut at the first stop; a stream holds back just enough
text to never show a stop string that spans two pieces."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """``text`` up to the earliest stop string, and whether one was found."""
    cut = min((text.find(s) for s in stop if s and s in text), default=-1)
    return (text, False) if cut < 0 else (text[:cut], True)


def stream_until_stop(pieces: Iterable[str], stop: Sequence[str]) -> Iterator[str]:
    """Yield ``pieces`` until a stop string appears (the stop itself is never yielded)."""
    stops = [s for s in stop if s]
    if not stops:
        yield from (p for p in pieces if p)
        return
    hold = max(len(s) for s in stops) - 1
    buffer = ""
    for piece in pieces:
        buffer += piece
        text, stopped = cut_at_stop(buffer, stops)
        if stopped:
            if text:
                yield text
            return
        if len(buffer) > hold:
            ready, buffer = buffer[: len(buffer) - hold], buffer[len(buffer) - hold :]
            yield ready
    if buffer:
        yield buffer
