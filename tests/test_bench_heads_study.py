"""The offline head study rebuilds the engine's heads route: its per-head z-scores match the
ranker's, its fusion orders chunks as ``zscore_fusion`` does, and its calibration criterion
is the head's own recall@2."""

from __future__ import annotations

import torch

from benchmarks import heads_study
from shared_core.heads.ranker import combine
from shared_core.retrieval.fusion import fuse
from shared_core.types import Clue, Hit, Passage


def _question(seed: int, chunks: int = 12, heads: int = 6) -> heads_study.Question:
    g = torch.Generator().manual_seed(seed)
    covers: list[list[int]] = [[] for _ in range(chunks)]
    covers[3], covers[7] = [0], [1]
    return heads_study.Question(
        id=f"q{seed}",
        query=torch.rand(heads, chunks, generator=g, dtype=torch.float64),
        null=torch.rand(heads, chunks, generator=g, dtype=torch.float64) * 0.5,
        entries=torch.randint(1, 40, (heads, chunks), generator=g).double(),
        dense=torch.rand(chunks, generator=g, dtype=torch.float64),
        covers=covers,
        gold_items=2,
    )


def _hits(scores: torch.Tensor) -> list[Hit]:
    order = torch.argsort(scores, descending=True, stable=True).tolist()
    return [
        Hit(Passage(f"c{i}", f"chunk {i}"), float(scores[i]), rank) for rank, i in enumerate(order)
    ]


def test_heads_score_is_the_rankers_combination() -> None:
    q = _question(0)
    heads = [1, 4, 5]
    expected = combine((q.query - q.null)[heads])
    assert torch.allclose(heads_study.heads_score(q, heads), expected)


def test_fused_order_is_the_engines_zscore_fusion() -> None:
    for seed in range(5):
        q = _question(seed)
        score = heads_study.heads_score(q, [0, 2, 3])
        for weight in (0.5, 1.0, 3.0):
            results = [
                (Clue("q", "query", heads_study.QUERY_WEIGHT), _hits(q.dense)),
                (Clue("q", "attention", weight), _hits(score)),
            ]
            fused = fuse(results, 12, "zscore", scores="fusion")
            engine = [int(p.passage.id[1:]) for p in fused]
            assert heads_study.fused_order(q, score, weight) == engine


def test_dense_alone_and_metrics() -> None:
    q = _question(1)
    order = heads_study.fused_order(q, None, 0.5)
    assert order == torch.argsort(q.dense, descending=True).tolist()
    ranks = heads_study.ranks_of(order, q)
    assert ranks == [order.index(3) + 1, order.index(7) + 1]
    m = heads_study.metrics(ranks)
    assert m["mrr"] == 1 / min(ranks)


def test_head_recall_counts_gold_in_each_heads_top_two() -> None:
    q = _question(2, heads=2)
    q.query.zero_()
    q.null.zero_()
    q.query[0, 3] = q.query[0, 7] = 1.0  # head 0 puts both gold chunks first
    q.query[1, 3], q.query[1, 0] = 1.0, 2.0  # head 1: one gold chunk in its top two
    assert heads_study.head_recall([q]).tolist() == [1.0, 0.5]
    assert heads_study.pick([q], 1) == [0]
