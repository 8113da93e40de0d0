"""Memory back-ends behind one interface, and a factory that picks one by model name."""

from __future__ import annotations

from typing import Any

from shared_core.errors import InputError
from shared_core.memory.base import Memory, MemoryStats
from shared_core.memory.compressed_kv import CompressedKVMemory

BACKENDS = ("auto", "compressed_kv", "full_kv", "beacon", "gist")


def create_memory(
    name_or_path: str | None = None,
    *,
    backend: str = "auto",
    cache_dir: str | None = None,
    access_token: str | None = None,
    device: str | None = "auto",
    dtype: Any = None,
    load_in_4bit: bool = False,
    prompts: Any = None,
    beacon_ratio: int = 4,
    **options: Any,
) -> Memory:
    """Load a memory model by hub id or path (``None`` = the embedded SmolLM2).

    ``auto`` picks the native beacon memory for upstream ``memorag-*`` checkpoints and the
    training-free compressed KV memory for any other causal LM; ``full_kv`` is compressed KV at
    ratio 1; ``gist`` keeps text gists written by the model.
    """
    if backend not in BACKENDS:
        raise InputError(f"unknown memory backend {backend!r}; choose one of {BACKENDS}")
    if backend == "auto":
        backend = (
            "beacon"
            if name_or_path and "memorag" in str(name_or_path).lower()
            else ("compressed_kv")
        )
    frame: dict[str, Any] = {}
    if prompts is not None:
        frame = {"intro": prompts.memory_intro, "ack": prompts.memory_ack}
    if backend == "beacon":
        return _native_beacon(
            name_or_path,
            cache_dir,
            access_token,
            device,
            dtype,
            load_in_4bit,
            beacon_ratio,
            frame,
            options,
        )
    from shared_core.models.loading import load_causal_lm

    lm = load_causal_lm(
        name_or_path,
        cache_dir=cache_dir,
        access_token=access_token,
        device=device,
        dtype=dtype,
        load_in_4bit=load_in_4bit,
    )
    if backend == "gist":
        from shared_core.memory.gist import GistMemory
        from shared_core.models.generation import LocalGenerator

        generator = LocalGenerator(lm.model, lm.tokenizer, name=lm.name)
        return GistMemory(generator, prompts=prompts, **frame)
    if backend == "full_kv":
        beacon_ratio = 1
    return CompressedKVMemory(
        lm.model,
        lm.tokenizer,
        name=lm.name,
        revision=lm.revision,
        beacon_ratio=beacon_ratio,
        **frame,
        **options,
    )


_BEACON_OPTIONS = ("revision", "enable_flash_attn", "device_map", "tokenizer", "show_progress")


def _native_beacon(
    name_or_path: str | None,
    cache_dir: str | None,
    access_token: str | None,
    device: str | None,
    dtype: Any,
    load_in_4bit: bool,
    beacon_ratio: int | None,
    frame: dict[str, Any],
    options: dict[str, Any],
) -> Memory:
    """Our own Activation Beacon implementation of a memorag-* checkpoint (no remote code).

    ``window``/``scorer`` (compressed-KV settings) do not apply: the checkpoint fixes them.
    """
    from shared_core.memory.beacon import NativeBeaconMemory

    if name_or_path is None:
        raise InputError("backend='beacon' needs a memorag checkpoint (hub id or folder)")
    extra = {k: options[k] for k in _BEACON_OPTIONS if k in options}
    return NativeBeaconMemory.from_pretrained(
        name_or_path,
        cache_dir=cache_dir,
        access_token=access_token,
        device=device,
        dtype=dtype,
        load_in_4bit=load_in_4bit,
        beacon_ratio=beacon_ratio,
        **extra,
        **frame,
    )


__all__ = ["BACKENDS", "CompressedKVMemory", "Memory", "MemoryStats", "create_memory"]
