"""The pipeline settings a save names, each checked before use."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from shared_core.config import BACKENDS
from shared_core.errors import PersistenceError
from shared_core.persistence.files import is_int, short


def check_memory_fields(where: Path, section: Mapping[str, Any]) -> None:
    """Check the generic fields of a memory's manifest section (documents, seconds, ...)."""
    documents = section.get("documents")
    if not isinstance(documents, list):
        raise PersistenceError(f"{where}: the memory's documents must be a list")
    seen: set[str] = set()
    for i, doc in enumerate(documents):
        doc_id = doc.get("doc_id") if isinstance(doc, dict) else None
        if not isinstance(doc_id, str) or not doc_id or doc_id in seen:
            raise PersistenceError(
                f"{where}: memory document {i} needs a unique, non-empty string doc_id"
            )
        seen.add(doc_id)
        chars = doc.get("chars", 0)
        keys = doc.get("metadata_keys", [])
        if not (is_int(chars) and chars >= 0) or not (
            isinstance(keys, list) and all(isinstance(k, str) for k in keys)
        ):
            raise PersistenceError(f"{where}: memory document {i} ({doc_id}) is malformed")
    seconds = section.get("seconds")
    if seconds is not None and not (
        isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and 0 <= seconds < 1e12
    ):
        raise PersistenceError(f"{where}: seconds must be a non-negative number")
    for key in ("text_sha256", "lineage"):
        if section.get(key) is not None and not isinstance(section.get(key), str):
            raise PersistenceError(f"{where}: {key} must be a string")


def saved_settings(
    where: Path, section: Mapping[str, Any], given: Mapping[str, Any]
) -> dict[str, Any]:
    """The ``MemoRAG`` settings a save's ``pipeline`` section names, each checked.

    ``given`` are the caller's keyword arguments: they win, and their saved counterparts are
    not used. A save may not make ``from_dir`` run code shipped with a model
    (``trust_remote_code``, the native beacon back-end) unless the caller names that model.
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
    model = settings["mem_model_name_or_path"]
    backend = settings["memory_backend"]
    remote = backend == "beacon" or (
        backend == "auto" and isinstance(model, str) and "memorag" in model.lower()
    )
    if remote and not {"memory", "mem_model_name_or_path", "memory_backend"} & set(given):
        raise PersistenceError(
            f"{where}: the save names memory model {short(model)} with back-end {backend!r}, "
            "which runs code shipped with the model (trust_remote_code); a save directory "
            "cannot ask for that: pass mem_model_name_or_path= (or memory=) to from_dir"
        )
    settings = {k: v for k, v in settings.items() if k not in unused}
    settings.update(given)
    return settings
