"""Memory-native retrieval (issue 13): the shipped ``MemoRAG`` per question, by method.

Context setting: each question's own paragraphs are the memory and the index. Methods: dense
(the query alone on the engine's index), BM25, clue MemoRAG (``retrieval="clues"``, the
previous default), heads-only (the memory's attention list alone: query weight 0) and
heads+dense (``MemoRAG()``'s default). Recall@2/5/10 of the gold paragraphs, MRR, paired
bootstrap CIs against dense, and query latency broken down (heads pass, searches, fusion).
``--latency-entries N`` also times one heads pass over a memory of N entries (the entries a
~100k-token text keeps where the model's positions force compression).

    python -m benchmarks.heads_bench --sets hotpotqa musique --limit 12
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from benchmarks.baselines import BM25Backend
from benchmarks.datasets import load_set
from benchmarks.heads_latency import tiled
from benchmarks.metrics import bootstrap_diff_ci, evidence_hits, mrr, recall_at_k, spans_of
from benchmarks.report import _header, environment, write_outputs
from shared_core.pipeline import MemoRAG

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
METHODS = ("dense", "bm25", "clues", "heads", "heads+dense")
KS = (2, 5, 10)


def variant(pipe: MemoRAG, **options: Any) -> MemoRAG:
    """The same memory, index, embedder and generator under other options (injected parts).

    A copy with its route object swapped no longer works: the route lives in the pipeline's
    ``Retriever``, built from the config, so options must go through the constructor.
    """
    return MemoRAG(
        memory=pipe.memory,
        embedder=pipe.embedder,
        generator=pipe.generator,
        search_index=pipe.index,
        **options,
    )


def run_question(pipe: MemoRAG, q: Any, docs: Sequence[Any], methods: Sequence[str]) -> dict:
    started = time.perf_counter()
    pipe.memorize(list(docs))
    row: dict[str, Any] = {"id": q.id, "memorize_s": time.perf_counter() - started}
    depth = max(KS)
    for method in methods:
        t0 = time.perf_counter()
        timings: dict[str, float] = {}
        if method == "dense":
            hits = pipe.index.search(q.question, depth)
        elif method == "bm25":
            hits = BM25Backend(pipe.index.chunks).search(q.question, depth)
        else:
            target = pipe
            if method == "clues":
                target = variant(pipe, retrieval="clues", fusion="interleave")
            elif method == "heads":
                target = variant(pipe, retrieval="heads", query_weight=0.0)
            result = target.retrieve(q.question, depth)
            hits, timings = list(result.passages), dict(result.timings)
            row[f"{method}_route"] = result.route
        ranks = evidence_hits(spans_of(hits), q.gold)
        row[method] = {
            **{f"r@{k}": recall_at_k(ranks, k) for k in KS},
            "mrr": mrr(ranks),
            "seconds": time.perf_counter() - t0,
            "timings": timings,
        }
    return row


def summarize(rows: list[dict], methods: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"questions": len(rows)}
    for m in methods:
        metrics = {
            key: statistics.fmean(r[m][key] for r in rows)
            for key in [*map(lambda k: f"r@{k}", KS), "mrr"]
        }
        metrics["query_s"] = statistics.median(r[m]["seconds"] for r in rows)
        for part in ("clues", "heads", "search", "fusion"):
            vals = [r[m]["timings"].get(part) for r in rows if part in r[m]["timings"]]
            if vals:
                metrics[f"{part}_s"] = statistics.median(vals)
        if m != "dense":
            for key in ("r@5", "r@2", "mrr"):
                diff, lo, hi = bootstrap_diff_ci(
                    [r[m][key] for r in rows], [r["dense"][key] for r in rows]
                )
                metrics[f"{key}_vs_dense"] = [diff, lo, hi]
        out[m] = metrics
    out["memorize_s"] = statistics.median(r["memorize_s"] for r in rows)
    return out


def heads_latency(pipe: MemoRAG, entries: int, repeats: int = 3) -> dict[str, float]:
    """Time one heads pass (query + cached "N/A") over a memory tiled to ``entries``."""
    memory = pipe.memory
    state = memory._state  # benchmark only: put back after timing the tiled copy
    tiled(pipe, entries)
    heads = pipe._retriever.route.active_head_set(memory).heads
    try:
        memory.entry_attention("warm-up question?", heads)
        times = []
        for i in range(repeats):
            t0 = time.perf_counter()
            memory.entry_attention(f"Which paragraph names the river number {i}?", heads)
            times.append(time.perf_counter() - t0)
    finally:
        memory._state = state
    return {"entries": entries, "median_s": statistics.median(times), "max_s": max(times)}


def markdown(summary: dict[str, Any], latency: dict | None, header: str) -> str:
    lines = [header]
    for name, s in summary.items():
        lines += [f"## {name} (context setting, {s['questions']} questions)", ""]
        lines += [
            "| method | R@2 | R@5 | R@10 | MRR | R@5 - dense [95% CI] | query s (median) | "
            "heads s | search s | fusion s | clues s |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for m in METHODS:
            if m not in s:
                continue
            r = s[m]
            ci = r.get("r@5_vs_dense")
            ci_s = f"{ci[0]:+.3f} [{ci[1]:+.3f}, {ci[2]:+.3f}]" if ci else "-"
            parts = [
                f"{r[p]:.3f}" if p in r else "-"
                for p in ("heads_s", "search_s", "fusion_s", "clues_s")
            ]
            lines.append(
                f"| {m} | {r['r@2']:.3f} | {r['r@5']:.3f} | {r['r@10']:.3f} | {r['mrr']:.3f} | "
                f"{ci_s} | {r['query_s']:.2f} | " + " | ".join(parts) + " |"
            )
        lines += [
            "",
            f"memorize (index + memory) per question, median: {s['memorize_s']:.1f} s",
            "",
        ]
    if latency:
        lines += [
            f"Heads pass over a memory of {latency['entries']:,} entries: median "
            f"{latency['median_s']:.2f} s, max {latency['max_s']:.2f} s (query + cached N/A).",
            "",
        ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=["hotpotqa", "musique"])
    parser.add_argument("--limit", type=int, default=12)
    parser.add_argument("--beacon-ratio", type=int, default=4, help="MemoRAG()'s default: 4")
    parser.add_argument(
        "--compress",
        default="when_needed",
        choices=["when_needed", "always"],
        help="MemoRAG()'s default: when_needed (full KV while the text fits)",
    )
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--latency-entries", type=int, default=0)
    parser.add_argument("--name", default="heads_context")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    env = environment()
    started = time.perf_counter()
    pipe = MemoRAG(beacon_ratio=args.beacon_ratio, compress=args.compress)
    summary, per_question = {}, {}
    for name in args.sets:
        bench = load_set(DATA / name, limit=args.limit)
        by_id = {d.doc_id: d for d in bench.documents}
        rows = []
        for n, q in enumerate(bench.questions, 1):
            docs = [by_id[d] for d in q.scope]
            rows.append(run_question(pipe, q, docs, args.methods))
            print(
                f"{name} {n}/{len(bench.questions)}",
                rows[-1].get("heads+dense", {}).get("r@5"),
                rows[-1]["dense"]["r@5"],
                file=sys.stderr,
                flush=True,
            )
        summary[name] = summarize(rows, args.methods)
        per_question[name] = rows
    latency = heads_latency(pipe, args.latency_entries) if args.latency_entries else None
    seconds = time.perf_counter() - started
    env["loadavg_end"] = list(__import__("os").getloadavg())
    command = "python -m benchmarks.heads_bench " + " ".join(argv or sys.argv[1:])
    header = _header("Memory-native retrieval heads, context setting", env, command, seconds)
    payload = {
        "command": command,
        "env": env,
        "summary": summary,
        "latency": latency,
        "beacon_ratio": args.beacon_ratio,
        "questions": per_question,
    }
    for path in write_outputs(args.out, args.name, payload, markdown(summary, latency, header)):
        print(path)


if __name__ == "__main__":
    main()
