"""The hybrid benchmark on two HotpotQA questions (no MemoRAG rows): every method scores every
question, the table has a row per method, and CIs are against ``dense``."""

from __future__ import annotations

import io
import math

import pytest
from conftest import SHARED_DATA

pytest.importorskip("bm25s")
pytest.importorskip("langchain_classic")
pytest.importorskip("llama_index.retrievers.bm25")

from benchmarks import hybrid_bench

pytestmark = [pytest.mark.slow, pytest.mark.real_model]


@pytest.mark.skipif(not (SHARED_DATA / "hotpotqa").is_dir(), reason="shared dev data not present")
def test_two_questions_every_method() -> None:
    log = io.StringIO()
    run = hybrid_bench.run_set("hotpotqa", 2, 0, False, log)
    assert set(run["rows"]) == set(hybrid_bench.BASE_METHODS)
    for rows in run["rows"].values():
        assert len(rows) == 2
        for row in rows:
            assert len(row["ranks"]) == 2  # two gold paragraphs per HotpotQA question
            assert 0.0 <= row["recall@2"] <= row["recall@5"] <= row["recall@10"] <= 1.0
            assert not math.isnan(row["mrr"])
    summary = hybrid_bench.summarize(run, seed=0)
    assert "recall@5_vs_dense" not in summary["methods"]["dense"]
    assert "recall@5_vs_dense" in summary["methods"]["hybrid"]
    text = hybrid_bench.markdown([{**run, "summary": summary}], "cmd", 1.0, (0.0, 0.0, 0.0))
    for method in hybrid_bench.BASE_METHODS:
        assert f"| {method} |" in text
    assert log.getvalue().count("[hotpotqa] q") == 2
