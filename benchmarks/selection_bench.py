"""Which KV entries a compressed memory keeps, judged by the retrieval heads (issue 13).

Pooled setting: the paragraphs of ``--limit`` questions of a set are memorized together as one
compressed memory (``compress="always"`` at ``--ratio``), once per scorer. Each question is
then asked of the whole pool: dense alone, heads alone, and ``MemoRAG()``'s fused default.
Recall@2/5/10 of the gold paragraphs and MRR, with paired bootstrap CIs of each scorer against
``key_norm``.

    python -m benchmarks.selection_bench --set hotpotqa --limit 30 --ratio 16
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

from benchmarks.datasets import load_set
from benchmarks.metrics import bootstrap_diff_ci, evidence_hits, mrr, recall_at_k, spans_of
from benchmarks.report import _header, environment, write_outputs
from shared_core.pipeline import MemoRAG

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
KS = (2, 5, 10)
METHODS = ("dense", "heads", "default")
SCORERS = ("key_norm", "key_norm_cover", "stride")


def pooled_docs(bench: Any) -> list[Any]:
    """The questions' paragraphs, each once, in first-seen order."""
    seen: dict[str, Any] = {}
    for q in bench.questions:
        for doc in bench.scoped_documents(q):
            seen.setdefault(doc.doc_id, doc)
    return list(seen.values())


def sharing(pipe: MemoRAG, **options: Any) -> MemoRAG:
    """Another pipeline over the same memory and index, with other retrieval options."""
    return MemoRAG(
        memory=pipe.memory,
        embedder=pipe.embedder,
        generator=pipe.generator,
        search_index=pipe.index,
        **options,
    )


def heads_only(pipe: MemoRAG) -> MemoRAG:
    """The same memory and index, ranked by the heads' list alone (query weight 0)."""
    return sharing(pipe, retrieval="heads", query_weight=0.0)


def scores(hits: Sequence[Any], gold: Any) -> dict[str, float]:
    ranks = evidence_hits(spans_of(hits), gold)
    return {**{f"r@{k}": recall_at_k(ranks, k) for k in KS}, "mrr": mrr(ranks)}


def run_scorer(
    scorer: str,
    docs: list[Any],
    questions: Sequence[Any],
    ratio: int,
    weights: Sequence[float] = (),
) -> dict:
    pipe = MemoRAG(compress="always", beacon_ratio=ratio, scorer=scorer)
    started = time.perf_counter()
    pipe.memorize(docs)
    memorize_s = time.perf_counter() - started
    stats = pipe.memory.stats()
    alone, rows = heads_only(pipe), []
    weighted = {f"default_w{w:g}": sharing(pipe, heads_weight=w) for w in weights}
    for n, q in enumerate(questions, 1):
        row = {"id": q.id, "dense": scores(pipe.index.search(q.question, max(KS)), q.gold)}
        t0 = time.perf_counter()
        row["heads"] = scores(alone.retrieve(q.question, max(KS)).passages, q.gold)
        row["heads_s"] = time.perf_counter() - t0
        row["default"] = scores(pipe.retrieve(q.question, max(KS)).passages, q.gold)
        for name, other in weighted.items():
            row[name] = scores(other.retrieve(q.question, max(KS)).passages, q.gold)
        rows.append(row)
        print(f"{scorer} {n}/{len(questions)}", row["default"]["r@5"], file=sys.stderr)
    return {
        "memorize_s": memorize_s,
        "tokens": stats.tokens_read,
        "entries": stats.kv_entries,
        "rows": rows,
    }


def methods_of(rows: Sequence[dict]) -> list[str]:
    """The methods a run's rows hold: the three fixed ones, then any weighted defaults."""
    return [*METHODS, *sorted(k for k in rows[0] if k.startswith("default_w"))]


def summarize(runs: dict[str, dict]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    base = runs.get("key_norm")
    for scorer, run in runs.items():
        rows = run["rows"]
        entry: dict[str, Any] = {"entries": run["entries"], "memorize_s": run["memorize_s"]}
        for m in methods_of(rows):
            entry[m] = {key: statistics.fmean(r[m][key] for r in rows) for key in rows[0][m]}
            if base is not None and scorer != "key_norm":
                diff, lo, hi = bootstrap_diff_ci(
                    [r[m]["r@5"] for r in rows], [r[m]["r@5"] for r in base["rows"]]
                )
                entry[m]["r@5_vs_key_norm"] = [diff, lo, hi]
        entry["heads_s"] = statistics.median(r["heads_s"] for r in rows)
        out[scorer] = entry
    return out


def markdown(summary: dict[str, Any], header: str, tokens: int, ratio: int) -> str:
    lines = [
        header,
        "",
        f"One pooled memory of {tokens:,} text tokens at ratio {ratio} per scorer.",
        "",
        "| scorer | method | R@2 | R@5 | R@10 | MRR | R@5 - key_norm [95% CI] |",
        "|---|---|---|---|---|---|---|",
    ]
    for scorer, entry in summary.items():
        for m in [k for k in entry if isinstance(entry[k], dict)]:
            s = entry[m]
            ci = s.get("r@5_vs_key_norm")
            diff = f"{ci[0]:+.3f} [{ci[1]:+.3f}, {ci[2]:+.3f}]" if ci else ""
            lines.append(
                f"| {scorer} | {m} | {s['r@2']:.3f} | {s['r@5']:.3f} | {s['r@10']:.3f} | "
                f"{s['mrr']:.3f} | {diff} |"
            )
    lines += ["", "Median heads pass per query (s): "]
    lines[-1] += ", ".join(f"{k} {v['heads_s']:.2f}" for k, v in summary.items())
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", default="hotpotqa")
    parser.add_argument("--limit", type=int, default=30)
    parser.add_argument("--ratio", type=int, default=16)
    parser.add_argument("--scorers", nargs="+", default=list(SCORERS), choices=SCORERS)
    parser.add_argument(
        "--weights",
        nargs="*",
        type=float,
        default=[],
        help="also the default at these heads_weight",
    )
    parser.add_argument("--name", default="selection_pooled")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    env, started = environment(), time.perf_counter()
    bench = load_set(DATA / args.set, limit=args.limit)
    docs = pooled_docs(bench)
    runs = {s: run_scorer(s, docs, bench.questions, args.ratio, args.weights) for s in args.scorers}
    summary = summarize(runs)
    env["loadavg_end"] = list(__import__("os").getloadavg())
    command = "python -m benchmarks.selection_bench " + " ".join(argv or sys.argv[1:])
    title = f"KV selection under the retrieval heads, {args.set} pooled"
    header = _header(title, env, command, time.perf_counter() - started)
    tokens = next(iter(runs.values()))["tokens"]
    payload = {"command": command, "env": env, "summary": summary, "runs": runs}
    text = markdown(summary, header, tokens, args.ratio)
    for path in write_outputs(args.out, f"{args.name}_{args.set}", payload, text):
        print(path)


if __name__ == "__main__":
    main()
