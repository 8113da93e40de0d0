"""``MemoRAGConfig``: every setting of a pipeline in one frozen, validated value.

This is the one place a setting is defined, defaulted, checked and saved. Each field carries
its role in its metadata (``FieldRole``): which back-end or route it applies to, how a save
holds it, and whether the saved memory depends on it. ``field_table()`` lists them.

Unknown, ill-typed or out-of-range options are refused at construction with a ``ConfigError``
naming the option, for every memory back-end: an option that the chosen back-end would not use,
set to anything but its default, is an error, never dropped. A save writes ``saved_options()``
and ``MemoRAG.from_dir`` rebuilds the config through the same constructor.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import MISSING, Field, asdict, dataclass, field, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from shared_core.errors import ConfigError

BACKENDS = ("auto", "compressed_kv", "full_kv", "beacon", "gist")
KV_BACKENDS = ("compressed_kv", "full_kv")
FUSIONS = ("auto", "interleave", "rrf", "zscore", "union")
ROUTES = ("auto", "heads", "clues", "heads+clues")
#: How the heads list is weighted in fusion (docs/heads.md, "Defaults").
HEADS_WEIGHTINGS = ("agreement", "fixed")
COMPRESS_MODES = ("always", "when_needed")
POSITION_MODES = ("auto", "absolute", "compact")
#: The compressed KV memory's default ratio under ``compress="always"``, and the most it may
#: compress to under ``"when_needed"`` (docs/heads.md: compress only as much as positions need).
FIXED_RATIO = 4
MAX_RATIO = 32
#: Which entries ``MemoRAG()``'s compressed memory keeps when it must compress: evenly spaced
#: ones, so every chunk stays represented for the retrieval heads (pooled HotpotQA at ratio 16:
#: heads-alone recall@5 0.433 with stride against 0.050 with key norm, docs/heads.md).
DEFAULT_SCORER = "stride"
#: The scorers by name (``memory.scorers.SCORERS`` implements each; a test keeps them equal).
SCORER_NAMES = ("key_norm", "key_norm_cover", "value_norm", "stride")
#: Placements accelerate computes from the visible GPUs (``from_pretrained(device_map=...)``).
DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")
LANGUAGES = ("auto", "en", "zh")
#: Model weight types by name (a ``torch.dtype`` is taken and kept by its name).
DTYPES = ("float32", "float16", "bfloat16", "float64")
_DEVICE = re.compile(r"(auto|cpu|mps|meta|(cuda|xpu|npu|hpu)(:\d{1,3})?)")
#: The largest int any count or size may be (far above any real use; keeps saves sane).
INT_MAX = 1 << 40
#: Index options that a save never holds: secrets and live objects (pass them again).
UNSAVED_INDEX_OPTIONS = ("api_key", "client")
#: How ``memorag`` / ``qa`` answers are written (docs/answers.md): ``short`` copies a phrase of
#: the passages (yes/no for yes/no questions) and cites it; ``free`` lets the generator write;
#: ``auto`` is short with a local generator, free for long-form requests or a foreign one.
ANSWER_STYLES = ("auto", "short", "free")


@dataclass(frozen=True)
class FieldRole:
    """What a setting is for: ``applies`` (the back-ends, route or part it changes),
    ``saved`` (how a save holds it: ``value``; ``model``: a local folder as its absolute path;
    ``resolved``: the value in force, the back-end built or the prompt language; ``if_named``:
    only when it is a name, not an object; ``content``: the head set, as JSON, in its own
    section; ``options``: less ``UNSAVED_INDEX_OPTIONS``; ``never``: a secret), and ``bound``:
    the saved memory depends on it, so ``from_dir`` refuses an argument that contradicts the
    save."""

    applies: str
    saved: str = "value"
    bound: bool = False


def _role(applies: str = "all", saved: str = "value", bound: bool = False) -> dict[str, Any]:
    """A field's metadata: its ``FieldRole``."""
    return {"role": FieldRole(applies, saved, bound)}


_KV = ", ".join(KV_BACKENDS)
_RATIO = "compressed_kv, full_kv, beacon"
_LOAD, _CLUES, _HEADS = "model loading", "clues route", "heads route"


def _int(low: int, *, none: bool = False) -> tuple[Any, str]:
    def ok(v: Any) -> bool:
        return (none and v is None) or (
            isinstance(v, int) and not isinstance(v, bool) and low <= v <= INT_MAX
        )

    return ok, f"an int >= {low}" + (" or None" if none else "")


def _flag(v: Any) -> bool:
    return v is None or isinstance(v, bool)


#: Options each back-end takes beyond the fields (``BACKEND_OPTIONS``): each one's default
#: (the back-ends' signatures use these) and its check.
OPTION_DEFAULTS: dict[str, Any] = {
    "reserve_tokens": 512,
    "max_chars": 4_000_000,
    "max_documents": 10_000,
    "max_new_tokens_cap": 4096,
    "show_progress": None,
    "chunk_tokens": 1024,
    "gist_tokens": 96,
}
_OPTION_CHECKS: dict[str, tuple[Any, str]] = {
    "reserve_tokens": _int(0),
    "max_chars": _int(1, none=True),
    "max_documents": _int(1, none=True),
    "max_new_tokens_cap": _int(1),
    "show_progress": (_flag, "a bool or None"),
    "chunk_tokens": _int(8),
    "gist_tokens": _int(1),
}
_KV_NAMES = ("reserve_tokens", "max_chars", "max_documents", "max_new_tokens_cap", "show_progress")
BACKEND_OPTIONS: dict[str, tuple[str, ...]] = {
    "compressed_kv": _KV_NAMES,
    "full_kv": _KV_NAMES,
    "beacon": ("max_chars", "max_documents", "max_new_tokens_cap", "show_progress"),
    "gist": ("chunk_tokens", "gist_tokens", "max_chars", "max_documents"),
}


def resolve_backend(backend: str, model: str | None) -> str:
    """``auto``: the native beacon memory for ``memorag-*`` checkpoints, else compressed KV."""
    if backend != "auto":
        return backend
    return "beacon" if model and "memorag" in str(model).lower() else "compressed_kv"


@dataclass(frozen=True)
class KVOptions:
    """What a windowed KV memory (compressed or full) reads and answers with: built from a
    ``MemoRAGConfig`` (``MemoRAGConfig.kv_options``), never defaulted or checked again."""

    beacon_ratio: int
    window: int
    scorer: Any  # a scorer name or a scorer object
    position_mode: str
    compress: str
    reserve_tokens: int
    max_chars: int | None
    max_documents: int | None
    max_new_tokens_cap: int
    show_progress: bool | None

    @classmethod
    def from_settings(cls, backend: str = "compressed_kv", **settings: Any) -> KVOptions:
        """The options ``MemoRAG(memory_backend=backend, **settings)`` would build (the same
        defaults and checks); ``settings`` are ``KVOptions`` fields only."""
        unknown = sorted(set(settings) - {f.name for f in fields(cls)})
        if unknown:
            raise ConfigError(
                unknown[0],
                f"unknown option {unknown[0]!r} for a KV memory; it takes "
                f"{sorted(f.name for f in fields(cls))}",
            )
        return MemoRAGConfig.from_options({"memory_backend": backend, **settings}).kv_options()


@dataclass(frozen=True, kw_only=True)
class MemoRAGConfig:
    """What a ``MemoRAG`` pipeline is made of and how it retrieves (defaults: the embedded,
    offline models and the settings chosen on the tuning sets, see ``docs/benchmarks.md``).

    ``None`` remains only where the value is derived from something else, as each comment says.
    """

    # -- models (hub ids or local folders; None = the embedded default) --------------------
    mem_model_name_or_path: str | None = field(default=None, metadata=_role(_LOAD, "model"))
    ret_model_name_or_path: str | None = field(default=None, metadata=_role(_LOAD, "model"))
    # None: answers come from the memory's own model
    gen_model_name_or_path: str | None = field(default=None, metadata=_role(_LOAD, "model"))
    cache_dir: str | None = field(default=None, metadata=_role(_LOAD))  # None: ~/.cache/memorag
    access_token: str | None = field(default=None, metadata=_role(_LOAD, "never"))
    revision: str | None = field(default=None, metadata=_role(_LOAD))  # None: the main branch
    device: str = field(default="auto", metadata=_role(_LOAD))
    dtype: str | None = field(default=None, metadata=_role(_LOAD))  # None: bf16 on CUDA, else fp32
    load_in_4bit: bool = field(default=False, metadata=_role(_LOAD))
    enable_flash_attn: bool = field(default=False, metadata=_role(_LOAD))
    device_map: str | None = field(default=None, metadata=_role(_LOAD))  # None: all on `device`
    # -- memory ------------------------------------------------------------------------------
    memory_backend: str = field(default="auto", metadata=_role("memory", "resolved", bound=True))
    # None: the back-end's own: 32 at most (when_needed) / 4 (always), 1 on full_kv, the
    # checkpoint's on beacon.
    beacon_ratio: int | None = field(default=None, metadata=_role(_RATIO, bound=True))
    window: int = field(default=2048, metadata=_role(_KV, bound=True))
    scorer: Any = field(default=DEFAULT_SCORER, metadata=_role(_KV, "if_named", bound=True))
    position_mode: str = field(default="auto", metadata=_role(_KV, bound=True))
    compress: str = field(default="when_needed", metadata=_role("compressed_kv", bound=True))
    memory_options: Mapping[str, Any] = field(
        default_factory=dict, metadata=_role("memory (BACKEND_OPTIONS)")
    )
    # -- retrieval ---------------------------------------------------------------------------
    ret_hit: int = field(default=3, metadata=_role())
    retrieval_chunk_size: int = field(default=512, metadata=_role("index", bound=True))
    chunk_overlap: int = field(default=32, metadata=_role("index", bound=True))
    search_k: int | None = field(default=None, metadata=_role())  # None: max(k, ret_hit)
    index: str = field(default="faiss", metadata=_role("index"))  # or "qdrant"
    search_mode: str = field(default="dense", metadata=_role("index"))  # "bm25", "hybrid"
    index_options: Mapping[str, Any] = field(
        default_factory=dict, metadata=_role("index (qdrant)", "options")
    )
    # -- clues and fusion --------------------------------------------------------------------
    # a strategy name or a ClueWriter
    clue_strategy: Any = field(default="copy+surrogate", metadata=_role(_CLUES, "if_named"))
    anchor_clues: bool = field(default=True, metadata=_role(_CLUES))
    max_clues: int = field(default=16, metadata=_role(_CLUES))
    query_weight: float = field(default=2.0, metadata=_role("fusion"))
    fusion: str = field(default="auto", metadata=_role("fusion"))  # zscore/interleave by route
    rrf_k: int = field(default=60, metadata=_role("fusion"))
    # -- memory-native retrieval (docs/heads.md) ---------------------------------------------
    retrieval: str = field(default="auto", metadata=_role("route"))  # heads if a head set exists
    # a HeadSet or its JSON path; None: the one shipped for the model
    head_set: Any = field(default=None, metadata=_role(_HEADS, "content"))
    heads_weight: float = field(default=2.0, metadata=_role(_HEADS))  # the most the heads count
    heads_weighting: str = field(default="agreement", metadata=_role(_HEADS))  # or "fixed"
    # each search's depth on the heads route: the passages the heads re-rank
    candidate_k: int = field(default=50, metadata=_role(_HEADS))
    language: str = field(default="auto", metadata=_role("prompts", "resolved", bound=True))
    # -- answers -----------------------------------------------------------------------------
    # "short" (a cited phrase of the passages), "free" or "auto" (docs/answers.md)
    answer_style: str = field(default="auto", metadata=_role("answers (memorag, qa)"))

    def __post_init__(self) -> None:
        for name in ("mem_model_name_or_path", "ret_model_name_or_path", "gen_model_name_or_path"):
            value = getattr(self, name)
            if value is not None and not (_text(value) and value.strip()):
                raise ConfigError(name, f"{name} must be a model id or folder (str), got {value!r}")
        for name in ("cache_dir", "access_token", "revision"):
            value = getattr(self, name)
            if value is not None and not _text(value):
                raise ConfigError(name, f"{name} must be a str or None, got {_short(value)}")
        if not (_text(self.device) and _DEVICE.fullmatch(self.device)):
            raise ConfigError(
                "device",
                f"device must be 'auto', 'cpu', 'cuda', 'cuda:N', 'mps', ..., got "
                f"{_short(self.device)}",
            )
        object.__setattr__(self, "dtype", _dtype(self.dtype))
        for name in ("load_in_4bit", "enable_flash_attn", "anchor_clues"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(
                    name, f"{name} must be True or False, got {_short(getattr(self, name))}"
                )
        if self.device_map is not None:
            _one_of("device_map", self.device_map, DEVICE_MAPS)
        _one_of("memory_backend", self.memory_backend, BACKENDS)
        _one_of("fusion", self.fusion, FUSIONS)
        _one_of("language", self.language, LANGUAGES)
        _one_of("retrieval", self.retrieval, ROUTES)
        _one_of("heads_weighting", self.heads_weighting, HEADS_WEIGHTINGS)
        _one_of("compress", self.compress, COMPRESS_MODES)
        _one_of("position_mode", self.position_mode, POSITION_MODES)
        _one_of("answer_style", self.answer_style, ANSWER_STYLES)
        if self.beacon_ratio is not None:
            _check_int("beacon_ratio", self.beacon_ratio, 1)
        _check_int("window", self.window, 16)
        _check_scorer(self.scorer)
        _check_int("ret_hit", self.ret_hit, 1)
        _check_int("retrieval_chunk_size", self.retrieval_chunk_size, 8)
        _check_int("chunk_overlap", self.chunk_overlap, 0)
        if self.chunk_overlap >= self.retrieval_chunk_size:
            raise ConfigError(
                "chunk_overlap",
                f"chunk_overlap ({self.chunk_overlap}) must be below retrieval_chunk_size "
                f"({self.retrieval_chunk_size})",
            )
        if self.search_k is not None:
            _check_int("search_k", self.search_k, 1)
        _check_int("max_clues", self.max_clues, 0)
        _check_int("rrf_k", self.rrf_k, 0)
        _check_int("candidate_k", self.candidate_k, 1)
        for name in ("query_weight", "heads_weight"):
            weight = getattr(self, name)
            if not (_number(weight) and 0 <= weight <= 1e6):
                raise ConfigError(name, f"{name} must be a finite number >= 0, got {weight!r}")
        _check_clue_strategy(self.clue_strategy)
        _check_head_set(self.head_set)
        for name in ("memory_options", "index_options"):
            value = getattr(self, name)
            if not isinstance(value, Mapping) or not all(_text(k) for k in value):
                raise ConfigError(name, f"{name} must be a mapping of names, got {_short(value)}")
            object.__setattr__(self, name, MappingProxyType(dict(value)))
        _check_index(self.index, self.search_mode, self.index_options)
        self._check_backend_options()

    def _check_backend_options(self) -> None:
        backend = self.backend
        for f in fields(self):
            role: FieldRole = f.metadata["role"]
            if role.applies in ("all", "memory") or not _is_backend_list(role.applies):
                continue
            if backend not in role.applies.split(", ") and getattr(self, f.name) != f.default:
                raise ConfigError(
                    f.name,
                    f"{f.name} applies to the {role.applies} memories, not to "
                    f"memory_backend={backend!r}",
                )
        if backend == "full_kv" and self.beacon_ratio not in (None, 1):
            raise ConfigError(
                "beacon_ratio", "memory_backend='full_kv' keeps every entry: beacon_ratio must be 1"
            )
        allowed = BACKEND_OPTIONS[backend]
        for name, value in self.memory_options.items():
            if name not in allowed:
                raise ConfigError(
                    name,
                    f"unknown option {name!r} for memory_backend={backend!r}; it takes "
                    f"{sorted(allowed)}",
                )
            ok, want = _OPTION_CHECKS[name]
            if not ok(value):
                raise ConfigError(name, f"{name} must be {want}, got {_short(value)}")

    # -- derived -----------------------------------------------------------------------------
    @property
    def backend(self) -> str:
        """The memory back-end that will be built (``auto`` resolved)."""
        return resolve_backend(self.memory_backend, self.mem_model_name_or_path)

    @property
    def ratio(self) -> int:
        """The compressed KV memory's ratio: the one it keeps under ``compress="always"``; the
        most it may compress to under ``"when_needed"`` (it compresses only past the model's
        positions, at the smallest ratio that fits)."""
        if self.backend == "full_kv":
            return 1
        if self.beacon_ratio is not None:
            return self.beacon_ratio
        return FIXED_RATIO if self.compress == "always" else MAX_RATIO

    def option(self, name: str) -> Any:
        """A back-end option's value: the one given in ``memory_options``, else its default."""
        return self.memory_options.get(name, OPTION_DEFAULTS[name])

    def kv_options(self) -> KVOptions:
        """The windowed KV memories' options, every default filled in (one place)."""
        if self.backend not in KV_BACKENDS:
            raise ConfigError(
                "memory_backend", f"memory_backend={self.backend!r} is not a windowed KV memory"
            )
        return KVOptions(
            beacon_ratio=self.ratio,
            window=self.window,
            scorer=self.scorer,
            position_mode=self.position_mode,
            compress=self.compress if self.backend == "compressed_kv" else "always",
            **{name: self.option(name) for name in _KV_NAMES},
        )

    def memory_kwargs(self) -> dict[str, Any]:
        """The back-end's keyword arguments (model loading aside), every default filled in:
        for the KV back-ends the ``kv_options()`` fields, for the others their options."""
        if self.backend in KV_BACKENDS:
            return asdict(self.kv_options())
        kwargs = {name: self.option(name) for name in BACKEND_OPTIONS[self.backend]}
        if self.backend == "beacon":
            kwargs.update(beacon_ratio=self.beacon_ratio)
        return kwargs

    def model_kwargs(self) -> dict[str, Any]:
        """How models load: hub access and placement."""
        return {
            "cache_dir": self.cache_dir,
            "access_token": self.access_token,
            "revision": self.revision,
            "device": self.device,
            "dtype": self.dtype,
            "load_in_4bit": self.load_in_4bit,
            "enable_flash_attn": self.enable_flash_attn,
            "device_map": self.device_map,
        }

    def as_options(self) -> dict[str, Any]:
        """Every field by name (``from_options`` takes it back)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def with_changes(self, **changes: Any) -> MemoRAGConfig:
        """A copy with ``changes`` applied (validated again)."""
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            name = sorted(unknown)[0]
            raise ConfigError(name, f"unknown setting {name!r}")
        return replace(self, **changes)

    def saved_options(self, language: str | None = None) -> dict[str, Any]:
        """Every field a save holds, as JSON values (``FieldRole.saved``): the back-end and
        the prompt ``language`` as resolved; secrets, objects and the head set (saved by
        content beside it) are left out."""
        saved: dict[str, Any] = {}
        resolved = {"memory_backend": self.backend, "language": language or self.language}
        for f in fields(self):
            how, value = f.metadata["role"].saved, getattr(self, f.name)
            if how in ("never", "content"):
                continue
            if how == "resolved":
                value = resolved[f.name]
            if how == "model":
                value = model_ref(value)
            elif how == "if_named":
                if not isinstance(value, str):
                    continue
            elif how == "options":
                value = {
                    k: os.fspath(v) if _is_path(v) else v
                    for k, v in value.items()
                    if k not in UNSAVED_INDEX_OPTIONS
                }
            elif f.name == "memory_options":
                value = dict(value)
            saved[f.name] = value
        return saved

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> MemoRAGConfig:
        """A config from keyword options: config fields by name; any other name is a memory
        back-end option (``reserve_tokens=``, ``chunk_tokens=``, ...), refused if the back-end
        does not take it."""
        names = {f.name for f in fields(cls)}
        known = {k: v for k, v in options.items() if k in names}
        extra = {k: v for k, v in options.items() if k not in names}
        if extra:
            given = known.get("memory_options", {})
            if not isinstance(given, Mapping):
                raise ConfigError("memory_options", f"memory_options must be a mapping: {given!r}")
            known["memory_options"] = {**dict(given), **extra}
        return cls(**known)


def field_table() -> list[tuple[str, Any, FieldRole]]:
    """``(name, default, role)`` of every setting, in field order (the docs' settings table)."""
    rows = []
    for f in fields(MemoRAGConfig):
        default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
        rows.append((f.name, default, f.metadata["role"]))
    return rows


def config_fields() -> tuple[Field[Any], ...]:
    """The dataclass fields of ``MemoRAGConfig`` (with their ``role`` metadata)."""
    return fields(MemoRAGConfig)


def model_ref(name: str | None) -> str | None:
    """What a save records for a model: a local folder as its absolute path (so the save still
    names it from another working directory), a hub id as typed."""
    if name is None:
        return None
    path = Path(name).expanduser()
    return str(path.resolve()) if path.is_dir() else name


# -- checks ----------------------------------------------------------------------------------
def _text(value: object) -> bool:
    return isinstance(value, str) and "\x00" not in value and len(value) <= 4096


def _is_path(value: object) -> bool:
    return isinstance(value, os.PathLike) and _text(os.fspath(value))


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _number(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return isinstance(value, int) or math.isfinite(value)


def _is_backend_list(applies: str) -> bool:
    return all(part in BACKENDS for part in applies.split(", "))


def _one_of(name: str, value: object, choices: tuple[str, ...]) -> None:
    if not (isinstance(value, str) and value in choices):
        raise ConfigError(name, f"{name} must be one of {choices}, got {_short(value)}")


def _check_int(name: str, value: object, low: int) -> None:
    ok, want = _int(low)
    if not ok(value):
        raise ConfigError(name, f"{name} must be {want}, got {_short(value)}")


def _dtype(value: object) -> str | None:
    """A weight type by name (a ``torch.dtype`` becomes its name)."""
    if value is None:
        return None
    if not isinstance(value, str):
        import torch

        if isinstance(value, torch.dtype):
            value = str(value).removeprefix("torch.")
    if isinstance(value, str) and value in DTYPES:
        return value
    raise ConfigError("dtype", f"dtype must be one of {DTYPES} or None, got {_short(value)}")


def _check_scorer(scorer: object) -> None:
    if isinstance(scorer, str):
        if scorer not in SCORER_NAMES:
            raise ConfigError(
                "scorer", f"unknown scorer {scorer!r}; choose one of {SCORER_NAMES} or an object"
            )
        return
    from shared_core.types import Scorer

    if not isinstance(scorer, Scorer):
        raise ConfigError("scorer", "a scorer needs a .name and a .score(keys, values) method")


def _check_clue_strategy(strategy: object) -> None:
    from shared_core.clues import make_clue_writer

    try:
        make_clue_writer(strategy)  # type: ignore[arg-type]  # refuses unknown names now
    except Exception as exc:
        raise ConfigError("clue_strategy", f"clue_strategy: {exc}") from None


def _check_head_set(head_set: object) -> None:
    if head_set is None or _is_path(head_set) or (_text(head_set) and head_set):
        return  # a path: read (and checked) by the heads route
    from shared_core.head_sets import HeadSet  # data, a layer below the heads

    if not isinstance(head_set, HeadSet):
        raise ConfigError(
            "head_set",
            f"head_set must be a HeadSet, a path to its JSON file or None: {_short(head_set)}",
        )


def _check_index(index: object, search_mode: object, options: Mapping[str, Any]) -> None:
    from shared_core.retrieval.index_choice import check_index_choice

    try:
        check_index_choice(index, search_mode, options)  # type: ignore[arg-type]
    except Exception as exc:
        text = str(exc)
        name = next(
            (n for n in ("index ", "search_mode") if text.startswith(f"unknown {n}")),
            "index_options",
        ).strip()
        raise ConfigError(name, text) from None
    timeout = options.get("timeout")
    if timeout is not None and not (_number(timeout) and timeout > 0):
        raise ConfigError("index_options", f"index_options timeout must be > 0, got {timeout!r}")
    for key in ("location", "path", "url", "api_key", "collection"):
        value = options.get(key)
        if key in options and not (_text(value) or (key == "path" and _is_path(value))):
            raise ConfigError("index_options", f"index_options {key} must be a str")


__all__ = [
    "ANSWER_STYLES",
    "BACKENDS",
    "BACKEND_OPTIONS",
    "DEVICE_MAPS",
    "FUSIONS",
    "KV_BACKENDS",
    "OPTION_DEFAULTS",
    "ROUTES",
    "FieldRole",
    "KVOptions",
    "MemoRAGConfig",
    "field_table",
    "model_ref",
    "resolve_backend",
]
