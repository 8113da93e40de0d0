"""The heads benchmark's bookkeeping without a model: question selection, the once-per-query
heads pass, summaries with CIs and the table."""

from __future__ import annotations

from types import SimpleNamespace

from benchmarks import heads_eval
from benchmarks.datasets import GoldItem


def _q(i: int, scope: str, gold: bool = True) -> SimpleNamespace:
    items = [GoldItem(scope, 0, 5)] if gold else []
    return SimpleNamespace(id=f"q{i}", question=f"question {i}?", gold=items, scope=[scope])


def test_select_skips_the_first_questions_and_those_without_gold() -> None:
    bench = SimpleNamespace(
        questions=[_q(0, "a"), _q(1, "a"), _q(2, "b", gold=False), _q(3, "b"), _q(4, "a")]
    )
    assert [q.id for q in heads_eval.select(bench, 1, 10)] == ["q1", "q3", "q4"]
    assert [q.id for q in heads_eval.select(bench, 0, 2)] == ["q0", "q1"]
    assert [q.id for q in heads_eval.select(bench, 0, 10, ["a"], per_scope=1)] == ["q0"]


def test_the_heads_pass_runs_once_per_query_and_memory_state() -> None:
    calls: list[str] = []

    class Memory:
        lineage = "one"

        def entry_attention(self, query: str, heads: list[tuple[int, int]]) -> str:
            calls.append(query)
            return f"mass of {query}"

    memory = Memory()
    seconds = heads_eval.memo_heads_pass(memory)
    for _ in range(3):
        assert memory.entry_attention("q?", [(1, 2)]) == "mass of q?"
    memory.lineage = "two"  # a new memory: the pass runs again
    memory.entry_attention("q?", [(1, 2)])
    assert calls == ["q?", "q?"]
    assert set(seconds) == {"q?"}


def _row(dense: float, default: float, hyde: float) -> dict:
    def m(r5: float) -> dict:
        return {"r@2": r5, "r@5": r5, "r@10": r5, "mrr": r5, "seconds": 0.1, "timings": {}}

    return {"dense": m(dense), "default": m(default), "hyde": m(hyde)}


def test_summary_has_cis_against_dense_and_the_pairs() -> None:
    rows = [_row(0.5, 1.0, 0.5), _row(1.0, 1.0, 0.5), _row(0.5, 0.5, 0.5)]
    summary = heads_eval.summarize(rows, ["dense", "hyde", "default"])
    assert summary["questions"] == 3
    assert "r@5_vs_dense" not in summary["dense"]
    diff, lo, hi = summary["default"]["r@5_vs_dense"]
    assert abs(diff - 1 / 6) < 1e-9 and lo <= diff <= hi
    assert summary["pairs"]["default - hyde"]["r@5"][0] == 1 / 3
    text = heads_eval.markdown(summary, ["dense", "hyde", "default"], "set", "# title\n")
    assert "| default | 0.833 |" in text and "- default - hyde: R@5 +0.333" in text


def test_merge_joins_runs_by_question(tmp_path) -> None:
    import json

    env = {"cpu": "cpu", "loadavg_start": [1.0], "loadavg_end": [2.0]}
    memories = {"s": {"documents": 2, "tokens": 9, "entries": 9, "beacon_ratio": 4}}
    one = {"command": "a", "env": env, "set": "x", "setting": "context", "memories": memories}
    two = {**one, "command": "b"}
    rows = [_row(0.5, 1.0, 0.5), _row(1.0, 1.0, 0.0)]
    one["rows"] = [
        {"id": f"q{i}", "dense": r["dense"], "default": r["default"]} for i, r in enumerate(rows)
    ]
    two["rows"] = [{"id": "q1", "dense": rows[1]["dense"], "hyde": rows[1]["hyde"]}]
    paths = []
    for n, run in enumerate((one, two)):
        paths.append(tmp_path / f"{n}.json")
        paths[-1].write_text(json.dumps(run))
    summary = heads_eval.merge(paths, tmp_path, "merged")
    assert summary["questions"] == 1  # only q1 has every method
    assert summary["pairs"]["default - hyde"]["r@5"][0] == 1.0
    assert "- `a`" in (tmp_path / "merged.md").read_text()
