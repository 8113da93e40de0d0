"""One generator in every text role: a MemoRAG engine whose memory, clues and answers all come
from a model you bring (an ``OpenAIGenerator``, a framework LLM translated by an adapter, any
``TextGenerator``).

Such a model's KV cache is out of reach, so the memory is a ``GistMemory``: the model writes a
gist of each chunk at ``memorize`` time, reads the gists before every clue prompt and answers
after retrieval. The dense index stays local (or on Qdrant: ``index="qdrant"``).
"""

from __future__ import annotations

from typing import Any

from shared_core.errors import InputError
from shared_core.memory.gist import GistMemory
from shared_core.prompts import get_prompts
from shared_core.types import TextGenerator


def memorag_with_llm(
    llm: TextGenerator,
    *,
    language: str = "en",
    chunk_tokens: int = 1024,
    gist_tokens: int = 96,
    **memorag_kwargs: Any,
) -> Any:
    """A ``MemoRAG`` whose gist memory, clue writing and answers all run on ``llm``.

    ``chunk_tokens`` / ``gist_tokens`` size the gist memory (one request per chunk at memorize
    time); other keywords go to ``MemoRAG`` (``embedder=``, ``clue_strategy=``, ``index=``...).
    """
    if not isinstance(llm, TextGenerator):
        raise InputError(
            f"llm must be a TextGenerator (generate + stream), got {type(llm).__name__}; wrap a "
            "LangChain or LlamaIndex model with its adapter's llm_bridge"
        )
    for taken in ("memory", "generator", "customized_gen_model", "memory_backend"):
        if taken in memorag_kwargs:
            raise InputError(f"{taken}= and llm= both given: llm fills that role")
    if language == "auto":
        raise InputError("language='auto' is not supported with llm=: pass 'en' or 'zh'")
    from shared_core.pipeline import MemoRAG

    prompts = get_prompts(language)
    memory = GistMemory(llm, prompts=prompts, chunk_tokens=chunk_tokens, gist_tokens=gist_tokens)
    return MemoRAG(memory=memory, generator=llm, language=language, **memorag_kwargs)


__all__ = ["memorag_with_llm"]
