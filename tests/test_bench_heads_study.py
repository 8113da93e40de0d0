"""The offline head study rebuilds the engine's heads route: its per-head z-scores match the
ranker's, its fusion orders chunks as ``zscore_fusion`` does, and its calibration criterion
is the head's own recall@2."""

from __future__ import annotations

import torch

from benchmarks import heads as heads_study
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


def test_a_training_question_never_gets_heads_chosen_on_itself() -> None:
    train = [_question(s, heads=3) for s in range(2)]
    for q in train:  # every head's top two are chunks 0 and 1 (no gold) unless set below
        q.query[:] = -0.01 * torch.arange(12, dtype=torch.float64)
        q.null.zero_()
    train[0].query[2, 3] = train[0].query[2, 7] = 1.0  # question 0 favours head 2
    train[1].query[1, 3] = train[1].query[1, 7] = 1.0  # question 1 favours head 1
    choice = heads_study.HeadChoice(train, top=1, norm="sum", k=2)
    assert choice.all == [1]  # a tie, broken by head order
    assert choice.heads(train[0]) == [1]  # chosen on question 1 alone
    assert choice.heads(train[1]) == [2]  # chosen on question 0 alone
    other = _question(9, heads=3)  # not a training question: the heads of all of them
    assert choice.heads(other) == choice.all
