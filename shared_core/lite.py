"""``MemoRAGLite``: upstream's Lite mode by name, over this package's gist memory back-end.

Upstream ``qhjqhj00/MemoRAG`` has a ``MemoRAGLite`` whose memory is the gists a small
instruction model writes of each chunk, read back before every prompt; that is exactly the
``gist`` back-end here. The class takes upstream's constructor and ``memorize`` arguments and is
otherwise a ``MemoRAG``: same retrieval, tasks, saving (``from_dir`` / ``load``), adapters.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shared_core.errors import InputError
from shared_core.inputs import ContextInput
from shared_core.pipeline import MemoRAG


class MemoRAGLite(MemoRAG):
    """A ``MemoRAG`` whose memory is gists written by one model, which also answers.

    ``gen_model_name_or_path``: the model that writes gists, clues and answers (a hub id or
    folder; default the embedded SmolLM2, offline; upstream's default is
    ``Qwen/Qwen2.5-1.5B-Instruct``). ``customized_gen_model``: any ``TextGenerator`` (an
    ``OpenAIGenerator``, a framework LLM through an adapter's ``llm_bridge``) in that role
    instead. ``gist_chunk_size``: tokens per gisted chunk. Other keywords are ``MemoRAG``'s
    settings (``ret_hit``, ``retrieval_chunk_size``, ``cache_dir``, ``access_token``,
    ``load_in_4bit``, ``enable_flash_attn``, ...), validated the same way.
    """

    def __init__(
        self,
        gen_model_name_or_path: str | None = None,
        ret_model_name_or_path: str | None = None,
        customized_gen_model: Any = None,
        *,
        gist_chunk_size: int | None = None,
        **options: Any,
    ) -> None:
        # A save or a pickle names the model as the memory's (mem_model_name_or_path).
        saved_as = options.pop("mem_model_name_or_path", None)
        if saved_as is not None and gen_model_name_or_path not in (None, saved_as):
            raise InputError(
                f"gen_model_name_or_path={gen_model_name_or_path!r} and "
                f"mem_model_name_or_path={saved_as!r}: MemoRAGLite uses one model, pass one"
            )
        gen_model_name_or_path = gen_model_name_or_path or saved_as
        if gen_model_name_or_path is not None and customized_gen_model is not None:
            raise InputError("pass gen_model_name_or_path or customized_gen_model, not both")
        if options.pop("memory_backend", "gist") != "gist":
            raise InputError(
                "MemoRAGLite's memory is the gist back-end; use MemoRAG(...) for another"
            )
        for taken in ("memory", "generator"):
            if taken in options:
                raise InputError(
                    f"MemoRAGLite sets {taken}= itself (a gist memory over one model); pass "
                    "customized_gen_model=, or use MemoRAG(...)"
                )
        if gist_chunk_size is not None:
            options["chunk_tokens"] = gist_chunk_size
        if customized_gen_model is not None:
            from shared_core.memory.gist import GistMemory
            from shared_core.prompts import get_prompts

            language = options.setdefault("language", "en")
            if language == "auto":
                raise InputError("language='auto' needs a local model; pass 'en' or 'zh'")
            gists = {k: options.pop(k) for k in ("chunk_tokens", "gist_tokens") if k in options}
            memory = GistMemory(customized_gen_model, prompts=get_prompts(language), **gists)
            super().__init__(
                None,
                ret_model_name_or_path,
                memory=memory,
                generator=customized_gen_model,
                **options,
            )
            return
        super().__init__(
            gen_model_name_or_path,
            ret_model_name_or_path,
            memory_backend="gist",
            **options,
        )

    def memorize(
        self,
        context: ContextInput,
        save_dir: str | Path | None = None,
        print_stats: bool = True,
        batch_size: int = 1,
        *,
        overwrite: bool = False,
    ) -> MemoRAGLite:
        """Write the gists and the index (``print_stats`` on by default, as upstream).

        ``batch_size`` is upstream's GPU batch of gist prompts; gists are written one chunk
        at a time here, so only 1 is accepted.
        """
        if batch_size != 1:
            raise InputError(
                f"batch_size={batch_size!r}: MemoRAGLite writes one gist at a time; pass 1"
            )
        super().memorize(context, save_dir, print_stats, overwrite=overwrite)
        return self


__all__ = ["MemoRAGLite"]
