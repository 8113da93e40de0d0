"""The config a save names, rebuilt through ``MemoRAGConfig``'s own checks, and what wins when
``from_dir`` is also given settings.

A save's ``pipeline`` section holds ``MemoRAGConfig.saved_options()`` (``config_format: 2``).
Saves written before that (a hand-picked subset, the memory's settings inside
``memory_options``) are read by ``legacy_options``. Either way the values go through the same
constructor as ``MemoRAG(...)``; a value it refuses is a ``PersistenceError`` naming the file
and the setting.

Explicit arguments to ``from_dir``:

- a setting the saved memory depends on (``FieldRole.bound``: ``memory_backend``,
  ``beacon_ratio``, ``window``, ``scorer``, ``position_mode``, ``compress``,
  ``retrieval_chunk_size``, ``chunk_overlap``, ``language``) that contradicts the save is
  refused (``IncompatibleMemoryError``) naming both values; the same value is accepted;
- every other setting (models and placement, ``search_mode``, ``index``, ``index_options``,
  ``max_clues``, ``search_k``, fusion, route, back-end options such as ``reserve_tokens``) is
  a runtime choice: the argument wins. A different model is used as given and must still
  match the saved memory's fingerprints (checked on load);
- with ``memory=`` given, the saved memory settings are not used (its back-end may be custom);
  the memory's own load checks apply.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from shared_core.config import MemoRAGConfig, model_ref, resolve_backend
from shared_core.errors import ConfigError, IncompatibleMemoryError, PersistenceError
from shared_core.persistence.files import short

__all__ = ["CONFIG_FORMAT", "legacy_options", "model_ref", "saved_settings"]

#: The pipeline section's format: 2 = the whole config (``MemoRAGConfig.saved_options``).
CONFIG_FORMAT = 2
_FIELDS = {f.name: f for f in fields(MemoRAGConfig)}
_BOUND = tuple(name for name, f in _FIELDS.items() if f.metadata["role"].bound)
#: The fields a save holds by value (the head set is held by content, under its own key).
_BY_VALUE = tuple(
    name for name, f in _FIELDS.items() if f.metadata["role"].saved not in ("content", "never")
)
#: What ``memory=`` replaces: the settings the memory is built from.
_MEMORY_FIELDS = (
    "mem_model_name_or_path",
    "memory_backend",
    "beacon_ratio",
    "window",
    "scorer",
    "position_mode",
    "compress",
    "memory_options",
)
#: Settings of a legacy save's ``memory_options`` that are config fields now.
_LEGACY_MEMORY = ("beacon_ratio", "window", "scorer", "position_mode", "compress")
#: Top-level settings of a legacy save (others did not exist or were not saved).
_LEGACY_TOP = (
    "mem_model_name_or_path",
    "ret_model_name_or_path",
    "gen_model_name_or_path",
    "retrieval_chunk_size",
    "chunk_overlap",
    "memory_backend",
    "ret_hit",
    "fusion",
    "retrieval",
    "heads_weight",
    "heads_weighting",
    "rrf_k",
    "query_weight",
    "anchor_clues",
    "clue_strategy",
    "language",
)
_CALL_PARTS = ("generator", "customized_gen_model", "gen_model_name_or_path")


def legacy_options(
    where: Path, section: Mapping[str, Any], memory: Mapping[str, Any]
) -> dict[str, Any]:
    """The settings a save written before ``config_format`` 2 names (``memory``: its memory
    section, for the compression a memory was read with when the pipeline did not say)."""
    saved = {key: section[key] for key in _LEGACY_TOP if section.get(key) is not None}
    options = section.get("memory_options", {})
    if not isinstance(options, dict):
        raise PersistenceError(f"{where}: pipeline.memory_options must be an object")
    rest = {k: v for k, v in options.items() if k not in _LEGACY_MEMORY and v is not None}
    saved.update({k: v for k, v in options.items() if k in _LEGACY_MEMORY and v is not None})
    if rest:
        saved["memory_options"] = rest
    backend = saved.get("memory_backend")
    if backend in ("compressed_kv", "full_kv") and "compress" not in saved:
        saved["compress"] = memory.get("compress", "always")  # as the memory was read
    if "heads_weight" in saved and "heads_weighting" not in section:
        saved["heads_weighting"] = "fixed"  # saved before agreement weighting existed
    return saved


def _saved_options(
    where: Path, section: Mapping[str, Any], memory: Mapping[str, Any]
) -> dict[str, Any]:
    fmt = section.get("config_format")
    if fmt is None:
        return legacy_options(where, section, memory)
    if fmt != CONFIG_FORMAT:
        raise IncompatibleMemoryError(
            f"{where}: pipeline.config_format {short(fmt)} is not one this version reads "
            f"({CONFIG_FORMAT}); update the package"
        )
    return {k: section[k] for k in _BY_VALUE if k in section}


def _unnamed_objects(where: Path, saved: dict[str, Any], given: Mapping[str, Any]) -> None:
    """A custom clue writer or scorer object is saved as null: warn and use the default."""
    for name, what in (("clue_strategy", "clue writer"), ("scorer", "scorer")):
        if name in saved and saved[name] is None:
            del saved[name]
            if name not in given:
                warnings.warn(
                    f"{where}: the memory was served with a custom {what}, which a save "
                    f"cannot hold; pass {name}= again (now: the default "
                    f"{_FIELDS[name].default!r})",
                    stacklevel=4,
                )


def _generator(where: Path, section: Mapping[str, Any], given: Mapping[str, Any]) -> bool:
    """Whether the saved ``gen_model_name_or_path`` is used (and a warning if nothing saved
    can rebuild the answer generator)."""
    kind = section.get("generator")
    if kind not in (None, "memory", "model", "custom"):
        raise PersistenceError(
            f"{where}: pipeline.generator must be 'memory', 'model' or 'custom', got {short(kind)}"
        )
    given_one = bool(set(_CALL_PARTS) & set(given))
    if kind == "custom" and not given_one:
        warnings.warn(
            f"{where}: the memory was served with a custom generator, which a save cannot hold; "
            "pass generator= (or customized_gen_model=) again (now: answers come from the "
            "memory model)",
            stacklevel=4,
        )
    return kind == "model" and not given_one


def _contradiction(name: str, given: Any, saved: Any, model: Any) -> bool:
    if name == "memory_backend":
        return resolve_backend(given, model) != resolve_backend(saved, model)
    if name == "language":
        return given != "auto" and given != saved
    if name == "scorer" and not (isinstance(given, str) and isinstance(saved, str)):
        return False  # an object: the memory's own checks decide
    return bool(given != saved)


def saved_settings(
    where: Path,
    section: Mapping[str, Any],
    given: Mapping[str, Any],
    memory: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``MemoRAG`` keyword arguments that rebuild a save's pipeline, ``given`` applied as
    the module docstring says. No setting can make a load run code shipped with a model:
    every back-end, the beacon one included, is this package's own code."""
    saved = _saved_options(where, section, memory or {})
    _unnamed_objects(where, saved, given)
    if not _generator(where, section, given):
        saved.pop("gen_model_name_or_path", None)
    if "memory" in given:
        for name in _MEMORY_FIELDS:
            saved.pop(name, None)
    try:
        MemoRAGConfig.from_options(saved)
    except ConfigError as exc:
        text = str(exc)
        named = text if text.startswith(exc.field) else f"{exc.field}: {text}"
        raise PersistenceError(f"{where}: pipeline.{named}") from None
    model = given.get("mem_model_name_or_path", saved.get("mem_model_name_or_path"))
    for name in _BOUND:
        if (
            name in given
            and name in saved
            and _contradiction(name, given[name], saved[name], model)
        ):
            raise IncompatibleMemoryError(
                f"{where}: {name}={short(given[name])} contradicts the save, whose memory "
                f"was read with {name}={short(saved[name])}; leave {name} out (the saved "
                "value is used) or memorize the text again"
            )
    dropped = section.get("index_options_unsaved")
    if dropped and "index_options" not in given:
        warnings.warn(
            f"{where}: the index was opened with index_options {dropped}, which a save never "
            "holds; pass index_options= again with them",
            stacklevel=3,
        )
    return {**saved, **given}
