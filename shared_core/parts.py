"""The parts a pipeline is wired from, built in one explicit step from a config."""

from __future__ import annotations

import copy
from dataclasses import dataclass

from shared_core.clues import ClueWriter, make_clue_writer
from shared_core.config import MemoRAGConfig
from shared_core.memory import Memory, build_memory
from shared_core.models.generation import LocalGenerator, as_generator
from shared_core.prompts import PromptSet, get_prompts
from shared_core.retrieval.chunking import TokenChunker
from shared_core.retrieval.embeddings import Embedder
from shared_core.types import TextGenerator


@dataclass(frozen=True)
class Injected:
    """Parts the caller built (each replaces the one the config would load)."""

    memory: Memory | None = None
    embedder: Embedder | None = None
    generator: TextGenerator | None = None

    def generator_kind(self, config: MemoRAGConfig) -> str:
        """What a save records of the answer generator: ``custom`` (an object the caller must
        pass again), ``model`` (``gen_model_name_or_path``) or ``memory`` (its own model)."""
        if self.generator is not None:
            return "custom"
        return "model" if config.gen_model_name_or_path is not None else "memory"


@dataclass(frozen=True)
class Parts:
    """Everything a pipeline runs with; ``generator`` is ``None`` when nothing can answer."""

    prompts: PromptSet
    memory: Memory
    embedder: Embedder
    chunker: TokenChunker
    clue_writer: ClueWriter
    generator: TextGenerator | None


def build_parts(config: MemoRAGConfig, language: str, injected: Injected) -> Parts:
    """Load or take every part, in order: prompts (``language`` already resolved) first, so
    the memory is framed in the corpus's language."""
    prompts = get_prompts(language)
    memory = injected.memory or build_memory(config, prompts)
    embedder = injected.embedder or Embedder.load(
        config.ret_model_name_or_path, cache_dir=config.cache_dir, access_token=config.access_token
    )
    chunker = make_chunker(config, embedder)
    return Parts(
        prompts=prompts,
        memory=memory,
        embedder=embedder,
        chunker=chunker,
        clue_writer=make_clue_writer(config.clue_strategy, prompts),
        generator=_generator(config, memory, injected.generator),
    )


def make_chunker(config: MemoRAGConfig, embedder: Embedder) -> TokenChunker:
    """The pipeline's chunking: ``retrieval_chunk_size`` tokens of the embedder (capped at
    what it reads), ``chunk_overlap`` shared."""
    size = min(config.retrieval_chunk_size, embedder.max_tokens or config.retrieval_chunk_size)
    # Reliability: chunking counts tokens with its own copy of the embedder's tokenizer. A HF
    # fast tokenizer keeps truncation/padding state; chunking (no truncation) and query
    # embedding (truncation) on one object from two threads broke both.
    return TokenChunker.from_tokenizer(
        copy.deepcopy(embedder.tokenizer), chunk_tokens=size, overlap_tokens=config.chunk_overlap
    )


def _generator(
    config: MemoRAGConfig, memory: Memory, given: TextGenerator | None
) -> TextGenerator | None:
    if given is not None:
        return as_generator(given)
    if config.gen_model_name_or_path is not None:
        from shared_core.models.loading import load_causal_lm

        lm = load_causal_lm(config.gen_model_name_or_path, **config.model_kwargs())
        return LocalGenerator(lm.model, lm.tokenizer, name=lm.name)
    return memory.answer_generator()
