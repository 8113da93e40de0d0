"""Dense vs BM25 vs hybrid search in the own index, alone and under MemoRAG's clues, beside
the frameworks' own fusion retrievers, on each question's context (HotpotQA: its 10
paragraphs; the needles: the whole novel).

Methods (every one over the same chunks: the pipeline's ``TokenChunker``, 256 tokens, 32
overlap; the same MiniLM embedder; 10 hits each):

- ``dense`` / ``bm25`` / ``hybrid``: the query alone on ``DenseIndex``, ``HybridIndex(mode=
  "bm25")`` and ``HybridIndex(mode="hybrid")`` (RRF of dense and BM25, k=60, equal weights);
- ``memorag+dense`` / ``+bm25`` / ``+hybrid``: the pipeline's defaults (compressed-KV SmolLM2
  memory, ``copy+surrogate`` clues, anchored, interleave fusion); the clues are written once
  per question and searched in each index;
- ``lc_ensemble``: LangChain ``EnsembleRetriever`` (weighted RRF, c=60, weights 0.5/0.5) over
  the dense and BM25 indexes wrapped as LangChain retrievers;
- ``li_fusion``: LlamaIndex ``QueryFusionRetriever(mode="reciprocal_rerank", num_queries=1)``
  over the dense index wrapped as a LlamaIndex retriever and LlamaIndex's own
  ``BM25Retriever`` (llama-index-retrievers-bm25, stemmed).

Evidence recall@2/5/10 and MRR per question (``benchmarks.metrics``), means with paired
bootstrap 95% CIs of each method minus ``dense``. Run (bounded)::

    python -m benchmarks.hybrid_bench --limit 20            # both sets, MemoRAG on HotpotQA
    python -m benchmarks.hybrid_bench --limit 20 --memorag-sets hotpotqa longbook_needles
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.datasets import BenchQuestion, load_set
from benchmarks.metrics import bootstrap_diff_ci, evidence_hits, mrr, recall_at_k, spans_of
from shared_core.types import Chunk, Hit, Passage

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
KS = (2, 5, 10)
DEPTH = 10
BASE_METHODS = ("dense", "bm25", "hybrid", "lc_ensemble", "li_fusion")
MEMORAG_METHODS = ("memorag+dense", "memorag+bm25", "memorag+hybrid")


# ---------------------------------------------------------------- framework fusion retrievers


def _passage_hits(passages: Sequence[Passage]) -> list[Hit]:
    return [Hit(passage=p, score=1.0 / (i + 1), rank=i) for i, p in enumerate(passages)]


def langchain_ensemble(dense: Any, bm25: Any) -> Callable[[str, int], list[Hit]]:
    """LangChain ``EnsembleRetriever`` over our two indexes as LangChain retrievers."""
    from langchain_classic.retrievers import EnsembleRetriever
    from langchain_core.documents import Document
    from langchain_core.retrievers import BaseRetriever

    class _Wrapped(BaseRetriever):
        index: Any

        def _get_relevant_documents(self, query: str, *, run_manager: Any) -> list[Document]:
            return [
                Document(page_content=h.passage.text, metadata=dict(h.passage.metadata))
                for h in self.index.search(query, DEPTH)
            ]

    ensemble = EnsembleRetriever(
        retrievers=[_Wrapped(index=dense), _Wrapped(index=bm25)],
        weights=[0.5, 0.5],
        c=60,
        id_key="chunk_id",
    )

    def search(query: str, k: int) -> list[Hit]:
        docs = ensemble.invoke(query)[:k]
        return _passage_hits(
            [
                Passage(id=d.metadata["chunk_id"], text=d.page_content, metadata=d.metadata)
                for d in docs
            ]
        )

    return search


def llamaindex_fusion(dense: Any, chunks: Sequence[Chunk]) -> Callable[[str, int], list[Hit]]:
    """LlamaIndex ``QueryFusionRetriever`` (reciprocal rerank) over dense + its own BM25."""
    from llama_index.core.base.base_retriever import BaseRetriever
    from llama_index.core.llms import MockLLM
    from llama_index.core.retrievers import QueryFusionRetriever
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
    from llama_index.retrievers.bm25 import BM25Retriever

    def node(chunk: Chunk) -> TextNode:
        meta = {"doc_id": chunk.doc_id, "start": chunk.start, "end": chunk.end}
        return TextNode(id_=chunk.chunk_id, text=chunk.text, metadata=meta)

    class _Dense(BaseRetriever):
        def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
            hits = dense.search(query_bundle.query_str, DEPTH)
            return [NodeWithScore(node=node(dense.get(h.passage.id)), score=h.score) for h in hits]

    nodes = [node(c) for c in chunks]
    bm25 = BM25Retriever.from_defaults(nodes=nodes, similarity_top_k=min(DEPTH, len(nodes)))
    fusion = QueryFusionRetriever(
        [_Dense(), bm25],
        mode="reciprocal_rerank",
        num_queries=1,  # no generated queries: the LLM (a placeholder) is never called
        llm=MockLLM(),
        similarity_top_k=DEPTH,
        use_async=False,
    )

    def search(query: str, k: int) -> list[Hit]:
        found = fusion.retrieve(query)[:k]
        return _passage_hits(
            [
                Passage(id=n.node.node_id, text=n.node.get_content(), metadata=n.node.metadata)
                for n in found
            ]
        )

    return search


# ---------------------------------------------------------------- the clue cache


class _OnceClues:
    """A clue writer that writes each query's clues once (searched in three indexes)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self._memo: dict[tuple[int, str], list[Any]] = {}

    @property
    def uses_source(self) -> bool:
        return bool(self.inner.uses_source)

    def write(self, query: str, memory: Any, **kw: Any) -> list[Any]:
        key = (id(memory), query, memory.lineage)
        if key not in self._memo:
            self._memo[key] = self.inner.write(query, memory, **kw)
        return self._memo[key]


# ---------------------------------------------------------------- scoring and the run


def scores(hits: Sequence[Any], question: BenchQuestion) -> dict[str, Any]:
    ranks = evidence_hits(spans_of(hits), question.gold)
    row: dict[str, Any] = {f"recall@{k}": recall_at_k(ranks, k) for k in KS}
    row["mrr"] = mrr(ranks)
    row["ranks"] = ranks
    return row


def run_set(name: str, limit: int, seed: int, with_memorag: bool, log: Any) -> dict[str, Any]:
    from shared_core.clues.writers import make_clue_writer
    from shared_core.pipeline import MemoRAG
    from shared_core.prompts import get_prompts
    from shared_core.retrieval.hybrid import HybridIndex
    from shared_core.retrieval.index import DenseIndex

    bench = load_set(DATA / name, limit=limit, seed=seed)
    writer = _OnceClues(make_clue_writer("copy+surrogate", get_prompts("en")))
    pipe = MemoRAG(retrieval_chunk_size=256, chunk_overlap=32, clue_strategy=writer, language="en")
    rows: dict[str, list[dict[str, Any]]] = {m: [] for m in BASE_METHODS}
    if with_memorag:
        rows.update({m: [] for m in MEMORAG_METHODS})
    cache: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    for qi, q in enumerate(bench.questions):
        docs = bench.scoped_documents(q)
        scope = "|".join(d.doc_id or "" for d in docs)
        if scope not in cache:
            chunks = pipe.parts.chunker.split(docs)
            dense = DenseIndex(pipe.embedder)
            dense.add(chunks)
            bm25 = HybridIndex(dense, mode="bm25")
            cache.clear()  # one scope at a time (the needles share one)
            cache[scope] = {
                "chunks": chunks,
                "dense": dense,
                "bm25": bm25,
                "hybrid": HybridIndex(dense, mode="hybrid"),
                "lc_ensemble": langchain_ensemble(dense, bm25),
                "li_fusion": llamaindex_fusion(dense, chunks),
                "memorized": False,
            }
        parts = cache[scope]
        for method in BASE_METHODS:
            started = time.perf_counter()
            backend = parts[method]
            hits = (
                backend(q.question, DEPTH)
                if callable(backend)
                else backend.search(q.question, DEPTH)
            )
            seconds[method] = seconds.get(method, 0.0) + time.perf_counter() - started
            rows[method].append({"id": q.id, **scores(hits, q)})
        if with_memorag:
            started = time.perf_counter()
            if not parts["memorized"]:
                pipe.memorize(docs)
                parts["memorized"] = True
            seconds["memorize"] = seconds.get("memorize", 0.0) + time.perf_counter() - started
            for method in MEMORAG_METHODS:
                started = time.perf_counter()
                backend = parts[method.split("+")[1]]
                result = pipe.retrieve(q.question, DEPTH, search=backend, search_k=DEPTH)
                hits = [Hit(p.passage, p.score, i) for i, p in enumerate(result.passages)]
                seconds[method] = seconds.get(method, 0.0) + time.perf_counter() - started
                rows[method].append(
                    {"id": q.id, **scores(hits, q), "clues": [c.text for c in result.clues]}
                )
        line = " ".join(f"{m}={rows[m][-1]['recall@5']:.2f}" for m in rows)
        print(f"[{name}] q{qi + 1}/{len(bench.questions)} r@5 {line}", file=log, flush=True)
    return {"set": name, "questions": len(bench.questions), "rows": rows, "seconds": seconds}


def summarize(run: dict[str, Any], seed: int) -> dict[str, Any]:
    rows = run["rows"]
    table: dict[str, Any] = {}
    for method, items in rows.items():
        entry: dict[str, Any] = {}
        for metric in (*(f"recall@{k}" for k in KS), "mrr"):
            values = [r[metric] for r in items if not math.isnan(r[metric])]
            entry[metric] = sum(values) / len(values) if values else math.nan
            if method != "dense" and values:
                base = [r[metric] for r in rows["dense"] if not math.isnan(r[metric])]
                diff, lo, hi = bootstrap_diff_ci(values, base, seed=seed)
                entry[f"{metric}_vs_dense"] = {"diff": diff, "lo": lo, "hi": hi}
        table[method] = entry
    pairs = {}
    for a, b in (("hybrid", "bm25"), ("memorag+hybrid", "memorag+bm25"), ("memorag+bm25", "bm25")):
        if a in rows and b in rows:
            pairs[f"{a} - {b}"] = {
                m: dict(
                    zip(
                        ("diff", "lo", "hi"),
                        bootstrap_diff_ci(
                            [r[m] for r in rows[a]], [r[m] for r in rows[b]], seed=seed
                        ),
                        strict=True,
                    )
                )
                for m in ("recall@5", "mrr")
            }
    return {"methods": table, "pairs": pairs}


def markdown(
    results: list[dict[str, Any]], command: str, wall: float, load: Sequence[float]
) -> str:
    lines = [
        "# Dense, BM25 and hybrid search, with and without MemoRAG",
        "",
        f"Command: `{command}`  ",
        f"Wall time {wall / 60:.1f} min; load average {load[0]:.1f} at start (2 shared cores)  ",
        "Chunks: 256 tokens, 32 overlap; embedder all-MiniLM-L6-v2; memory SmolLM2-135M "
        "(compressed KV, ratio 4), clues copy+surrogate; 10 hits per search.",
        "",
    ]
    for res in results:
        summary = res["summary"]
        lines += [
            f"## {res['set']} (context setting, {res['questions']} questions)",
            "",
            "| method | recall@2 | recall@5 | recall@10 | MRR | recall@5 - dense [95% CI] "
            "| MRR - dense [95% CI] |",
            "|---|---|---|---|---|---|---|",
        ]
        for method, e in summary["methods"].items():

            def ci(metric: str, e: dict[str, Any] = e) -> str:
                d = e.get(f"{metric}_vs_dense")
                return "" if d is None else f"{d['diff']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]"

            lines.append(
                f"| {method} | {e['recall@2']:.3f} | {e['recall@5']:.3f} | {e['recall@10']:.3f} "
                f"| {e['mrr']:.3f} | {ci('recall@5')} | {ci('mrr')} |"
            )
        lines.append("")
        for pair, metrics in summary["pairs"].items():
            text = ", ".join(
                f"{m} {v['diff']:+.3f} [{v['lo']:+.3f}, {v['hi']:+.3f}]" for m, v in metrics.items()
            )
            lines.append(f"- {pair}: {text}")
        lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", nargs="+", default=["hotpotqa", "longbook_needles"])
    parser.add_argument("--memorag-sets", nargs="*", default=["hotpotqa"])
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="hybrid")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    load = os.getloadavg()
    started = time.perf_counter()
    results = []
    for name in args.sets:
        run = run_set(name, args.limit, args.seed, name in args.memorag_sets, sys.stderr)
        run["summary"] = summarize(run, args.seed)
        results.append(run)
    wall = time.perf_counter() - started
    command = "python -m benchmarks.hybrid_bench " + " ".join(argv or sys.argv[1:])
    args.out.mkdir(parents=True, exist_ok=True)
    payload = {"command": command, "seconds": wall, "loadavg_start": load, "results": results}
    (args.out / f"{args.name}.json").write_text(json.dumps(payload, indent=1, default=float))
    (args.out / f"{args.name}.md").write_text(markdown(results, command, wall, load) + "\n")
    print(markdown(results, command, wall, load))


if __name__ == "__main__":
    main()
