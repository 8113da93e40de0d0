"""The KV-selection benchmark's bookkeeping (no model): pooling, summaries, the table."""

from __future__ import annotations

from types import SimpleNamespace

from benchmarks import selection_bench as sb


def _row(r5: float) -> dict:
    m = {"r@2": r5 / 2, "r@5": r5, "r@10": 1.0, "mrr": r5}
    return {"id": "q", "dense": m, "heads": m, "default": m, "heads_s": 0.5}


def test_pooled_docs_keeps_each_paragraph_once_in_first_seen_order() -> None:
    a, b, c = (SimpleNamespace(doc_id=x) for x in "abc")
    bench = SimpleNamespace(
        questions=["q1", "q2"], scoped_documents=lambda q: [a, b] if q == "q1" else [b, c]
    )
    assert [d.doc_id for d in sb.pooled_docs(bench)] == ["a", "b", "c"]


def test_summary_compares_each_scorer_with_key_norm() -> None:
    runs = {
        "key_norm": {"entries": 10, "memorize_s": 1.0, "rows": [_row(0.5), _row(0.5)]},
        "key_norm_cover": {"entries": 10, "memorize_s": 1.0, "rows": [_row(1.0), _row(0.5)]},
    }
    summary = sb.summarize(runs)
    assert "r@5_vs_key_norm" not in summary["key_norm"]["heads"]
    diff = summary["key_norm_cover"]["heads"]["r@5_vs_key_norm"]
    assert diff[0] == 0.25 and diff[1] <= diff[0] <= diff[2]
    table = sb.markdown(summary, "# t", tokens=1234, ratio=16)
    assert "1,234 text tokens at ratio 16" in table and "| key_norm_cover | heads |" in table
