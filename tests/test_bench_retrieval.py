"""The retrieval command's bookkeeping without a model (question selection, pooling, the
once-per-query heads pass, the one summary and table), and one small real run."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from conftest import SHARED_DATA

from benchmarks import metrics, retrieval
from benchmarks.datasets import GoldItem
from benchmarks.registry import METHODS


def _q(i: int, scope: str, gold: bool = True) -> SimpleNamespace:
    items = [GoldItem(scope, 0, 5)] if gold else []
    return SimpleNamespace(id=f"q{i}", question=f"question {i}?", gold=items, scope=[scope])


def test_select_skips_the_first_questions_and_those_without_gold() -> None:
    bench = SimpleNamespace(
        questions=[_q(0, "a"), _q(1, "a"), _q(2, "b", gold=False), _q(3, "b"), _q(4, "a")]
    )
    assert [q.id for q in retrieval.select(bench, 1, 10)] == ["q1", "q3", "q4"]
    assert [q.id for q in retrieval.select(bench, 0, 2)] == ["q0", "q1"]
    assert [q.id for q in retrieval.select(bench, 0, 10, ["a"], per_scope=1)] == ["q0"]


def test_pooled_documents_keep_each_document_once_in_first_seen_order() -> None:
    a, b, c = (SimpleNamespace(doc_id=x) for x in "abc")
    bench = SimpleNamespace(scoped_documents=lambda q: [a, b] if q == "q1" else [b, c])
    assert [d.doc_id for d in retrieval.pooled_documents(bench, ["q1", "q2"])] == ["a", "b", "c"]


def test_the_heads_pass_runs_once_per_query_and_memory_state() -> None:
    calls: list[str] = []

    class Memory:
        lineage = "one"

        def entry_attention(self, query: str, heads: list[tuple[int, int]]) -> str:
            calls.append(query)
            return f"mass of {query}"

    memory = Memory()
    seconds = retrieval.memo_heads_pass(memory)
    for _ in range(3):
        assert memory.entry_attention("q?", [(1, 2)]) == "mass of q?"
    memory.lineage = "two"  # a new memory: the pass runs again
    memory.entry_attention("q?", [(1, 2)])
    assert calls == ["q?", "q?"]
    assert set(seconds) == {"q?"}


def test_variant_labels_name_the_axes() -> None:
    assert retrieval.label("default", None, None) == "default"
    assert retrieval.label("default", "bm25", None) == "default@bm25"
    assert retrieval.label("heads", None, "stride") == "heads/stride"
    assert METHODS["dense"].options is None and not METHODS["hyde"].reads_memory
    assert METHODS["default"].reads_memory and METHODS["bm25"].search == "bm25"


def _row(dense: float, default: float, hyde: float) -> dict:
    def m(r5: float) -> dict:
        return {"r@2": r5, "r@5": r5, "r@10": r5, "mrr": r5, "seconds": 0.1, "timings": {}}

    return {"dense": m(dense), "default": m(default), "hyde": m(hyde)}


def test_summary_has_cis_against_dense_and_the_pairs() -> None:
    rows = [_row(0.5, 1.0, 0.5), _row(1.0, 1.0, 0.5), _row(0.5, 0.5, 0.5)]
    summary = metrics.summarize(rows, ["dense", "hyde", "default"], retrieval.PAIRS)
    assert summary["questions"] == 3
    assert "r@5_vs_dense" not in summary["dense"]
    diff, lo, hi = summary["default"]["r@5_vs_dense"]
    assert abs(diff - 1 / 6) < 1e-9 and lo <= diff <= hi
    assert summary["pairs"]["default - hyde"]["r@5"][0] == 1 / 3
    assert "hybrid - dense" not in summary["pairs"]  # a pair runs only when both ran
    text = metrics.markdown(summary, ["dense", "hyde", "default"], "set", "# title\n")
    assert "| default | 0.833 |" in text and "- default - hyde: R@5 +0.333" in text


@pytest.mark.slow
@pytest.mark.real_model
def test_one_hotpotqa_question_over_two_search_modes(tmp_path) -> None:
    assert (SHARED_DATA / "hotpotqa").is_dir()
    retrieval.main(
        [
            "--set",
            "hotpotqa",
            "--limit",
            "1",
            "--methods",
            "dense",
            "default",
            "--search-modes",
            "dense",
            "hybrid",
            "--name",
            "one",
            "--out",
            str(tmp_path),
        ]
    )
    payload = json.loads((tmp_path / "one.json").read_text())
    (row,) = payload["rows"]
    assert set(payload["summary"]) >= {"dense@dense", "default@hybrid", "pairs"}
    assert row["default@dense"]["route"] == "heads" and row["dense@hybrid"]["route"] == "query"
    for name in ("dense@dense", "dense@hybrid", "default@dense", "default@hybrid"):
        assert len(row[name]["retrieved"]) == 10 and len(row[name]["ranks"]) == 2
        assert 0.0 <= row[name]["r@2"] <= row[name]["r@5"] <= row[name]["r@10"] <= 1.0
    assert "| default@hybrid |" in (tmp_path / "one.md").read_text()
