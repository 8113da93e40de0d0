"""Query-agnostic scorers: which KV entries of a window the memory keeps.

A scorer sees one layer's keys and values for one window, shaped ``[heads, window, head_dim]``,
and returns a score per entry (``[heads, window]``); the highest ``1/beacon_ratio`` per head are
kept. Scores must not depend on any future query: the memory serves questions unknown when it
reads the text.
"""

from __future__ import annotations

import torch

from shared_core.errors import InputError
from shared_core.types import Scorer


class KeyNormScorer:
    """Keep entries with the smallest key norm (low-norm keys draw the most attention)."""

    name = "key_norm"

    def score(self, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        return -keys.float().norm(dim=-1)


class ValueNormScorer:
    """Keep entries whose values are largest: they move the output most when attended."""

    name = "value_norm"

    def score(self, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        return values.float().norm(dim=-1)


class StrideScorer:
    """Keep evenly spaced entries, the same for every head (uniform coverage, like beacons)."""

    name = "stride"

    def score(self, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        heads, window = keys.shape[0], keys.shape[1]
        # Bit-reversal-like order is overkill: a decreasing score over the fractional phase keeps
        # every r-th entry for any keep count.
        order = torch.arange(window, dtype=torch.float32)
        phase = torch.remainder(order * 0.6180339887, 1.0)
        return (-phase).expand(heads, window).clone()


class CoveringKeyNormScorer:
    """Key norm inside blocks of ``block`` tokens, taken in turns: every block keeps its best
    entry before any block keeps a second, so no stretch of text (no chunk) is left without
    entries, while each block still keeps its lowest-norm keys."""

    name = "key_norm_cover"

    def __init__(self, block: int = 32) -> None:
        if isinstance(block, bool) or not isinstance(block, int) or block < 1:
            raise InputError(f"block must be an int >= 1, got {block!r}")
        self.block = block

    def score(self, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        heads, window = keys.shape[0], keys.shape[1]
        norm = keys.float().norm(dim=-1)  # [heads, window]
        pad = (-window) % self.block
        padded = torch.nn.functional.pad(norm, (0, pad), value=float("inf"))
        blocks = padded.view(heads, -1, self.block)
        rank = blocks.argsort(dim=-1).argsort(dim=-1).view(heads, -1)[:, :window]
        # Rank first (turns over the blocks), then a small key-norm tie-break within a turn.
        tie = norm / (norm.max(dim=-1, keepdim=True).values + 1e-6)
        return -rank.float() - 0.5 * tie


SCORERS: dict[str, type] = {
    KeyNormScorer.name: KeyNormScorer,
    CoveringKeyNormScorer.name: CoveringKeyNormScorer,
    ValueNormScorer.name: ValueNormScorer,
    StrideScorer.name: StrideScorer,
}


def get_scorer(scorer: str | Scorer) -> Scorer:
    """A scorer by name (``key_norm``, ``key_norm_cover``, ``value_norm``, ``stride``) or the
    object itself."""
    if isinstance(scorer, str):
        try:
            return SCORERS[scorer]()
        except KeyError:
            raise InputError(
                f"unknown scorer {scorer!r}; choose one of {sorted(SCORERS)} or pass an object "
                "with .name and .score(keys, values)"
            ) from None
    if not isinstance(scorer, Scorer):
        raise InputError("a scorer needs a .name and a .score(keys, values) method")
    return scorer


def select(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """Indices ``[heads, keep]`` of the best ``keep`` entries per head, in text order."""
    keep = max(1, min(keep, scores.shape[-1]))
    top = torch.topk(scores, keep, dim=-1, sorted=False).indices
    return torch.sort(top, dim=-1).values
