"""Errors raised by the engine. Every one names the problem and, where it helps, the fix."""

from __future__ import annotations

import pickle


class MemoRAGError(Exception):
    """Base class of every error this package raises on purpose."""


class InputError(MemoRAGError, ValueError):
    """The caller passed something unusable: empty or binary text, a bad ``k``, an unknown task."""


class LimitError(InputError):
    """An input is over a configured cap (text length, documents, tokens, clues)."""


class NoMemoryError(MemoRAGError, RuntimeError):
    """A prompt was sent to a memory (or pipeline) that has not memorized anything yet."""


class PersistenceError(MemoRAGError, OSError):
    """A saved memory directory is missing, truncated, tampered with or malformed."""


class IncompatibleMemoryError(PersistenceError):
    """A saved memory was written by another model, tokenizer, ratio or format version."""


class StaleSnapshotError(PersistenceError):
    """A save would replace a snapshot that this pipeline never saw (a lost update)."""


class NotPicklableError(MemoRAGError, pickle.PicklingError):
    """An engine (or an adapter around one) cannot be pickled or copied: its memory is in no
    save directory, or it was built around objects a save does not hold. The message says what
    to do (save first, or share the object)."""


class GeneratorError(MemoRAGError, RuntimeError):
    """A text generator failed: its server is down, too slow or answered with an error.

    The message names the endpoint (or the framework model) and what went wrong; nothing the
    failed call would have written (gists, an index, a save) is kept.
    """


class ConfigError(InputError):
    """A setting is unknown, of the wrong type or out of range; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
