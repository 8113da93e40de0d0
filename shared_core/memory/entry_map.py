"""Where each memory entry came from: text-token index -> (document, character offset).

The compressed KV memory keeps, per layer and KV head, the text-token index each kept entry
was read from (``origins``; ``-1`` for the chat frame), whatever its rotary position (compact
positions renumber entries, origins never change). A ``TokenMap`` turns those indexes into
``(document index, character offset inside the document)``, so attention onto entries can be
summed per retrieval chunk (``Chunk.doc_id``, ``Chunk.start``, ``Chunk.end``).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from shared_core.errors import PersistenceError
from shared_core.memory.cpu_threads import pass_threads


@dataclass(frozen=True)
class TokenMap:
    """Per text token: its document index (``-1``: a separator) and start char in that doc."""

    doc: torch.Tensor  # [text_tokens] int32
    char: torch.Tensor  # [text_tokens] int32

    def __len__(self) -> int:
        return int(self.doc.shape[0])

    @classmethod
    def empty(cls) -> TokenMap:
        return cls(torch.empty(0, dtype=torch.int32), torch.empty(0, dtype=torch.int32))

    def extend(self, other: TokenMap) -> TokenMap:
        return TokenMap(torch.cat([self.doc, other.doc]), torch.cat([self.char, other.char]))

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"t.doc": self.doc.contiguous(), "t.char": self.char.contiguous()}

    @classmethod
    def from_tensors(
        cls, doc: torch.Tensor, char: torch.Tensor, *, tokens: int, docs: int, where: str
    ) -> TokenMap:
        """Rebuild from saved tensors, checking lengths and ranges."""
        if doc.dtype != torch.int32 or char.dtype != torch.int32:
            raise PersistenceError(f"{where}: t.doc and t.char must be int32")
        if doc.shape != (tokens,) or char.shape != (tokens,):
            raise PersistenceError(
                f"{where}: t.doc/t.char hold {tuple(doc.shape)}/{tuple(char.shape)} tokens, "
                f"the manifest says {tokens}"
            )
        if tokens and (int(doc.min()) < -1 or int(doc.max()) >= docs or int(char.min()) < 0):
            raise PersistenceError(f"{where}: t.doc/t.char point outside the {docs} documents")
        return cls(doc, char)


def build_token_map(
    tokenizer: Any,
    joined: str,
    ids: Sequence[int],
    doc_spans: Sequence[tuple[int, int]],
    first_doc: int,
) -> TokenMap | None:
    """Map the tokens of ``joined`` (documents joined by separators) to documents.

    ``doc_spans[j]`` is where document ``first_doc + j`` lies in ``joined`` (separators
    between documents belong to none). Returns ``None``
    when the tokenizer gives no character offsets (a slow tokenizer) or its ids differ from
    ``ids`` (then the memory has no entry map, and says so when asked to rank chunks).
    """
    try:
        enc = tokenizer(joined, add_special_tokens=False, return_offsets_mapping=True)
    except (NotImplementedError, ValueError, TypeError):
        return None
    if list(enc["input_ids"]) != list(ids):
        return None
    n = len(ids)
    doc = torch.full((n,), -1, dtype=torch.int32)
    char = torch.zeros(n, dtype=torch.int32)
    doc_starts = [a for a, _ in doc_spans]
    ends = [b for _, b in doc_spans]
    for i, (s, e) in enumerate(enc["offset_mapping"]):
        c = s
        while c < e and joined[c].isspace():  # a token of " word" belongs where its word is
            c += 1
        c = min(c, max(e - 1, s))
        j = bisect.bisect_right(doc_starts, c) - 1
        if 0 <= j < len(doc_starts) and c < ends[j]:
            doc[i] = first_doc + j
            char[i] = c - doc_starts[j]
    return TokenMap(doc, char)


def chunk_mass(
    mass: torch.Tensor,
    origins: torch.Tensor,
    token_map: TokenMap,
    chunks: Sequence[tuple[int, int, int]],
) -> torch.Tensor:
    """Sum ``mass`` ``[heads, entries]`` over the entries inside each chunk.

    ``origins`` ``[heads, entries]`` are the entries' text-token indexes (``-1``: frame);
    ``chunks`` are ``(document index, start char, end char)``. Returns ``[heads, chunks]``.
    Overlapping chunks each get the entries they hold. Cost: one sort of all heads' entries
    (each head's keys offset into a range of its own) + one binary search per chunk and head.
    """
    heads = mass.shape[0]
    if not chunks:
        return torch.zeros(heads, 0, dtype=torch.float64)
    with pass_threads():
        return _chunk_mass(mass, origins, token_map, chunks)


def _chunk_mass(
    mass: torch.Tensor,
    origins: torch.Tensor,
    token_map: TokenMap,
    chunks: Sequence[tuple[int, int, int]],
) -> torch.Tensor:
    heads = mass.shape[0]
    has_tokens = len(token_map) > 0
    width = max(int(token_map.char.max()) if has_tokens else 0, max(e for _, _, e in chunks)) + 2
    docs = max(int(token_map.doc.max()) + 1 if has_tokens else 0, max(d for d, _, _ in chunks) + 1)
    span = docs * width + 1  # head h's keys lie in [h * span, (h + 1) * span)
    tok = origins.long()
    valid = tok >= 0
    tok = tok.clamp_min(0)
    if has_tokens:
        doc = torch.where(valid, token_map.doc.long()[tok], -1)
        char = token_map.char.long()[tok]
    else:
        doc, char = torch.full_like(tok, -1), torch.zeros_like(tok)
    inside = doc >= 0
    base = torch.arange(heads, dtype=torch.int64)[:, None] * span
    # entries outside every document go to the top of their head's range, past every chunk
    key = base + torch.where(inside, doc * width + char, span - 1)
    m = torch.where(inside, mass.double(), 0.0).flatten()
    order = torch.argsort(key.flatten())
    key, m = key.flatten()[order], m[order]
    cum = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(m, 0)])
    lo = torch.tensor([d * width + s for d, s, _ in chunks], dtype=torch.int64)[None] + base
    hi = torch.tensor([d * width + e for d, _, e in chunks], dtype=torch.int64)[None] + base
    a = torch.searchsorted(key, lo.flatten())
    b = torch.searchsorted(key, hi.flatten())
    return (cum[b] - cum[a]).view(heads, len(chunks))
