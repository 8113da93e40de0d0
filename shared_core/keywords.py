"""Refusing unknown keyword arguments by name, with the nearest known name or a framework hint.

Both adapters call these from their constructors: a typo, or another library's spelling
(``top_k=``, ``search_kwargs=``, ``embed_model=``), is an ``InputError`` naming it and saying
what to pass instead, never silently ignored.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterable, Mapping
from dataclasses import fields

from shared_core.config import BACKEND_OPTIONS, MemoRAGConfig
from shared_core.errors import InputError

#: ``MemoRAG(...)``'s own parameters besides its config fields.
ENGINE_PARAMETERS = (
    "mem_model_name_or_path",
    "ret_model_name_or_path",
    "gen_model_name_or_path",
    "customized_gen_model",
    "config",
    "memory",
    "embedder",
    "generator",
    "search_index",
    "copy_source",
)


def engine_keywords() -> frozenset[str]:
    """Every keyword ``MemoRAG(...)`` may take: its parameters, config fields and the memory
    back-ends' options (the engine itself refuses an option its chosen back-end does not take)."""
    names = {f.name for f in fields(MemoRAGConfig)} | set(ENGINE_PARAMETERS)
    for options in BACKEND_OPTIONS.values():
        names |= set(options)
    return frozenset(names)


def refuse_unknown(
    owner: str,
    given: Iterable[str],
    known: Collection[str],
    hints: Mapping[str, str] | None = None,
    takes: str | None = None,
) -> None:
    """Raise ``InputError`` naming every name in ``given`` that is not in ``known``.

    ``hints`` maps another library's spelling to what to pass here instead; other names get
    the closest known name, if one is close. ``takes`` replaces the list of known names.
    """
    unknown = [name for name in given if name not in known]
    if not unknown:
        return
    notes = []
    for name in unknown:
        hint = (hints or {}).get(name)
        if hint is None:
            close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.75)
            hint = f"did you mean {close[0]}=?" if close else None
        notes.append(f"{name}= ({hint})" if hint else f"{name}=")
    noun = "argument" if len(unknown) == 1 else "arguments"
    listing = takes or ", ".join(f"{name}=" for name in sorted(known))
    raise InputError(f"{owner} got unknown keyword {noun} {', '.join(notes)}; it takes {listing}")


def check_engine_keywords(
    owner: str, options: Mapping[str, object], hints: Mapping[str, str] | None = None
) -> None:
    """Refuse ``options`` meant for ``MemoRAG(...)`` that it cannot take under any back-end."""
    takes = "MemoRAG's settings (the MemoRAGConfig fields and the memory back-ends' options)"
    refuse_unknown(owner, options, engine_keywords(), hints, takes)


__all__ = ["ENGINE_PARAMETERS", "check_engine_keywords", "engine_keywords", "refuse_unknown"]
