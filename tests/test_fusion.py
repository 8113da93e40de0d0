"""Fusion of several clues' hit lists: weighted RRF, interleaving, and upstream's union."""

from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared_core.errors import InputError
from shared_core.retrieval.fusion import (
    fuse,
    interleave,
    reciprocal_rank_fusion,
    union_in_document_order,
)
from shared_core.types import Clue, Hit, Passage

QUERY = Clue("the query", "query")
SPAN = Clue("a clue span", "span")
HEAVY = Clue("heavy", "answer", weight=3.0)


def _passage(pid: str, doc: str = "d", start: int = 0, payload: object = None) -> Passage:
    return Passage(pid, f"text of {pid}", {"doc_id": doc, "start": start}, payload)


def _hits(*ids: str) -> list[Hit]:
    return [Hit(_passage(pid), 1.0 - 0.1 * rank, rank) for rank, pid in enumerate(ids)]


def test_single_list_keeps_its_order() -> None:
    fused = reciprocal_rank_fusion([(QUERY, _hits("a", "b", "c"))], 3)
    assert [p.passage.id for p in fused] == ["a", "b", "c"]
    assert fused[0].score == pytest.approx(1 / 61)
    assert fused[2].score == pytest.approx(1 / 63)


def test_exactly_k_distinct() -> None:
    results = [(QUERY, _hits("a", "b", "c", "d")), (SPAN, _hits("c", "b", "e", "a"))]
    for k in range(1, 8):
        fused = reciprocal_rank_fusion(results, k)
        ids = [p.passage.id for p in fused]
        assert len(ids) == min(k, 5) and len(set(ids)) == len(ids)
    assert reciprocal_rank_fusion([], 3) == []
    assert reciprocal_rank_fusion([(QUERY, [])], 3) == []


def test_scores_sum_over_lists_and_sort_descending() -> None:
    results = [(QUERY, _hits("a", "b", "c")), (SPAN, _hits("c", "b", "x"))]
    fused = reciprocal_rank_fusion(results, 4)
    scores = {p.passage.id: p.score for p in fused}
    assert scores["b"] == pytest.approx(2 / 62)
    assert scores["c"] == pytest.approx(1 / 63 + 1 / 61)
    assert scores["a"] == pytest.approx(1 / 61)
    assert [p.passage.id for p in fused] == ["c", "b", "a", "x"]
    assert [p.score for p in fused] == sorted((p.score for p in fused), reverse=True)


def test_weights_shift_the_ranking() -> None:
    results = [(QUERY, _hits("a", "b")), (HEAVY, _hits("b", "z"))]
    fused = reciprocal_rank_fusion(results, 3)
    assert [p.passage.id for p in fused] == ["b", "z", "a"]
    assert fused[0].score == pytest.approx(1 / 62 + 3 / 61)
    zero = [(Clue("q", "query", weight=0.0), _hits("a")), (SPAN, _hits("b"))]
    assert [p.passage.id for p in reciprocal_rank_fusion(zero, 2)] == ["b", "a"]


def test_rrf_k_parameter() -> None:
    fused = reciprocal_rank_fusion([(QUERY, _hits("a", "b"))], 2, rrf_k=0)
    assert [p.score for p in fused] == pytest.approx([1.0, 0.5])
    with pytest.raises(InputError):
        reciprocal_rank_fusion([(QUERY, _hits("a"))], 1, rrf_k=-1)


def test_exact_tie_breaks_by_first_appearance() -> None:
    tied = [(QUERY, _hits("p")), (SPAN, _hits("q"))]
    assert [s.passage.id for s in reciprocal_rank_fusion(tied, 2)] == ["p", "q"]
    swapped = [(SPAN, _hits("q")), (QUERY, _hits("p"))]
    assert [s.passage.id for s in reciprocal_rank_fusion(swapped, 2)] == ["q", "p"]


def test_tie_on_score_prefers_better_single_rank() -> None:
    # rrf_k=0: "r1" = 1/2 + 1/2 = 1.0 (best rank 1, seen first), "r0" = 1/1 = 1.0 (best rank 0)
    results = [
        (QUERY, _hits("z", "r1")),
        (SPAN, _hits("y", "r1")),
        (Clue("c", "custom"), _hits("r0")),
    ]
    fused = reciprocal_rank_fusion(results, 5, rrf_k=0)
    order = [p.passage.id for p in fused]
    assert order.index("r0") < order.index("r1")
    assert fused[order.index("r0")].score == fused[order.index("r1")].score == 1.0


def test_found_by_and_ranks() -> None:
    results = [
        (QUERY, _hits("a", "b")),
        (SPAN, _hits("c")),
        (HEAVY, _hits("x", "y", "a")),
    ]
    fused = {p.passage.id: p for p in reciprocal_rank_fusion(results, 10)}
    assert fused["a"].found_by == (QUERY, HEAVY) and fused["a"].ranks == (0, 2)
    assert fused["c"].found_by == (SPAN,) and fused["c"].ranks == (0,)


def test_duplicate_inside_one_list_counts_once() -> None:
    fused = reciprocal_rank_fusion([(QUERY, _hits("a", "b", "a"))], 5)
    assert [p.passage.id for p in fused] == ["a", "b"]
    assert fused[0].ranks == (0,)


def test_first_seen_passage_and_payload_survive() -> None:
    marker = object()
    first = Hit(_passage("a", payload=marker), 0.1, 0)
    later = Hit(Passage("a", "other text", {}, payload="other"), 0.9, 0)
    for method in ("rrf", "union"):
        fused = fuse([(QUERY, [first]), (SPAN, [later])], 3, method=method)
        assert fused[0].passage is first.passage
        assert fused[0].passage.payload is marker


def test_bad_arguments() -> None:
    with pytest.raises(InputError):
        reciprocal_rank_fusion([(QUERY, _hits("a"))], 0)
    with pytest.raises(InputError):
        union_in_document_order([(QUERY, _hits("a"))], -2)
    with pytest.raises(InputError):
        fuse([(QUERY, _hits("a"))], 1, method="max")  # type: ignore[arg-type]
    with pytest.raises(InputError):
        reciprocal_rank_fusion([("not a clue", _hits("a"))], 1)  # type: ignore[list-item]
    with pytest.raises(InputError):
        reciprocal_rank_fusion([(Clue("q", "query", weight=float("nan")), _hits("a"))], 1)


# ---------------------------------------------------------------------- union


def _doc_hits(*specs: tuple[str, str, int]) -> list[Hit]:
    return [
        Hit(_passage(pid, doc, start), 0.0, rank) for rank, (pid, doc, start) in enumerate(specs)
    ]


def test_union_in_document_order() -> None:
    q = _doc_hits(("d2#1", "d2", 50), ("d1#3", "d1", 300), ("d1#0", "d1", 0))
    s = _doc_hits(("d1#0", "d1", 0), ("d2#0", "d2", 0), ("d1#9", "d1", 900))
    fused = union_in_document_order([(QUERY, q), (SPAN, s)], per_query_k=2)
    # top-2 of each: {d2#1, d1#3} | {d1#0, d2#0}; docs in first-seen order: d2, d1
    assert [p.passage.id for p in fused] == ["d2#0", "d2#1", "d1#0", "d1#3"]
    both = {p.passage.id: p for p in fused}
    assert both["d1#0"].found_by == (SPAN,) and both["d1#0"].ranks == (0,)
    wide = union_in_document_order([(QUERY, q), (SPAN, s)], per_query_k=10)
    assert len(wide) == 5
    assert wide[2].passage.id == "d1#0" and wide[2].found_by == (QUERY, SPAN)


def test_union_without_positions_keeps_first_appearance() -> None:
    bare = [Hit(Passage(pid, pid), 0.0, r) for r, pid in enumerate(["z", "a", "m"])]
    fused = fuse([(QUERY, bare)], 3, method="union")
    assert [p.passage.id for p in fused] == ["z", "a", "m"]


def test_fuse_dispatch() -> None:
    results = [(QUERY, _hits("a", "b", "c")), (SPAN, _hits("c", "d"))]
    raw = {"scores": "fusion"}
    assert fuse(results, 2, **raw) == reciprocal_rank_fusion(results, 2)
    assert fuse(results, 2, method="rrf", rrf_k=5, **raw) == reciprocal_rank_fusion(
        results, 2, rrf_k=5
    )
    assert fuse(results, 1, method="union", **raw) == union_in_document_order(results, 1)
    # by default the order is the method's and the scores are relevance
    ids = [p.passage.id for p in fuse(results, 3, method="rrf")]
    assert ids == [p.passage.id for p in reciprocal_rank_fusion(results, 3)]


def _scored(pairs: list[tuple[str, float]]) -> list[Hit]:
    return [Hit(_passage(pid), score, rank) for rank, (pid, score) in enumerate(pairs)]


@pytest.mark.parametrize("method", ["interleave", "rrf", "zscore"])
def test_fused_scores_are_relevance_and_fall_in_order(method) -> None:
    # issue 15.3: no 1/61, 1/62 ... pattern; a score is the similarity that found the passage
    strong = [(QUERY, _scored([("a", 0.82), ("b", 0.61), ("c", 0.30)]))]
    weak = [(QUERY, _scored([("x", 0.21), ("y", 0.15), ("z", 0.05)]))]
    high = fuse(strong, 3, method=method)
    low = fuse(weak, 3, method=method)
    assert [p.score for p in high] == pytest.approx([0.82, 0.61, 0.30])
    assert [p.score for p in low] == pytest.approx([0.21, 0.15, 0.05])
    assert min(p.score for p in high) > max(p.score for p in low) - 0.0  # comparable
    mixed = fuse([*strong, (SPAN, _scored([("c", 0.9), ("d", 0.4)]))], 4, method=method)
    scores = [p.score for p in mixed]
    assert scores == sorted(scores, reverse=True)
    assert all(p.score <= max(h.score for _, hs in [*strong] for h in hs) + 0.1 for p in mixed)


def test_attention_only_passages_take_the_callers_similarity() -> None:
    heads = Clue("q", "attention", 1.0)
    results = [(QUERY, _scored([("a", 0.7), ("b", 0.5)])), (heads, _scored([("h", 9.0)]))]
    fused = fuse(results, 3, method="zscore", similarity={"h": 0.4})
    by_id = {p.passage.id: p.score for p in fused}
    assert by_id["h"] <= 0.4  # never the heads' z-score
    assert [p.score for p in fused] == sorted((p.score for p in fused), reverse=True)


def test_zscore_fusion_weights_lists_by_their_spread() -> None:
    dense = (QUERY, _scored([("a", 0.80), ("b", 0.79), ("c", 0.10)]))
    heads = (Clue("q", "attention", 1.0), _scored([("b", 5.0), ("a", 0.0), ("c", -1.0)]))
    order = [p.passage.id for p in fuse([dense, heads], 3, method="zscore", scores="fusion")]
    assert order[0] == "b"  # a near-tie in dense is broken by a clear heads preference
    assert order[-1] == "c"


def test_interleave_takes_each_lists_best_hit_before_any_second() -> None:
    results = [(QUERY, _hits("a", "b", "c")), (SPAN, _hits("d", "a", "e")), (HEAVY, _hits("f"))]
    fused = interleave(results, 6)
    # heaviest list first within a round; a passage already taken is skipped
    assert [p.passage.id for p in fused] == ["f", "a", "d", "b", "c", "e"]
    assert [p.passage.id for p in interleave(results, 3)] == ["f", "a", "d"]
    a = next(p for p in fused if p.passage.id == "a")
    assert a.found_by == (QUERY, SPAN) and a.ranks == (0, 1)
    # scores follow the order: re-sorting by score changes nothing
    assert [p.score for p in fused] == [1 / (61 + n) for n in range(6)]
    assert fuse(results, 4, method="interleave", rrf_k=5, scores="fusion") == interleave(
        results, 4, rrf_k=5
    )
    assert [p.score for p in interleave(results, 2, rrf_k=5)] == [1 / 6, 1 / 7]


# ---------------------------------------------------------------------- properties

_ids = st.lists(st.sampled_from("abcdefghij"), max_size=8)


@settings(max_examples=150, deadline=None)
@given(
    lists=st.lists(_ids, max_size=5),
    k=st.integers(1, 12),
    weights=st.lists(st.floats(0, 5), min_size=5, max_size=5),
)
def test_property_rrf(lists: list[list[str]], k: int, weights: list[float]) -> None:
    results = [
        (Clue(f"c{i}", "custom", weight=weights[i]), _hits(*ids)) for i, ids in enumerate(lists)
    ]
    fused = reciprocal_rank_fusion(results, k)
    distinct = {pid for ids in lists for pid in ids}
    assert len(fused) == min(k, len(distinct))
    assert len({p.passage.id for p in fused}) == len(fused)
    assert all(a.score >= b.score for a, b in pairwise(fused))
    assert fused == reciprocal_rank_fusion(results, k)  # deterministic
    for scored in fused:
        assert len(scored.found_by) == len(scored.ranks) >= 1
        for clue, rank in zip(scored.found_by, scored.ranks, strict=True):
            source = next(hits for c, hits in results if c is clue)
            assert source[rank].passage.id == scored.passage.id


@settings(max_examples=150, deadline=None)
@given(
    lists=st.lists(_ids, max_size=5),
    k=st.integers(1, 12),
    weights=st.lists(st.floats(0, 5), min_size=5, max_size=5),
)
def test_property_interleave(lists: list[list[str]], k: int, weights: list[float]) -> None:
    results = [
        (Clue(f"c{i}", "custom", weight=weights[i]), _hits(*ids)) for i, ids in enumerate(lists)
    ]
    fused = interleave(results, k)
    got = [p.passage.id for p in fused]
    distinct = {pid for ids in lists for pid in ids}
    assert len(got) == min(k, len(distinct)) == len(set(got))
    assert all(a.score > b.score for a, b in pairwise(fused))
    if k >= len(lists):  # every list's best hit gets a slot
        assert {ids[0] for ids in lists if ids} <= set(got)
