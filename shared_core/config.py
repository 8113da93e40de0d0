"""``MemoRAGConfig``: every setting of a pipeline in one frozen, validated value.

Unknown or ill-typed options are refused at construction with the option's name, for every
memory back-end: an option that the chosen back-end would not use is an error, never dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any

from shared_core.errors import InputError

BACKENDS = ("auto", "compressed_kv", "full_kv", "beacon", "gist")
FUSIONS = ("auto", "interleave", "rrf", "zscore", "union")
ROUTES = ("auto", "heads", "clues", "heads+clues")
#: How the heads list is weighted in fusion (docs/heads.md, "Defaults").
HEADS_WEIGHTINGS = ("agreement", "fixed")
#: The compressed KV memory's default ratio under ``compress="always"``, and the most it may
#: compress to under ``"when_needed"`` (docs/heads.md: compress only as much as positions need).
FIXED_RATIO = 4
MAX_RATIO = 32
#: Which entries ``MemoRAG()``'s compressed memory keeps when it must compress: evenly spaced
#: ones, so every chunk stays represented for the retrieval heads (pooled HotpotQA at ratio 16:
#: heads-alone recall@5 0.433 with stride against 0.050 with key norm, docs/heads.md).
DEFAULT_SCORER = "stride"
#: Placements accelerate computes from the visible GPUs (``from_pretrained(device_map=...)``).
DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")
LANGUAGES = ("auto", "en", "zh")
#: How ``memorag`` / ``qa`` answers are written (docs/answers.md): ``short`` copies a phrase of
#: the passages (yes/no for yes/no questions) and cites it; ``free`` lets the generator write;
#: ``auto`` is short with a local generator, free for long-form requests or a foreign one.
ANSWER_STYLES = ("auto", "short", "free")

#: Options each back-end takes beyond the common ones, with a check of each value.
_INT = (int, "an int")
_OPT_INT = ((int, type(None)), "an int or None")
_FLAG = ((bool, type(None)), "a bool or None")
_KV_OPTIONS: dict[str, tuple[Any, str]] = {
    "reserve_tokens": _INT,
    "max_chars": _OPT_INT,
    "max_documents": _OPT_INT,
    "max_new_tokens_cap": _INT,
    "show_progress": _FLAG,
}
BACKEND_OPTIONS: dict[str, dict[str, tuple[Any, str]]] = {
    "compressed_kv": _KV_OPTIONS,
    "full_kv": _KV_OPTIONS,
    "beacon": {
        "max_chars": _OPT_INT,
        "max_documents": _OPT_INT,
        "max_new_tokens_cap": _INT,
        "show_progress": _FLAG,
    },
    "gist": {
        "chunk_tokens": _INT,
        "gist_tokens": _INT,
        "max_chars": _OPT_INT,
        "max_documents": _OPT_INT,
    },
}
#: Settings of the windowed KV back-ends only (the beacon checkpoint fixes its own window).
_KV_ONLY = ("window", "scorer", "position_mode", "compress")


def resolve_backend(backend: str, model: str | None) -> str:
    """``auto``: the native beacon memory for ``memorag-*`` checkpoints, else compressed KV."""
    if backend != "auto":
        return backend
    return "beacon" if model and "memorag" in str(model).lower() else "compressed_kv"


@dataclass(frozen=True, kw_only=True)
class MemoRAGConfig:
    """What a ``MemoRAG`` pipeline is made of and how it retrieves (defaults: the embedded,
    offline models and the settings chosen on the tuning sets, see ``docs/benchmarks.md``)."""

    # -- models (hub ids or local folders; None = the embedded default) --------------------
    mem_model_name_or_path: str | None = None
    ret_model_name_or_path: str | None = None
    gen_model_name_or_path: str | None = None
    cache_dir: str | None = None
    access_token: str | None = None
    revision: str | None = None
    device: str | None = "auto"
    dtype: Any = None
    load_in_4bit: bool = False
    enable_flash_attn: bool = False
    device_map: str | None = None  # spread a model over GPUs (accelerate): "auto", ...
    # -- memory ------------------------------------------------------------------------------
    memory_backend: str = "auto"
    beacon_ratio: int | None = None  # compressed KV: 4 (always) / at most 32 (when_needed)
    window: int | None = None  # compressed/full KV: 2048
    scorer: str | None = None  # compressed/full KV: "stride" (docs/heads.md, "KV selection")
    position_mode: str | None = None  # compressed/full KV: "auto"
    compress: str | None = None  # compressed KV: "when_needed" (full KV while the text fits)
    memory_options: Mapping[str, Any] = field(default_factory=dict)
    # -- retrieval ---------------------------------------------------------------------------
    ret_hit: int = 3
    retrieval_chunk_size: int = 512
    chunk_overlap: int = 32
    search_k: int | None = None  # depth of each search; None: max(k, ret_hit)
    index: str = "faiss"  # the own index's store: "faiss" (in process) or "qdrant"
    search_mode: str = "dense"  # "dense", "bm25" or "hybrid" (BM25 beside dense, fused)
    index_options: Mapping[str, Any] = field(default_factory=dict)  # Qdrant: location/path/url
    # -- clues and fusion --------------------------------------------------------------------
    clue_strategy: Any = "copy+surrogate"  # a strategy name or a ClueWriter
    anchor_clues: bool = True
    max_clues: int = 16
    query_weight: float = 2.0
    fusion: str = "auto"  # zscore on the heads route, interleave on the clue route
    rrf_k: int = 60
    # -- memory-native retrieval (docs/heads.md) ---------------------------------------------
    retrieval: str = "auto"  # "heads" where the model has a head set, else "clues"
    head_set: Any = None  # a HeadSet or its JSON path; None: the one shipped for the model
    heads_weight: float = 2.0  # the most the heads list counts, vs query_weight 2 (docs/heads.md)
    heads_weighting: str = "agreement"  # heads_weight x the heads' agreement, or "fixed"
    language: str = "auto"
    # -- answers -----------------------------------------------------------------------------
    answer_style: str = "auto"  # "short" (a cited phrase of the passages), "free" or "auto"

    def __post_init__(self) -> None:
        for name in ("mem_model_name_or_path", "ret_model_name_or_path", "gen_model_name_or_path"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, str) and value.strip()):
                raise InputError(f"{name} must be a model id or folder (str), got {value!r}")
        for name in ("load_in_4bit", "enable_flash_attn", "anchor_clues"):
            if not isinstance(getattr(self, name), bool):
                raise InputError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.device_map is not None:
            _one_of("device_map", self.device_map, DEVICE_MAPS)
        _one_of("memory_backend", self.memory_backend, BACKENDS)
        _one_of("fusion", self.fusion, FUSIONS)
        _one_of("language", self.language, LANGUAGES)
        _one_of("retrieval", self.retrieval, ROUTES)
        _one_of("heads_weighting", self.heads_weighting, HEADS_WEIGHTINGS)
        _one_of("answer_style", self.answer_style, ANSWER_STYLES)
        if self.compress is not None:
            _one_of("compress", self.compress, ("always", "when_needed"))
        if self.beacon_ratio is not None:
            _int("beacon_ratio", self.beacon_ratio, 1)
        if self.window is not None:
            _int("window", self.window, 16)
        if self.position_mode is not None:
            _one_of("position_mode", self.position_mode, ("auto", "absolute", "compact"))
        if self.scorer is not None and not (isinstance(self.scorer, str) and self.scorer):
            raise InputError(f"scorer must be a scorer name, got {self.scorer!r}")
        _int("ret_hit", self.ret_hit, 1)
        _int("retrieval_chunk_size", self.retrieval_chunk_size, 8)
        _int("chunk_overlap", self.chunk_overlap, 0)
        if self.chunk_overlap >= self.retrieval_chunk_size:
            raise InputError(
                f"chunk_overlap ({self.chunk_overlap}) must be below retrieval_chunk_size "
                f"({self.retrieval_chunk_size})"
            )
        if self.search_k is not None:
            _int("search_k", self.search_k, 1)
        _int("max_clues", self.max_clues, 0)
        _int("rrf_k", self.rrf_k, 0)
        for name in ("query_weight", "heads_weight"):
            weight = getattr(self, name)
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
                raise InputError(f"{name} must be a number >= 0, got {weight!r}")
        if isinstance(self.clue_strategy, str):
            from shared_core.clues import make_clue_writer

            make_clue_writer(self.clue_strategy)  # refuses unknown names now
        from shared_core.retrieval.index_choice import check_index_choice

        check_index_choice(self.index, self.search_mode, self.index_options)
        self._check_backend_options()
        object.__setattr__(self, "memory_options", MappingProxyType(dict(self.memory_options)))
        object.__setattr__(self, "index_options", MappingProxyType(dict(self.index_options)))

    def _check_backend_options(self) -> None:
        backend = self.backend
        if backend in ("beacon", "gist"):
            given = [name for name in _KV_ONLY if getattr(self, name) is not None]
            if given:
                raise InputError(
                    f"{given[0]} applies to the compressed_kv and full_kv memories, not to "
                    f"memory_backend={backend!r}"
                )
        if backend == "full_kv" and self.beacon_ratio not in (None, 1):
            raise InputError("memory_backend='full_kv' keeps every entry: beacon_ratio must be 1")
        allowed = BACKEND_OPTIONS[backend]
        for name, value in self.memory_options.items():
            if name not in allowed:
                raise InputError(
                    f"unknown option {name!r} for memory_backend={backend!r}; it takes "
                    f"{sorted(allowed)}"
                )
            kinds, want = allowed[name]
            if isinstance(value, bool) and kinds is not bool and bool not in _tuple(kinds):
                raise InputError(f"{name} must be {want}, got {value!r}")
            if not isinstance(value, kinds):
                raise InputError(f"{name} must be {want}, got {value!r}")

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

    def memory_kwargs(self) -> dict[str, Any]:
        """The back-end's keyword arguments (model loading aside)."""
        kwargs: dict[str, Any] = dict(self.memory_options)
        if self.backend in ("compressed_kv", "full_kv"):
            kwargs.update(
                beacon_ratio=self.ratio,
                window=self.window or 2048,
                scorer=self.scorer or DEFAULT_SCORER,
                position_mode=self.position_mode or "auto",
            )
            if self.backend == "compressed_kv":
                kwargs["compress"] = self.compress or "when_needed"
        elif self.backend == "beacon":
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
        return replace(self, **changes)

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> MemoRAGConfig:
        """A config from keyword options: config fields by name; any other name is a memory
        back-end option (``reserve_tokens=``, ``chunk_tokens=``, ...), refused if the back-end
        does not take it."""
        names = {f.name for f in fields(cls)}
        known = {k: v for k, v in options.items() if k in names}
        extra = {k: v for k, v in options.items() if k not in names}
        if extra:
            known["memory_options"] = {**dict(known.get("memory_options", {})), **extra}
        return cls(**known)


def _tuple(kinds: Any) -> tuple[type, ...]:
    return kinds if isinstance(kinds, tuple) else (kinds,)


def _one_of(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise InputError(f"{name} must be one of {choices}, got {value!r}")


def _int(name: str, value: object, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise InputError(f"{name} must be an int >= {low}, got {value!r}")


__all__ = [
    "ANSWER_STYLES",
    "BACKENDS",
    "BACKEND_OPTIONS",
    "DEVICE_MAPS",
    "FUSIONS",
    "ROUTES",
    "MemoRAGConfig",
    "resolve_backend",
]
