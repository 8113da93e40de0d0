"""The pipeline settings a save names, each checked before use."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from shared_core.config import ANSWER_STYLES, BACKENDS, FUSIONS, HEADS_WEIGHTINGS, ROUTES
from shared_core.errors import PersistenceError
from shared_core.persistence.files import is_int, short


def model_ref(name: str | None) -> str | None:
    """What a save records for a model: a local folder as its absolute path (so the save still
    names it from another working directory), a hub id as typed."""
    if name is None:
        return None
    path = Path(name).expanduser()
    return str(path.resolve()) if path.is_dir() else name


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


#: Serving settings a save records (issue 15), each with its check; absent in older saves.
_SERVING: dict[str, tuple[Callable[[Any], bool], str]] = {
    "ret_hit": (lambda v: is_int(v) and 1 <= v <= 1 << 20, "a positive int"),
    "fusion": (lambda v: v in FUSIONS, f"one of {FUSIONS}"),
    "retrieval": (lambda v: v in ROUTES, f"one of {ROUTES}"),
    "heads_weight": (lambda v: _number(v) and 0 <= v <= 1e6, "a non-negative number"),
    "heads_weighting": (lambda v: v in HEADS_WEIGHTINGS, f"one of {HEADS_WEIGHTINGS}"),
    "rrf_k": (lambda v: is_int(v) and 1 <= v <= 1 << 20, "a positive int"),
    "query_weight": (lambda v: _number(v) and 0 <= v <= 1e6, "a non-negative number"),
    "anchor_clues": (lambda v: isinstance(v, bool), "true or false"),
    "clue_strategy": (
        lambda v: isinstance(v, str) and 0 < len(v) <= 256,
        "a clue writer name such as 'copy+surrogate'",
    ),
    "language": (lambda v: v in ("en", "zh", "auto"), "'en', 'zh' or 'auto'"),
    "answer_style": (lambda v: v in ANSWER_STYLES, f"one of {ANSWER_STYLES}"),
}


def _serving(where: Path, section: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    """The saved serving settings, checked, and a warning for what cannot be restored."""
    settings: dict[str, Any] = {}
    for key, (ok, want) in _SERVING.items():
        value = section.get(key)
        if value is None or key in given:
            continue
        if not ok(value):
            raise PersistenceError(f"{where}: pipeline.{key} must be {want}, got {short(value)}")
        settings[key] = value
    if (
        "heads_weight" in settings
        and "heads_weighting" not in section
        and "heads_weighting" not in given
    ):
        settings["heads_weighting"] = "fixed"  # saved before agreement weighting existed
    custom_writer = "clue_strategy" in section and section["clue_strategy"] is None
    if custom_writer and "clue_strategy" not in given:
        warnings.warn(
            f"{where}: the memory was served with a custom clue writer, which a save cannot "
            "hold; pass clue_strategy= again (now: the default 'copy+surrogate')",
            stacklevel=3,
        )
    kind = section.get("generator")
    if kind not in (None, "memory", "model", "custom"):
        raise PersistenceError(
            f"{where}: pipeline.generator must be 'memory', 'model' or 'custom', got {short(kind)}"
        )
    generator_given = {"generator", "customized_gen_model", "gen_model_name_or_path"} & set(given)
    if kind == "custom" and not generator_given:
        warnings.warn(
            f"{where}: the memory was served with a custom generator, which a save cannot hold; "
            "pass generator= (or customized_gen_model=) again (now: answers come from the "
            "memory model)",
            stacklevel=3,
        )
    gen = section.get("gen_model_name_or_path")
    if kind == "model" and gen is not None and not generator_given:
        if not (isinstance(gen, str) and 0 < len(gen) <= 4096 and "\x00" not in gen):
            raise PersistenceError(
                f"{where}: pipeline.gen_model_name_or_path must be a model name, got {short(gen)}"
            )
        settings["gen_model_name_or_path"] = gen
    return settings


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
        {"mem_model_name_or_path", "memory_backend", "beacon_ratio", "window", "scorer", "compress"}
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
        "compress": (lambda v: v in ("always", "when_needed"), "'always' or 'when_needed'"),
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
    settings.update(_serving(where, section, given))
    settings.update(given)
    return settings
