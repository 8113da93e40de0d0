"""Issues 13 and 16: retrieval quality of the default ``MemoRAG()`` (heads fused with dense)
against every baseline, and the search mode under it, in the context and pooled settings.

Every MemoRAG method is the shipped ``MemoRAG`` with options, sharing one memory, embedder,
generator and index per scope (injected); only the search index differs for the BM25/hybrid
variants (``HybridIndex`` over the same dense index, what ``search_mode=`` builds). The
memory's heads pass is run once per (memory, query) and reused by every heads method (a memo
on ``entry_attention``: the same pass, not a re-implementation). Methods:

- ``dense`` / ``bm25`` / ``hybrid``: the query alone on the engine's index in that search mode;
- ``hyde`` / ``multi_query``: ``MemoRAG(retrieval="clues", clue_strategy="none")`` with the
  corpus-blind keys (``benchmarks.baselines``, cached generations) as ``extra_queries``;
- ``clues``: ``MemoRAG(retrieval="clues")`` (the previous default: copied + surrogate clues);
- ``heads+clues``: ``MemoRAG(retrieval="heads+clues")``: the heads, the clues and the query;
- ``heads``: ``MemoRAG(retrieval="heads", query_weight=0, heads_weighting="fixed")``, the
  heads' list alone (fixed: an agreement of 0 would leave no list with weight);
- ``default``: ``MemoRAG()`` (heads + dense query, z-score, shipped heads_weight, query weight 2);
- ``heads+bm25`` / ``heads+hybrid``: the default with ``search_mode`` changed;
- ``default_w0.5`` / ``_w2`` / ``_w4``: the default with ``heads_weight`` changed (sweep);
- ``fixed_w0.5``: the previous default's fusion (``heads_weight=0.5``, fixed weighting).

Recall@2/5/10 of the gold evidence, MRR, paired bootstrap 95% CIs. Outputs are rewritten after
every question, so an interrupted run keeps its rows::

    python -m benchmarks.heads_eval --set hotpotqa --start 12 --limit 40 --name heads_hotpotqa
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.baselines import hyde_queries, multi_query
from benchmarks.datasets import BenchQuestion, load_set
from benchmarks.metrics import bootstrap_diff_ci, evidence_hits, mrr, recall_at_k, spans_of
from benchmarks.report import _header, environment, write_outputs

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CACHE = Path(__file__).resolve().parent / ".cache"
KS = (2, 5, 10)
DEPTH = 10
#: name -> (MemoRAG options, search mode of the index, key writer)
METHODS: dict[str, tuple[dict[str, Any] | None, str, str]] = {
    "dense": (None, "dense", ""),
    "bm25": (None, "bm25", ""),
    "hybrid": (None, "hybrid", ""),
    "hyde": (
        {"retrieval": "clues", "clue_strategy": "none", "fusion": "interleave"},
        "dense",
        "hyde",
    ),
    "multi_query": (
        {"retrieval": "clues", "clue_strategy": "none", "fusion": "interleave"},
        "dense",
        "multi_query",
    ),
    "clues": ({"retrieval": "clues"}, "dense", ""),
    "heads+clues": ({"retrieval": "heads+clues"}, "dense", ""),
    "heads": (
        {"retrieval": "heads", "query_weight": 0.0, "heads_weighting": "fixed"},
        "dense",
        "",
    ),
    "default": ({}, "dense", ""),
    "heads+bm25": ({}, "bm25", ""),
    "heads+hybrid": ({}, "hybrid", ""),
    "default_w0.5": ({"heads_weight": 0.5}, "dense", ""),
    "default_w2": ({"heads_weight": 2.0}, "dense", ""),
    "default_w4": ({"heads_weight": 4.0}, "dense", ""),
    "fixed_w0.5": ({"heads_weight": 0.5, "heads_weighting": "fixed"}, "dense", ""),
}
#: Methods that read the memory (the others need only the index).
MEMORY_METHODS = tuple(
    m for m, (opts, _, writer) in METHODS.items() if opts is not None and not writer
)
#: (a, b) pairs reported as ``a - b`` with a CI, beside every method's difference to dense.
PAIRS = (
    ("default", "hyde"),
    ("heads+hybrid", "hyde"),
    ("heads+hybrid", "default"),
    ("heads+bm25", "default"),
    ("heads+hybrid", "hybrid"),
    ("heads+bm25", "bm25"),
    ("hybrid", "dense"),
    ("default", "heads"),
)
METRICS = (*(f"r@{k}" for k in KS), "mrr")


def select(
    bench: Any,
    start: int,
    limit: int | None,
    scopes: Sequence[str] = (),
    per_scope: int | None = None,
) -> list[BenchQuestion]:
    """Questions in file order from ``start`` (those with gold; within ``scopes`` if given)."""
    out: list[BenchQuestion] = []
    counts: dict[tuple[str, ...], int] = {}
    for q in bench.questions[start:]:
        scope = tuple(q.scope or ())
        if not q.gold or (scopes and not set(scope) <= set(scopes)):
            continue
        if per_scope is not None and counts.get(scope, 0) >= per_scope:
            continue
        counts[scope] = counts.get(scope, 0) + 1
        out.append(q)
        if limit is not None and len(out) >= limit:
            break
    return out


def memo_heads_pass(memory: Any) -> dict[str, float]:
    """Run the memory's heads pass once per (state, query, heads); returns the pass seconds."""
    inner = memory.entry_attention
    memo: dict[tuple[Any, ...], Any] = {}
    seconds: dict[str, float] = {}

    def entry_attention(query: str, heads: Sequence[tuple[int, int]]) -> Any:
        key = (memory.lineage, query, tuple(tuple(h) for h in heads))
        if key not in memo:
            started = time.perf_counter()
            memo.clear()  # one query at a time
            memo[key] = inner(query, heads)
            seconds[query] = time.perf_counter() - started
        return memo[key]

    memory.entry_attention = entry_attention
    return seconds


class Scope:
    """One memory (a question's paragraphs, or the pooled set) and its three indexes."""

    def __init__(self, base: Any, docs: Sequence[Any], with_memory: bool = True) -> None:
        from shared_core.retrieval.hybrid import HybridIndex
        from shared_core.retrieval.index_choice import new_index

        started = time.perf_counter()
        if with_memory:
            base.memorize(list(docs))
            dense = base.index
        else:  # the methods asked for read no memory: the index memorize() builds, alone
            cfg, parts = base.config, base.parts
            dense = new_index(parts.embedder, cfg.index, cfg.search_mode, cfg.index_options)
            dense.add(parts.chunker.split(list(docs)))
        self.memorize_s = time.perf_counter() - started
        self.base = base
        self.indexes = {
            "dense": dense,
            "bm25": HybridIndex(dense, mode="bm25"),
            "hybrid": HybridIndex(dense, mode="hybrid"),
        }
        self.pipes: dict[str, Any] = {}
        stats = base.memory.stats()
        self.memory = {
            "entries": getattr(stats, "kv_entries", None),
            "tokens": getattr(stats, "tokens_read", None),
            "beacon_ratio": getattr(stats, "beacon_ratio", None),
            "position_mode": getattr(stats, "position_mode", None),
            "chunks": len(dense),
            "documents": len(docs),
        }

    def pipe(self, name: str) -> Any:
        from shared_core.pipeline import MemoRAG

        if name not in self.pipes:
            options, mode, _ = METHODS[name]
            base = self.base
            self.pipes[name] = MemoRAG(
                memory=base.memory,
                embedder=base.embedder,
                generator=base.generator,
                search_index=self.indexes[mode],
                **(options or {}),
            )
        return self.pipes[name]


def run_method(
    scope: Scope, name: str, q: BenchQuestion, keys: Callable[[str, str], list[str]]
) -> dict[str, Any]:
    options, mode, writer = METHODS[name]
    started = time.perf_counter()
    timings: dict[str, float] = {}
    extra: list[str] = []
    route = "query"
    if options is None:
        hits = list(scope.indexes[mode].search(q.question, DEPTH))
    else:
        if writer:
            extra = keys(writer, q.question)
            timings["keys"] = time.perf_counter() - started
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = scope.pipe(name).retrieve(q.question, DEPTH, extra_queries=extra)
        hits, route = list(result.passages), result.route
        timings.update(result.timings)
        extra = [c.text for c in result.clues if c.kind not in ("query", "attention")]
    ranks = evidence_hits(spans_of(hits), q.gold)
    return {
        **{f"r@{k}": recall_at_k(ranks, k) for k in KS},
        "mrr": mrr(ranks),
        "ranks": list(ranks),
        "retrieved": [h.passage.id for h in hits],
        "route": route,
        "keys": extra,
        "seconds": time.perf_counter() - started,
        "timings": timings,
    }


def _ci(a: Sequence[float], b: Sequence[float]) -> list[float]:
    return list(bootstrap_diff_ci(a, b)) if len(a) > 1 else [a[0] - b[0], a[0] - b[0], a[0] - b[0]]


def summarize(rows: Sequence[dict[str, Any]], methods: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"questions": len(rows)}
    for m in methods:
        got = [r for r in rows if m in r]
        if not got:
            continue
        entry: dict[str, Any] = {"n": len(got)}
        for key in METRICS:
            entry[key] = statistics.fmean(r[m][key] for r in got)
        entry["query_s"] = statistics.median(r[m]["seconds"] for r in got)
        heads = [r[m]["timings"]["heads"] for r in got if "heads" in r[m]["timings"]]
        if heads:
            entry["heads_s"] = statistics.median(heads)
        if m != "dense":
            both = [r for r in got if "dense" in r]
            for key in METRICS:
                entry[f"{key}_vs_dense"] = _ci(
                    [r[m][key] for r in both], [r["dense"][key] for r in both]
                )
        out[m] = entry
    pairs = {}
    for a, b in PAIRS:
        both = [r for r in rows if a in r and b in r]
        if both:
            pairs[f"{a} - {b}"] = {
                key: _ci([r[a][key] for r in both], [r[b][key] for r in both])
                for key in ("r@5", "mrr")
            }
    out["pairs"] = pairs
    return out


def _kind(memory: dict[str, Any]) -> str:
    if (memory["entries"] or 0) < (memory["tokens"] or 0):
        return f"compressed at ratio {memory['beacon_ratio']}"
    return "full KV"


def _fmt_ci(v: Sequence[float] | None) -> str:
    return "" if v is None else f"{v[0]:+.3f} [{v[1]:+.3f}, {v[2]:+.3f}]"


def markdown(summary: dict[str, Any], methods: Sequence[str], title: str, header: str) -> str:
    lines = [header, f"## {title} ({summary['questions']} questions)", ""]
    lines += [
        "| method | R@2 | R@5 | R@10 | MRR | R@5 - dense [95% CI] | MRR - dense [95% CI] | "
        "query s (median) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m in methods:
        e = summary.get(m)
        if e is None:
            continue
        lines.append(
            f"| {m} | {e['r@2']:.3f} | {e['r@5']:.3f} | {e['r@10']:.3f} | {e['mrr']:.3f} | "
            f"{_fmt_ci(e.get('r@5_vs_dense'))} | {_fmt_ci(e.get('mrr_vs_dense'))} | "
            f"{e['query_s']:.2f} |"
        )
    lines += ["", "Paired differences (a - b) [95% CI]:", ""]
    for pair, v in summary["pairs"].items():
        lines.append(f"- {pair}: R@5 {_fmt_ci(v['r@5'])}, MRR {_fmt_ci(v['mrr'])}")
    lines.append("")
    return "\n".join(lines)


def merge(paths: Sequence[Path], out: Path, name: str) -> dict[str, Any]:
    """One table from several runs of the same questions (rows joined by question id)."""
    import json

    runs = [json.loads(Path(p).read_text()) for p in paths]
    rows: dict[str, dict[str, Any]] = {}
    methods: list[str] = []
    for run in runs:
        for row in run["rows"]:
            rows.setdefault(row["id"], {}).update(row)
            methods += [m for m in METHODS if m in row and m not in methods]
    methods = [m for m in METHODS if m in methods]
    joined = [r for r in rows.values() if all(m in r for m in methods)]
    summary = summarize(joined, methods)
    first = runs[0]
    title = f"{first['set']}, {first['setting']} setting"
    commands = [r["command"] for r in runs]
    header = "\n".join(
        [
            f"# Retrieval heads vs baselines: {title}",
            "",
            f"Merged by `python -m benchmarks.heads_eval --merge {' '.join(map(str, paths))} "
            f"--name {name}` from (questions run by every one: {len(joined)} of {len(rows)}):",
            "",
            *[f"- `{c}`" for c in commands],
            "",
            "Machines/load: "
            + "; ".join(
                f"{r['env']['cpu']}, load {r['env']['loadavg_start'][0]:.1f} -> "
                f"{r['env'].get('loadavg_end', [0])[0]:.1f}"
                for r in runs
            ),
            "Memories: "
            + "; ".join(
                f"{v['documents']} docs, {v['tokens']} tokens -> {v['entries']} entries, {_kind(v)}"
                for r in runs
                for v in list(r["memories"].values())[:1]
                if v["entries"]
            ),
            "",
        ]
    )
    payload = {
        "commands": commands,
        "sources": [str(p) for p in paths],
        "set": first["set"],
        "setting": first["setting"],
        "summary": summary,
        "rows": joined,
    }
    write_outputs(out, name, payload, markdown(summary, methods, title, header))
    return summary


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set")
    parser.add_argument("--merge", nargs="+", type=Path, help="merge these runs' JSON files")
    parser.add_argument("--setting", choices=["context", "pooled"], default="context")
    parser.add_argument("--start", type=int, default=0, help="skip the first N questions")
    parser.add_argument("--limit", type=int, default=40)
    parser.add_argument("--scopes", nargs="*", default=[], help="only these documents' questions")
    parser.add_argument("--per-scope", type=int, default=None)
    parser.add_argument("--methods", nargs="+", default=list(METHODS)[:10], choices=list(METHODS))
    parser.add_argument("--beacon-ratio", type=int, default=4, help="MemoRAG()'s default: 4")
    parser.add_argument("--compress", default="when_needed", choices=["when_needed", "always"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--name", required=True)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    if args.merge:
        merge(args.merge, args.out, args.name)
        return
    import torch

    from benchmarks.gen_cache import GenCache
    from benchmarks.runtime import Runtime
    from shared_core.pipeline import MemoRAG

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    env = environment()
    command = "python -m benchmarks.heads_eval " + " ".join(argv or sys.argv[1:])
    bench = load_set(DATA / args.set)
    questions = select(bench, args.start, args.limit, args.scopes, args.per_scope)
    rt = Runtime(cache=GenCache(CACHE / "heads_eval_keys.jsonl"), cache_dir=CACHE)

    def keys(writer: str, question: str) -> list[str]:
        if writer == "hyde":
            return hyde_queries(question, rt.plain(), max_new_tokens=rt.hyde_tokens)
        return multi_query(question, rt.plain(), n=3, max_new_tokens=rt.mq_tokens)

    base = MemoRAG(beacon_ratio=args.beacon_ratio, compress=args.compress)
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    scopes: dict[str, dict[str, Any]] = {}
    scope: Scope | None = None
    scope_key = None
    passes: dict[str, float] = {}
    title = f"{args.set}, {args.setting} setting"
    for n, q in enumerate(questions, 1):
        if args.setting == "pooled":
            key = "pooled"
            if scope is None:
                seen: dict[str, Any] = {}
                for other in questions:
                    for d in bench.scoped_documents(other):
                        seen.setdefault(d.doc_id, d)
                docs = list(seen.values())
        else:
            docs = bench.scoped_documents(q)
            key = "|".join(d.doc_id or "" for d in docs)
        if key != scope_key:
            scope = Scope(base, docs, with_memory=any(m in MEMORY_METHODS for m in args.methods))
            passes = memo_heads_pass(base.memory)
            scope_key = key
            scopes[key[:80]] = {**scope.memory, "memorize_s": scope.memorize_s}
            print(f"memorized {scopes[key[:80]]}", file=sys.stderr, flush=True)
        assert scope is not None
        row: dict[str, Any] = {"id": q.id, "type": q.type, "question": q.question}
        for m in args.methods:
            row[m] = run_method(scope, m, q, keys)
        row["heads_pass_s"] = passes.get(q.question)
        rows.append(row)
        print(
            f"{args.set}/{args.setting} {n}/{len(questions)} r@5 "
            + " ".join(f"{m}={row[m]['r@5']:.2f}" for m in args.methods),
            file=sys.stderr,
            flush=True,
        )
        summary = summarize(rows, args.methods)
        env["loadavg_end"] = list(os.getloadavg())
        seconds = time.perf_counter() - started
        header = _header(f"Retrieval heads vs baselines: {title}", env, command, seconds)
        notes = (
            f"Questions: {args.set} in file order from index {args.start} (0-based), "
            f"{len(rows)} of {len(questions)} run; memory {args.compress}, beacon_ratio "
            f"{args.beacon_ratio}; memories: "
            + "; ".join(
                f"{v['documents']} docs, {v['tokens']} tokens -> {v['entries']} entries, "
                f"{_kind(v)}, "
                f"{v['chunks']} chunks"
                for v in list(scopes.values())[:3]
            )
            + (" ..." if len(scopes) > 3 else "")
            + "\n"
        )
        payload = {
            "command": command,
            "env": env,
            "set": args.set,
            "setting": args.setting,
            "start": args.start,
            "summary": summary,
            "memories": scopes,
            "rows": rows,
        }
        write_outputs(
            args.out,
            args.name,
            payload,
            markdown(summary, args.methods, title, header + notes),
        )
    print(markdown(summarize(rows, args.methods), args.methods, title, ""))


if __name__ == "__main__":
    main()
