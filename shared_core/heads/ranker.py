"""Rank candidate passages by the memory's retrieval heads (memory-native retrieval).

For a query, the memory runs one pass with the selected heads (``entry_attention``); each
head's calibrated mass on the kept entries is summed over the entries that came from each
candidate's span of memorized text (a chunk of the engine's index, or a passage any store
returned, located by ``heads/candidates.py``), z-normalised over the candidates (so every head
counts alike), and the heads' z-scores are averaged. How much the heads agree on a query
(``agreement``: the mean correlation between the heads' per-chunk scores) sets how much
their list counts in fusion (``route.AttentionRoute``). Works over any ``AttentionMemory``:
full or compressed KV (absolute or compact positions) and the beacon memory, after ``add``
and after a reload: every kept entry keeps the text position it was read from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from shared_core.errors import InputError
from shared_core.head_sets import HeadSet
from shared_core.memory.attention_memory import AttentionMemory
from shared_core.memory.attention_probe import EntryAttention
from shared_core.memory.entry_map import chunk_mass
from shared_core.retrieval.index import chunk_passage
from shared_core.types import Chunk, Hit


@dataclass(frozen=True)
class ChunkScores:
    """The heads' score per chunk (mean z over heads), each head's raw mass per chunk, and
    how much the heads agree (``agreement``)."""

    chunks: tuple[Chunk, ...]
    scores: torch.Tensor  # [chunks] float64
    per_head: torch.Tensor  # [heads, chunks] float64, calibrated mass (not normalised)

    @property
    def agreement(self) -> float:
        return agreement(self.per_head)


def chunk_keys(memory: AttentionMemory, chunks: Sequence[Chunk]) -> list[tuple[int, int, int]]:
    """``(document index in the memory, start, end)`` for each chunk."""
    order = {d["doc_id"]: i for i, d in enumerate(memory.documents)}
    keys = []
    for chunk in chunks:
        if chunk.doc_id not in order:
            raise InputError(f"chunk {chunk.chunk_id!r} names a document the memory never read")
        keys.append((order[chunk.doc_id], chunk.start, chunk.end))
    return keys


def score_chunks(attention: EntryAttention, keys: Sequence[tuple[int, int, int]]) -> torch.Tensor:
    """Per head, the calibrated mass on the entries inside each chunk: ``[heads, chunks]``."""
    return chunk_mass(attention.mass, attention.origins, attention.token_map, keys)


def combine(per_head: torch.Tensor) -> torch.Tensor:
    """Average of the heads' z-scores over the chunks (a single chunk scores 0)."""
    if per_head.shape[-1] < 2:
        return torch.zeros(per_head.shape[-1], dtype=torch.float64)
    mean = per_head.mean(dim=-1, keepdim=True)
    std = per_head.std(dim=-1, keepdim=True).clamp_min(1e-12)
    return ((per_head - mean) / std).mean(dim=0)


def agreement(per_head: torch.Tensor) -> float:
    """Mean Pearson correlation over pairs of heads between their per-chunk scores, in [-1, 1].

    1.0 for a single head; 0.0 with fewer than two chunks; a head that scores every chunk
    alike correlates 0 with the others.
    """
    heads, chunks = per_head.shape
    if heads < 2:
        return 1.0
    if chunks < 2:
        return 0.0
    centred = per_head - per_head.mean(dim=-1, keepdim=True)
    norm = centred.norm(dim=-1, keepdim=True)
    unit = torch.where(norm > 1e-12, centred / norm.clamp_min(1e-12), 0.0)
    corr = unit @ unit.T
    return float((corr.sum() - corr.diagonal().sum()) / (heads * (heads - 1)))


@dataclass(frozen=True)
class AttentionList:
    """The heads' hits for one query, best first, and how much the heads agreed on it."""

    hits: list[Hit]
    agreement: float


class AttentionRanker:
    """Ranks chunks by the attention of a head set of the memory's model."""

    def __init__(self, memory: AttentionMemory, head_set: HeadSet) -> None:
        if not isinstance(memory, AttentionMemory):
            raise InputError(f"a {type(memory).__name__} memory has no retrieval heads")
        head_set.check_model(memory.name, memory.fingerprint())
        head_set.check_grid(memory.head_grid())
        self.memory = memory
        self.head_set = head_set

    def chunk_scores(self, query: str, chunks: Sequence[Chunk]) -> ChunkScores:
        keys = chunk_keys(self.memory, chunks)
        attention = self.memory.entry_attention(query, self.head_set.heads)
        per_head = score_chunks(attention, keys)
        return ChunkScores(tuple(chunks), combine(per_head), per_head)

    def span_scores(self, query: str, keys: Sequence[tuple[int, int, int]]) -> ChunkScores:
        """The heads' scores of spans ``(document index, start, end)`` of memorized text."""
        attention = self.memory.entry_attention(query, self.head_set.heads)
        per_head = score_chunks(attention, keys)
        return ChunkScores((), combine(per_head), per_head)

    def search(self, query: str, chunks: Sequence[Chunk], k: int) -> AttentionList:
        """The ``min(k, len(chunks))`` chunks the heads attend to most, best first; a hit's
        score is its mean z-score over the heads (0 = an average chunk of this query)."""
        if not chunks:
            return AttentionList([], 0.0)
        scored = self.chunk_scores(query, chunks)
        order = torch.argsort(scored.scores, descending=True, stable=True)[:k].tolist()
        hits = [
            Hit(passage=chunk_passage(chunks[i]), score=float(scored.scores[i]), rank=n)
            for n, i in enumerate(order)
        ]
        return AttentionList(hits, scored.agreement)
