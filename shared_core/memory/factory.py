"""Build the memory back-end a ``MemoRAGConfig`` names (model loading included)."""

from __future__ import annotations

from typing import Any

from shared_core.config import MemoRAGConfig
from shared_core.errors import InputError
from shared_core.memory.base import Memory
from shared_core.prompts import PromptSet


def build_memory(config: MemoRAGConfig, prompts: PromptSet) -> Memory:
    """Load the memory model and wrap it in the configured back-end (framed in ``prompts``)."""
    frame = {"intro": prompts.memory_intro, "ack": prompts.memory_ack}
    backend, name = config.backend, config.mem_model_name_or_path
    models = config.model_kwargs()
    if backend == "beacon":
        from shared_core.memory.beacon import NativeBeaconMemory

        if name is None:
            raise InputError("memory_backend='beacon' needs a memorag checkpoint (id or folder)")
        return NativeBeaconMemory.from_pretrained(
            name,
            **models,
            **config.memory_kwargs(),
            **frame,
        )
    from shared_core.models.loading import load_causal_lm

    lm = load_causal_lm(name, **models)
    if backend == "gist":
        from shared_core.memory.gist import GistMemory
        from shared_core.models.generation import LocalGenerator

        generator = LocalGenerator(lm.model, lm.tokenizer, name=lm.name)
        return GistMemory(generator, prompts=prompts, **config.memory_kwargs(), **frame)
    from shared_core.memory.compressed_kv import CompressedKVMemory

    return CompressedKVMemory(
        lm.model,
        lm.tokenizer,
        name=lm.name,
        revision=lm.revision,
        options=config.kv_options(),
        **frame,
    )


def create_memory(
    name_or_path: str | None = None,
    *,
    backend: str = "auto",
    prompts: PromptSet | None = None,
    **options: Any,
) -> Memory:
    """Load a memory model by hub id or path (``None`` = the embedded SmolLM2).

    ``options`` are ``MemoRAGConfig`` settings (``beacon_ratio``, ``window``, ``cache_dir``, ...)
    and the back-end's own options; anything the back-end does not take is refused.
    """
    from shared_core.prompts import get_prompts

    config = MemoRAGConfig.from_options(
        {"mem_model_name_or_path": name_or_path, "memory_backend": backend, **options}
    )
    return build_memory(config, prompts or get_prompts("en"))
