"""Generation options as the framework adapters receive them, checked and made engine-ready.

LangChain and LlamaIndex both pass ``max_tokens``, ``stop`` and ``temperature`` per call on top
of defaults set on the model object; :func:`chat_options` merges them once, the same way for
both, into the keyword arguments of the engine's ``chat`` / ``stream_chat``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from shared_core.errors import InputError

#: New tokens per answer when neither the call nor the model object says.
DEFAULT_MAX_TOKENS = 256


def _stops(value: str | Sequence[str] | None, name: str) -> list[str]:
    if value is None:
        return []
    items = [value] if isinstance(value, str) else list(value)
    for item in items:
        if not isinstance(item, str):
            raise InputError(f"{name} must be a str or a list of str, got {type(item).__name__}")
    return [s for s in items if s]


def chat_options(
    *,
    max_tokens: int | None = None,
    stop: str | Sequence[str] | None = None,
    temperature: float | None = None,
    default_max_tokens: int | None = None,
    default_stop: str | Sequence[str] | None = None,
    default_temperature: float | None = None,
) -> dict[str, Any]:
    """``{"max_new_tokens", "stop", "temperature"}`` for the engine's chat calls.

    A per-call value wins over the model object's default (``default_*``); ``stop`` sequences
    are the union of both, in order, without repeats or empty strings. Unset: 256 new tokens,
    no stop sequence, greedy (temperature 0).
    """
    tokens = max_tokens if max_tokens is not None else default_max_tokens
    tokens = DEFAULT_MAX_TOKENS if tokens is None else tokens
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1:
        raise InputError(f"max_tokens must be a positive int, got {tokens!r}")
    heat = temperature if temperature is not None else default_temperature
    heat = 0.0 if heat is None else heat
    if isinstance(heat, bool) or not isinstance(heat, (int, float)) or not math.isfinite(heat):
        raise InputError(f"temperature must be a finite number, got {heat!r}")
    if heat < 0:
        raise InputError(f"temperature must be >= 0, got {heat}")
    merged: list[str] = []
    for s in [*_stops(default_stop, "stop"), *_stops(stop, "stop")]:
        if s not in merged:
            merged.append(s)
    return {"max_new_tokens": tokens, "stop": merged, "temperature": float(heat)}


__all__ = ["DEFAULT_MAX_TOKENS", "chat_options"]
