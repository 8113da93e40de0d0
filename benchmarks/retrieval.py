"""``python -m benchmarks retrieval``: evidence recall of retrieval methods on one set.

Every method is a row of ``registry.METHODS`` (the query alone on the index, or the shipped
``MemoRAG`` with options); all share one memory, embedder, generator and index per scope
(injected parts). Three axes cross the methods:

- **route** and fusion: the method's own ``MemoRAG`` options (``default``, ``heads``,
  ``clues``, ``heads+clues`` ...);
- **search mode** (``--search-modes dense bm25 hybrid``): each method also over a
  ``HybridIndex`` of that mode on the same dense index (what ``search_mode=`` builds), labelled
  ``METHOD@MODE``;
- **scorer** (``--scorers stride key_norm ...``, with ``--compress always --ratio N``): one
  memory per scorer, each method labelled ``METHOD/SCORER``.

Settings: ``context`` (each question's own documents are the memory and the index) or
``pooled`` (every selected question's documents in one memory). Questions are taken in file
order from ``--start`` (``--shuffle``: a seeded sample first). The memory's heads pass runs once
per (memory, query) and is shared by every heads method. Recall@2/5/10 of the gold evidence,
MRR, paired bootstrap 95% CIs against ``dense``. The outputs are rewritten after every
question, so an interrupted run keeps its rows::

    python -m benchmarks retrieval --set musique --limit 12 --methods dense default heads
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.baselines import CachedGenerator, blind_keys
from benchmarks.datasets import BenchQuestion, load_set
from benchmarks.metrics import (
    DEPTH,
    environment,
    header,
    markdown,
    retrieval_scores,
    summarize,
    write_outputs,
)
from benchmarks.registry import CACHE, METHODS, RESULTS, Method, command, data_dir

#: (a, b) pairs reported as ``a - b`` with a CI when both ran.
PAIRS = (
    ("default", "hyde"),
    ("default", "heads"),
    ("default", "clues"),
    ("hybrid", "dense"),
    ("default@hybrid", "default"),
    ("default@bm25", "default"),
)
SEARCH_MODES = ("dense", "bm25", "hybrid")


def select(
    bench: Any,
    start: int,
    limit: int | None,
    scopes: Sequence[str] = (),
    per_scope: int | None = None,
) -> list[BenchQuestion]:
    """Questions in order from ``start`` (those with gold; within ``scopes`` if given)."""
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


def pooled_documents(bench: Any, questions: Sequence[BenchQuestion]) -> list[Any]:
    """The questions' documents, each once, in first-seen order."""
    seen: dict[str, Any] = {}
    for q in questions:
        for d in bench.scoped_documents(q):
            seen.setdefault(d.doc_id, d)
    return list(seen.values())


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


def label(method: str, mode: str | None, scorer: str | None) -> str:
    """A variant's row name: ``METHOD``, ``METHOD@MODE``, ``METHOD/SCORER``."""
    return method + (f"@{mode}" if mode else "") + (f"/{scorer}" if scorer else "")


class Scope:
    """One memory (a question's documents, or the pool) and its index in each search mode."""

    def __init__(self, base: Any, docs: Sequence[Any], with_memory: bool = True) -> None:
        from shared_core.retrieval.hybrid import HybridIndex
        from shared_core.retrieval.index_choice import new_index

        started = time.perf_counter()
        if with_memory:
            base.memorize(list(docs))
            dense = base.index
        else:  # no method reads the memory: the index memorize() builds, alone
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
        self.pipes: dict[tuple[str, str], Any] = {}
        stats = base.memory.stats()
        self.record = {
            "entries": stats.kv_entries,
            "tokens": stats.tokens_read,
            "beacon_ratio": stats.beacon_ratio,
            "chunks": len(dense),
            "documents": len(docs),
            "memorize_s": self.memorize_s,
        }

    def pipe(self, method: Method, mode: str) -> Any:
        """The shipped pipeline of ``method`` over this scope's index in ``mode``."""
        from shared_core.pipeline import MemoRAG

        key = (method.name, mode)
        if key not in self.pipes:
            base = self.base
            self.pipes[key] = MemoRAG(
                memory=base.memory,
                embedder=base.embedder,
                generator=base.generator,
                search_index=self.indexes[mode],
                **dict(method.options or {}),
            )
        return self.pipes[key]


def run_method(
    scope: Scope,
    method: Method,
    mode: str,
    q: BenchQuestion,
    keys: Callable[[str, str], list[str]],
) -> dict[str, Any]:
    """One method on one question: scores, retrieved ids, route, keys, seconds."""
    started = time.perf_counter()
    timings: dict[str, float] = {}
    extra: list[str] = []
    route = "query"
    if method.options is None:
        hits = list(scope.indexes[mode].search(q.question, DEPTH))
    else:
        if method.keys:
            extra = keys(method.keys, q.question)
            timings["keys"] = time.perf_counter() - started
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = scope.pipe(method, mode).retrieve(q.question, DEPTH, extra_queries=extra)
        hits, route = list(result.passages), result.route
        timings.update(result.timings)
        extra = [c.text for c in result.clues if c.kind not in ("query", "attention")]
    return {
        **retrieval_scores(hits, q.gold),
        "retrieved": [h.passage.id for h in hits],
        "route": route,
        "keys": extra,
        "seconds": time.perf_counter() - started,
        "timings": timings,
    }


def _kind(memory: dict[str, Any]) -> str:
    if (memory["entries"] or 0) < (memory["tokens"] or 0):
        return f"compressed at ratio {memory['beacon_ratio']}"
    return "full KV"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks retrieval",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--set", required=True, help="a set under the data folder (or a folder)")
    p.add_argument("--setting", choices=["context", "pooled"], default="context")
    p.add_argument("--start", type=int, default=0, help="skip the first N questions")
    p.add_argument("--limit", type=int, default=40)
    p.add_argument("--shuffle", action="store_true", help="a seeded sample of --limit first")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scopes", nargs="*", default=[], help="only these documents' questions")
    p.add_argument("--per-scope", type=int, default=None)
    p.add_argument("--methods", nargs="+", default=["dense", "default"], choices=list(METHODS))
    p.add_argument("--search-modes", nargs="*", default=[], choices=SEARCH_MODES)
    p.add_argument("--scorers", nargs="*", default=[], help="one memory per KV scorer")
    p.add_argument("--ratio", type=int, default=None, help="beacon_ratio (default: MemoRAG's)")
    p.add_argument("--compress", default=None, choices=["when_needed", "always"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--name", required=True)
    p.add_argument("--out", type=Path, default=RESULTS)
    return p


@command("retrieval", "evidence recall of methods x search modes x scorers on one set")
def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    import torch

    from shared_core.models.generation import LocalGenerator
    from shared_core.models.loading import DEFAULT_LM_NAME, load_causal_lm
    from shared_core.pipeline import MemoRAG

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    env = environment(args.seed)
    command_line = "python -m benchmarks retrieval " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    bench = load_set(data_dir(args.set), limit=args.limit if args.shuffle else None, seed=args.seed)
    questions = select(bench, args.start, args.limit, args.scopes, args.per_scope)

    def plain() -> Any:
        lm = load_causal_lm(None, device="cpu")
        return LocalGenerator(lm.model, lm.tokenizer, name=lm.name)

    blind = CachedGenerator(DEFAULT_LM_NAME, plain, CACHE / "blind_keys.jsonl")

    def keys(writer: str, question: str) -> list[str]:
        return blind_keys(writer, question, blind)

    memory_options: dict[str, Any] = {}
    if args.ratio is not None:
        memory_options["beacon_ratio"] = args.ratio
    if args.compress is not None:
        memory_options["compress"] = args.compress
    scorers: list[str | None] = list(args.scorers) or [None]
    modes: list[str | None] = list(args.search_modes) or [None]
    variants = [
        (label(m, mode, s if args.scorers else None), METHODS[m], mode or METHODS[m].search, s)
        for s in scorers
        for m in args.methods
        for mode in modes
    ]
    labels = list(dict.fromkeys(v[0] for v in variants))
    reads_memory = any(METHODS[m].reads_memory for m in args.methods)
    pool = pooled_documents(bench, questions)
    title = f"{bench.name}, {args.setting} setting"
    started = time.perf_counter()
    rows: dict[str, dict[str, Any]] = {q.id: {"id": q.id, "type": q.type} for q in questions}
    memories: dict[str, dict[str, Any]] = {}
    for scorer in scorers:
        base = MemoRAG(**memory_options, **({"scorer": scorer} if scorer else {}))
        scope: Scope | None = None
        held: tuple[str, ...] | None = None
        passes: dict[str, float] = {}
        for n, q in enumerate(questions, 1):
            docs = pool if args.setting == "pooled" else bench.scoped_documents(q)
            key = tuple(d.doc_id or "" for d in docs)
            if key != held:
                scope = Scope(base, docs, with_memory=reads_memory)
                passes = memo_heads_pass(base.memory) if reads_memory else {}
                held = key
                memories[f"{scorer or ''}:{'|'.join(key)[:80]}"] = scope.record
                print(f"memorized {scope.record}", file=sys.stderr, flush=True)
            assert scope is not None
            row = rows[q.id]
            for name, method, mode, s in variants:
                if s == scorer:
                    row[name] = run_method(scope, method, mode, q, keys)
            row["heads_pass_s"] = passes.get(q.question)
            done = [r for r in rows.values() if labels[0] in r]
            print(
                f"{bench.name}/{args.setting} {n}/{len(questions)} r@5 "
                + " ".join(f"{v[0]}={row[v[0]]['r@5']:.2f}" for v in variants if v[3] == scorer),
                file=sys.stderr,
                flush=True,
            )
            summary = summarize(done, labels, PAIRS)
            env["loadavg_end"] = list(os.getloadavg())
            seconds = time.perf_counter() - started
            notes = (
                f"Questions: {bench.name} from index {args.start} (0-based"
                f"{', seeded sample' if args.shuffle else ''}), {len(done)} of {len(questions)} "
                f"run; memories: "
                + "; ".join(
                    f"{v['documents']} docs, {v['tokens']} tokens -> {v['entries']} entries, "
                    f"{_kind(v)}, {v['chunks']} chunks"
                    for v in list(memories.values())[:3]
                )
                + (" ..." if len(memories) > 3 else "")
                + "\n"
            )
            payload = {
                "command": command_line,
                "env": env,
                "set": bench.name,
                "setting": args.setting,
                "start": args.start,
                "summary": summary,
                "memories": memories,
                "rows": done,
            }
            head = header(f"Retrieval: {title}", env, command_line, seconds) + notes
            write_outputs(args.out, args.name, payload, markdown(summary, labels, title, head))
    final = [r for r in rows.values() if all(v[0] in r for v in variants)]
    print(markdown(summarize(final, labels, PAIRS), labels, title, ""))
