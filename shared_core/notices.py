"""Warnings said once per cause for one pipeline, not on every call.

A small corpus makes every default ``k=3`` call "more than the passages held"; a model without
retrieval heads takes the clue path on every query. Each such cause is warned the first time a
pipeline meets it; results still carry their per-call ``notes``.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Hashable


class Notices:
    """The warnings one pipeline has already given, by cause."""

    def __init__(self) -> None:
        self._said: set[Hashable] = set()
        self._lock = threading.Lock()

    def warn(self, cause: Hashable, message: str, stacklevel: int = 2) -> bool:
        """Warn ``message`` unless ``cause`` was warned before; whether it warned now."""
        with self._lock:
            if cause in self._said:
                return False
            self._said.add(cause)
        warnings.warn(message, stacklevel=stacklevel + 1)
        return True


__all__ = ["Notices"]
