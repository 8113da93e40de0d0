"""The engine benchmarks' pieces that need no model (growth fits, the memory table) and the
corpus-blind keys' generation cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import engine
from benchmarks.baselines import CachedGenerator
from shared_core.types import Generation


def test_generation_cache_roundtrip(tmp_path: Path) -> None:
    calls = []

    class Source:
        def generate(self, prompt, **kw):
            calls.append(prompt)
            return Generation(text=f"echo {prompt}", prompt_tokens=3, completion_tokens=2)

    path = tmp_path / "gen.jsonl"
    gen = CachedGenerator("model", Source, path)
    assert gen.generate("a", max_new_tokens=4).text == "echo a"
    assert gen.generate("a", max_new_tokens=4).text == "echo a"
    assert gen.generate("a", max_new_tokens=5).text == "echo a"  # another key
    assert calls == ["a", "a"]
    # A new process reads the file back; a truncated last line is skipped.
    with path.open("a") as fh:
        fh.write('{"key": "broken"')
    again = CachedGenerator("model", Source, path)
    assert again.generate("a", max_new_tokens=4).completion_tokens == 2
    assert calls == ["a", "a"]
    other = CachedGenerator("another model", Source, path)  # the model is part of the key
    other.generate("a", max_new_tokens=4)
    assert calls == ["a", "a", "a"]


def test_growth_fit_and_sizes() -> None:
    assert engine.growth_exponent([(1, 2), (2, 4), (4, 8)]) == pytest.approx(1.0)
    assert engine.growth_exponent([(1, 1), (2, 4), (4, 16)]) == pytest.approx(2.0)
    assert engine.parse_size("8k") == 8192 and engine.size_label(32768) == "32k"


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
    analysis = engine.analyse(rows)
    first = analysis["checks"][0]
    assert first["throughput_vs_prefill"] == pytest.approx(744.7 / 819.2)
    assert first["bytes_bound_ok"] is True
    text = engine.render(rows, analysis)
    assert "refused: over capacity" in text and "8 (for 4)" in text
    assert analysis["time_exponent_all"] == pytest.approx(1.0)
