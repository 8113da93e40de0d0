"""The pipeline settings a save names, each checked before use."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from shared_core.config import BACKENDS
from shared_core.errors import PersistenceError
from shared_core.persistence.files import is_int, short


def saved_settings(
    where: Path, section: Mapping[str, Any], given: Mapping[str, Any]
) -> dict[str, Any]:
    """The ``MemoRAG`` settings a save's ``pipeline`` section names, each checked.

    ``given`` are the caller's keyword arguments: they win, and their saved counterparts are
    not used. No setting can make a load run code shipped with a model: every back-end,
    the beacon one included, is this package's own code.
    """
    # With memory= given, the saved memory settings are not used (its back-end may be custom).
    unused = set(given) | (
        {"mem_model_name_or_path", "memory_backend", "beacon_ratio", "window", "scorer"}
        if "memory" in given
        else set()
    )

    def pick(key: str, default: Any, ok: Callable[[Any], bool], want: str) -> Any:
        value = section.get(key, default)
        if key not in unused and not ok(value):
            raise PersistenceError(f"{where}: pipeline.{key} must be {want}, got {short(value)}")
        return value

    def name(v: Any) -> bool:
        return v is None or (isinstance(v, str) and 0 < len(v) <= 4096 and "\x00" not in v)

    settings: dict[str, Any] = {
        "mem_model_name_or_path": pick("mem_model_name_or_path", None, name, "a model name"),
        "ret_model_name_or_path": pick("ret_model_name_or_path", None, name, "a model name"),
        "retrieval_chunk_size": pick(
            "retrieval_chunk_size",
            512,
            lambda v: is_int(v) and 1 <= v <= 1 << 20,
            "a positive int",
        ),
        "chunk_overlap": pick(
            "chunk_overlap", 32, lambda v: is_int(v) and 0 <= v < 1 << 20, "a non-negative int"
        ),
        "memory_backend": pick(
            "memory_backend",
            "auto",
            lambda v: isinstance(v, str) and v in BACKENDS,
            f"one of {BACKENDS}",
        ),
    }
    options = section.get("memory_options", {})
    if not isinstance(options, dict):
        raise PersistenceError(f"{where}: pipeline.memory_options must be an object")
    checks = {
        "beacon_ratio": (lambda v: is_int(v) and 1 <= v <= 1 << 16, "a positive int"),
        "window": (lambda v: is_int(v) and 16 <= v <= 1 << 24, "an int >= 16"),
        "scorer": (lambda v: isinstance(v, str) and 0 < len(v) <= 64, "a scorer name"),
    }
    for key, (ok, want) in checks.items():
        if key in options and key not in unused:
            if not ok(options[key]):
                raise PersistenceError(
                    f"{where}: pipeline.memory_options.{key} must be {want}, "
                    f"got {short(options[key])}"
                )
            settings[key] = options[key]
    settings = {k: v for k, v in settings.items() if k not in unused}
    settings.update(given)
    return settings
