"""The beacon checkpoint's settings, read from its ``config.json`` and checked."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from shared_core.errors import InputError

SUPPORTED_TYPES = ("qwen2", "mistral")


class UnsupportedBeaconConfig(InputError):
    """The checkpoint asks for a beacon variant this implementation does not run."""


def _need(cfg: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in cfg or cfg[key] is None:
        raise UnsupportedBeaconConfig(f"{where}: config.json has no {key!r}")
    return cfg[key]


def _expect(cfg: Mapping[str, Any], key: str, allowed: Any, default: Any, where: str) -> None:
    value = cfg.get(key, default)
    ok = value in allowed if isinstance(allowed, tuple) else value == allowed
    if not ok:
        raise UnsupportedBeaconConfig(
            f"{where}: {key}={value!r} is not supported (only {allowed!r}); this native "
            "implementation runs the MemoRAG memory models' beacon settings"
        )


@dataclass(frozen=True)
class BeaconConfig:
    """A Qwen2/Mistral decoder with Activation Beacon (interleave, full-coverage, q/k/v)."""

    model_type: str
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    rms_norm_eps: float
    rope_theta: float
    max_position_embeddings: int
    attention_bias: bool
    tie_word_embeddings: bool
    beacon_window: int
    beacon_ratios: tuple[int, ...]
    ratio: int
    torch_dtype: str = "float32"
    bos_token_id: int | None = None
    eos_token_id: int | tuple[int, ...] | None = None

    @property
    def beacon_token_id(self) -> int:
        """Beacon tokens are numbered after the vocabulary (one beacon embedding row)."""
        return self.vocab_size

    @property
    def beacons_per_window(self) -> int:
        return self.beacon_window // self.ratio

    def capacity_tokens(self) -> int:
        """Raw tokens that fit in the positions: ``(max_pos - window) * ratio + window``."""
        return (self.max_position_embeddings - self.beacon_window) * self.ratio + self.beacon_window

    def with_ratio(self, ratio: int) -> BeaconConfig:
        """The same model compressing at ``ratio`` (must divide the window)."""
        check_ratio(ratio, self.beacon_window)
        return replace(self, ratio=ratio)

    @classmethod
    def from_dict(
        cls, cfg: Mapping[str, Any], *, ratio: int | None = None, where: str = "config"
    ) -> BeaconConfig:
        """Validate a checkpoint config dict; ``ratio`` overrides the config's choice."""
        model_type = cfg.get("model_type")
        if model_type not in SUPPORTED_TYPES:
            raise UnsupportedBeaconConfig(
                f"{where}: model_type {model_type!r} is not a beacon layout this code runs "
                f"(supported: {', '.join(SUPPORTED_TYPES)})"
            )
        _expect(cfg, "beacon_pos", "interleave", None, where)
        _expect(cfg, "beacon_attn", "full-coverage", None, where)
        _expect(cfg, "beacon_sink_size", 0, 0, where)
        _expect(cfg, "beacon_parallel_window", 1, 1, where)
        _expect(cfg, "beacon_attend_prev", True, True, where)
        _expect(cfg, "hidden_act", "silu", "silu", where)
        params = cfg.get("beacon_param")
        if not isinstance(params, list) or sorted(params) != ["k", "q", "v"]:
            raise UnsupportedBeaconConfig(
                f"{where}: beacon_param={params!r} is not supported (only ['q', 'k', 'v'])"
            )
        rope = cfg.get("rope_scaling")
        if rope not in (None, {}) and not (
            isinstance(rope, Mapping) and rope.get("rope_type", rope.get("type")) == "default"
        ):
            raise UnsupportedBeaconConfig(f"{where}: rope_scaling={rope!r} is not supported")
        sliding = cfg.get("sliding_window")
        if model_type == "qwen2":
            sliding = sliding if cfg.get("use_sliding_window") else None
        if sliding is not None:
            raise UnsupportedBeaconConfig(
                f"{where}: sliding_window={sliding!r} is not supported (must be off/null)"
            )
        window = int(_need(cfg, "beacon_window", where))
        stride = int(cfg.get("beacon_stride", window))
        if stride != window:
            raise UnsupportedBeaconConfig(
                f"{where}: beacon_stride {stride} != beacon_window {window}; interleave needs "
                "stride == window"
            )
        ratios = cfg.get("beacon_ratio", [4])
        ratios = tuple(int(r) for r in (ratios if isinstance(ratios, list) else [ratios]))
        if not ratios:
            raise UnsupportedBeaconConfig(f"{where}: beacon_ratio is empty")
        chosen = ratio if ratio is not None else (4 if 4 in ratios else ratios[0])
        check_ratio(chosen, window)
        hidden = int(_need(cfg, "hidden_size", where))
        heads = int(_need(cfg, "num_attention_heads", where))
        head_dim = int(cfg.get("head_dim") or hidden // heads)
        eos = cfg.get("eos_token_id")
        return cls(
            model_type=str(model_type),
            vocab_size=int(_need(cfg, "vocab_size", where)),
            hidden_size=hidden,
            num_layers=int(_need(cfg, "num_hidden_layers", where)),
            num_heads=heads,
            num_kv_heads=int(cfg.get("num_key_value_heads") or heads),
            head_dim=head_dim,
            intermediate_size=int(_need(cfg, "intermediate_size", where)),
            rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
            rope_theta=float(cfg.get("rope_theta", 10000.0)),
            max_position_embeddings=int(_need(cfg, "max_position_embeddings", where)),
            attention_bias=model_type == "qwen2",
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            beacon_window=window,
            beacon_ratios=ratios,
            ratio=chosen,
            torch_dtype=str(cfg.get("torch_dtype") or cfg.get("dtype") or "float32"),
            bos_token_id=cfg.get("bos_token_id"),
            eos_token_id=tuple(eos) if isinstance(eos, list) else eos,
        )

    @classmethod
    def from_file(cls, path: str | Path, *, ratio: int | None = None) -> BeaconConfig:
        """Read ``config.json`` (a file or the folder holding it)."""
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UnsupportedBeaconConfig(f"cannot read {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise UnsupportedBeaconConfig(f"{path}: not a JSON object")
        return cls.from_dict(data, ratio=ratio, where=str(path))


def check_ratio(ratio: Any, window: int) -> None:
    """A compression ratio is an int >= 1 that divides the window."""
    if isinstance(ratio, bool) or not isinstance(ratio, int) or ratio < 1:
        raise InputError(f"beacon_ratio must be an int >= 1, got {ratio!r}")
    if window % ratio:
        raise InputError(
            f"beacon_ratio {ratio} does not divide beacon_window {window}; interleaved beacons "
            "need window % ratio == 0"
        )
