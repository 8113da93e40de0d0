"""An ``httpx`` client whose replies are cut off past a byte cap (a server flooding 300 MB is
refused at the cap, never read whole)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx


class ReplyTooLarge(httpx.ReadError):
    """A reply went past the client's byte cap."""


class _CappedStream(httpx.SyncByteStream):
    def __init__(self, inner: Any, cap: int, request: httpx.Request) -> None:
        self._inner, self._cap, self._request = inner, cap, request

    def __iter__(self) -> Iterator[bytes]:
        total = 0
        for chunk in self._inner:
            total += len(chunk)
            if total > self._cap:
                raise ReplyTooLarge(f"reply over {self._cap:,} bytes", request=self._request)
            yield chunk

    def close(self) -> None:
        self._inner.close()


class CappedTransport(httpx.HTTPTransport):
    """``HTTPTransport`` that refuses a reply body past ``cap`` bytes (declared or sent)."""

    def __init__(self, cap: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cap = cap

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.cap:
            response.close()
            raise ReplyTooLarge(f"reply of {int(declared):,} bytes", request=request)
        response.stream = _CappedStream(response.stream, self.cap, request)
        return response


def capped_client(cap: int, timeout: float) -> httpx.Client:
    """An ``httpx.Client`` for API calls: replies capped at ``cap`` bytes, reads ``timeout``."""
    return httpx.Client(
        transport=CappedTransport(cap), timeout=httpx.Timeout(timeout), follow_redirects=True
    )
