"""What a returned passage's score means on every route: its relevance to the query.

``relevance`` is the cosine similarity between the query (its standalone rewrite for a
follow-up) and the passage's text under the engine's embedder, in [-1, 1], whatever found the
passage (the own index, a framework store, BM25, the heads, a clue). So one cut-off
(``SimilarityPostprocessor(similarity_cutoff=0.3)``, ``score_threshold=0.3``) means the same on
every route and for every query, and an off-topic query scores low. Passage vectors are kept in
a bounded cache by text, so a passage seen again is not embedded again.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from shared_core.retrieval.embeddings import Embedder
from shared_core.types import Passage

#: Passage vectors kept (by text) for later queries.
CACHE_SIZE = 16_384


class Relevance:
    """Query-passage cosine similarity, with a cache of passage vectors by text (one
    ``Relevance`` per pipeline, whose embedder never changes)."""

    def __init__(self, cache_size: int = CACHE_SIZE) -> None:
        self._vectors: OrderedDict[str, np.ndarray] = OrderedDict()
        self._size = cache_size
        self._lock = threading.Lock()

    def scores(
        self, embedder: Embedder, query: str, passages: Sequence[Passage]
    ) -> dict[str, float]:
        """``{passage id: cosine(query, passage text)}``."""
        if not passages:
            return {}
        vectors = self._passage_vectors(embedder, [p.text for p in passages])
        q = np.asarray(embedder.embed_queries([query]), dtype=np.float32)[0]
        sims = vectors @ q
        return {p.id: float(s) for p, s in zip(passages, sims.tolist(), strict=True)}

    def _passage_vectors(self, embedder: Embedder, texts: list[str]) -> np.ndarray:
        keys = list(texts)
        with self._lock:
            found = {k: self._vectors[k] for k in keys if k in self._vectors}
            for k in found:
                self._vectors.move_to_end(k)
        missing = list(dict.fromkeys(k for k in keys if k not in found))
        if missing:
            fresh = np.asarray(embedder.embed_passages(missing), dtype=np.float32)
            with self._lock:
                for k, v in zip(missing, fresh, strict=True):
                    found[k] = v
                    self._vectors[k] = v
                while len(self._vectors) > self._size:
                    self._vectors.popitem(last=False)
        return np.stack([found[k] for k in keys])


__all__ = ["CACHE_SIZE", "Relevance"]
