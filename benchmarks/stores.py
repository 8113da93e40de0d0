"""Issue 22: the memory's retrieval heads over the user's own stores, against the own index.

For each question the default ``MemoRAG()`` memorizes the question's paragraphs (the context
setting) or all the questions' paragraphs at once (``--setting pooled``). Every store holds the
engine's own chunks (same texts, the same embedded MiniLM through a framework wrapper), so a
store differs from the own index only in how it is searched and what it returns:

- ``own``: ``MemoRAG().retrieve`` (the heads re-rank the own index's candidates);
- ``dense``: the own index's dense search alone (the reference without the memory);
- ``lc_memory``: LangChain ``InMemoryVectorStore(...).as_retriever()`` as ``base_retriever``
  (no scores: the engine scores its hits by relevance); located by ``doc_id``/offsets;
- ``lc_qdrant``: ``langchain-qdrant`` ``QdrantVectorStore`` in local ``:memory:`` mode (its
  relevance scores; uuid ids, no offsets: located by text);
- ``li_vector``: LlamaIndex ``VectorStoreIndex`` through ``from_defaults(index=..., engine=,
  memorize=False)`` (located by node id = chunk id);
- ``li_bm25``: ``llama-index-retrievers-bm25`` ``BM25Retriever`` (its BM25 scores).

Recall@5 and MRR of the gold evidence (``benchmarks.metrics``), and each route's latency
broken down (``search``: the store's searches; ``heads``: locating the candidates and the
heads pass; ``fusion``: fusion and relevance scores). Run::

    OMP_NUM_THREADS=1 nice -n 10 python -m benchmarks stores --set hotpotqa --limit 25 \
        --name stores_hotpotqa

(or ``python -m benchmarks.stores ...``). ``--candidate-k 20 50 100`` runs ``own`` once per
value (``own_c20``, ...), to measure the candidate depth.
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

from benchmarks.datasets import BenchQuestion, load_set
from benchmarks.metrics import environment, evidence_hits, mrr, recall_at_k, write_outputs
from benchmarks.metrics import header as _header
from benchmarks.registry import CACHE, DATA, Experiment, Number, Step, command, experiment

OUT = CACHE / "stores"  # a rerun's scratch folder; recorded results: benchmarks/results/ID/
K = 10
STORES = ("own", "dense", "lc_memory", "lc_qdrant", "li_vector", "li_bm25")
PARTS = ("search", "heads", "fusion")


class Recording:
    """The engine, keeping the last ``RetrievalResult`` (route and timings) it returned."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.last: Any = None

    def retrieve(self, *args: Any, **kwargs: Any) -> Any:
        self.last = self.engine.retrieve(*args, **kwargs)
        return self.last

    async def aretrieve(self, *args: Any, **kwargs: Any) -> Any:
        self.last = await self.engine.aretrieve(*args, **kwargs)
        return self.last


def _memo(embedder: Any) -> tuple[Callable[[list[str]], list[list[float]]], Callable]:
    """Passage and query embedding through the engine's embedder, passages memoised by text."""
    seen: dict[str, list[float]] = {}

    def passages(texts: list[str]) -> list[list[float]]:
        fresh = [t for t in dict.fromkeys(texts) if t not in seen]
        if fresh:
            for t, v in zip(fresh, embedder.embed_passages(fresh).tolist(), strict=True):
                seen[t] = v
        return [seen[t] for t in texts]

    def query(text: str) -> list[float]:
        return embedder.embed_queries([text])[0].tolist()

    return passages, query


def lc_embeddings(embedder: Any) -> Any:
    from langchain_core.embeddings import Embeddings

    passages, query = _memo(embedder)

    class MiniLM(Embeddings):
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return passages(texts)

        def embed_query(self, text: str) -> list[float]:
            return query(text)

    return MiniLM()


def li_embeddings(embedder: Any) -> Any:
    from llama_index.core.embeddings import BaseEmbedding

    passages, query = _memo(embedder)

    class MiniLM(BaseEmbedding):
        def _get_query_embedding(self, text: str) -> list[float]:
            return query(text)

        def _get_text_embedding(self, text: str) -> list[float]:
            return passages([text])[0]

        def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
            return passages(texts)

        async def _aget_query_embedding(self, text: str) -> list[float]:
            return query(text)

    return MiniLM()


class Scope:
    """One memorized corpus, the own index's chunks in every store, one retriever per store."""

    def __init__(self, pipe: Any, docs: Sequence[Any], stores: Sequence[str]) -> None:
        started = time.perf_counter()
        pipe.memorize(list(docs))
        self.memorize_s = time.perf_counter() - started
        self.pipe = pipe
        pipe.retrieve("warm-up", K)  # a memory's first query also calibrates: not timed
        self.recording = Recording(pipe)
        chunks = pipe.index.chunks
        self.spans = {c.text: (c.doc_id, c.start, c.end) for c in chunks}
        self.retrievers: dict[str, Callable[[str], list[str]]] = {}
        builders = {
            "lc_memory": self._lc_memory,
            "lc_qdrant": self._lc_qdrant,
            "li_vector": self._li_vector,
            "li_bm25": self._li_bm25,
        }
        for name in stores:
            if name in builders:
                self.retrievers[name] = builders[name](chunks, pipe.embedder)

    # each builder returns query -> the returned passages' texts, best first
    def _lc_memory(self, chunks: Sequence[Any], embedder: Any) -> Callable[[str], list[str]]:
        from langchain_core.vectorstores import InMemoryVectorStore

        from langchain_memorag import MemoRAGRetriever

        store = InMemoryVectorStore(lc_embeddings(embedder))
        store.add_texts(
            [c.text for c in chunks],
            metadatas=[{"doc_id": c.doc_id, "start": c.start, "end": c.end} for c in chunks],
            ids=[c.chunk_id for c in chunks],
        )
        retriever = MemoRAGRetriever.from_engine(
            self.recording, base_retriever=store.as_retriever(), k=K
        )
        return lambda q: [d.page_content for d in retriever.invoke(q)]

    def _lc_qdrant(self, chunks: Sequence[Any], embedder: Any) -> Callable[[str], list[str]]:
        from langchain_qdrant import QdrantVectorStore

        from langchain_memorag import MemoRAGRetriever

        store = QdrantVectorStore.from_texts(
            [c.text for c in chunks],
            embedding=lc_embeddings(embedder),
            location=":memory:",
            collection_name="stores",
        )
        retriever = MemoRAGRetriever.from_engine(
            self.recording, base_retriever=store.as_retriever(), k=K
        )
        return lambda q: [d.page_content for d in retriever.invoke(q)]

    def _li_vector(self, chunks: Sequence[Any], embedder: Any) -> Callable[[str], list[str]]:
        from llama_index.core import VectorStoreIndex
        from llama_index.core.schema import TextNode

        from llamaindex_memorag import MemoRAGRetriever

        nodes = [TextNode(id_=c.chunk_id, text=c.text) for c in chunks]
        index = VectorStoreIndex(nodes, embed_model=li_embeddings(embedder))
        retriever = MemoRAGRetriever.from_defaults(
            index=index, engine=self.recording, memorize=False, similarity_top_k=K
        )
        return lambda q: [n.node.get_content() for n in retriever.retrieve(q)]

    def _li_bm25(self, chunks: Sequence[Any], embedder: Any) -> Callable[[str], list[str]]:
        from llama_index.core.schema import TextNode
        from llama_index.retrievers.bm25 import BM25Retriever

        from llamaindex_memorag import MemoRAGRetriever

        nodes = [TextNode(id_=c.chunk_id, text=c.text) for c in chunks]
        depth = self.pipe.config.candidate_k
        bm25 = BM25Retriever.from_defaults(nodes=nodes, similarity_top_k=min(depth, len(nodes)))
        retriever = MemoRAGRetriever(self.recording, base_retriever=bm25, similarity_top_k=K)
        return lambda q: [n.node.get_content() for n in retriever.retrieve(q)]

    def run(self, name: str, q: BenchQuestion) -> dict[str, Any]:
        started = time.perf_counter()
        timings: dict[str, float] = {}
        route = "dense"
        if name == "dense":
            texts = [h.passage.text for h in self.pipe.index.search(q.question, K)]
        elif name.startswith("own"):
            options = {}
            if name.startswith("own_c"):
                options["candidate_k"] = int(name[len("own_c") :])
            pipe = self.pipe if not options else self._variant(options)
            result = pipe.retrieve(q.question, K)
            texts, route = [p.passage.text for p in result.passages], result.route
            timings = dict(result.timings)
        else:
            texts = self.retrievers[name](q.question)
            route, timings = self.recording.last.route, dict(self.recording.last.timings)
        spans = [self.spans[t] for t in texts]
        ranks = evidence_hits(spans, q.gold)
        return {
            "r@5": recall_at_k(ranks, 5),
            "mrr": mrr(ranks),
            "route": route,
            "seconds": time.perf_counter() - started,
            "timings": {p: timings.get(p, 0.0) for p in PARTS},
        }

    def _variant(self, options: dict[str, Any]) -> Any:
        from shared_core.pipeline import MemoRAG

        base = self.pipe
        return MemoRAG(
            memory=base.memory, embedder=base.embedder, search_index=base.index, **options
        )


def summarize(rows: Sequence[dict[str, Any]], stores: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"questions": len(rows)}
    for s in stores:
        got = [r[s] for r in rows]
        out[s] = {
            "r@5": statistics.fmean(g["r@5"] for g in got),
            "mrr": statistics.fmean(g["mrr"] for g in got),
            "routes": sorted({g["route"] for g in got}),
            "seconds_median": statistics.median(g["seconds"] for g in got),
            **{f"{p}_median": statistics.median(g["timings"][p] for g in got) for p in PARTS},
        }
    return out


def markdown(summary: dict[str, Any], stores: Sequence[str], header: str) -> str:
    own = summary.get("own", {})
    lines = [
        header,
        "",
        f"{summary['questions']} questions. Latency medians in seconds (search = the store's "
        "searches, heads = locating the candidates + the heads pass, fusion = fusion + "
        "relevance scores).",
        "",
        "| store | route | R@5 | MRR | R@5 - own | retrieve s | search s | heads s | fusion s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in stores:
        v = summary[s]
        delta = f"{v['r@5'] - own['r@5']:+.3f}" if own and s != "own" else ""
        lines.append(
            f"| {s} | {','.join(v['routes'])} | {v['r@5']:.3f} | {v['mrr']:.3f} | {delta} | "
            f"{v['seconds_median']:.3f} | {v['search_median']:.3f} | {v['heads_median']:.3f} "
            f"| {v['fusion_median']:.3f} |"
        )
    return "\n".join(lines)


@command(
    "stores", "the heads over the user's stores (LangChain, LlamaIndex, Qdrant) vs the own index"
)
def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", required=True)
    parser.add_argument("--setting", choices=["context", "pooled"], default="context")
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--limit", type=int, default=25)
    parser.add_argument("--stores", nargs="+", default=list(STORES), choices=STORES)
    parser.add_argument("--candidate-k", nargs="*", type=int, default=[])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--name", required=True)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)

    import torch

    from shared_core.pipeline import MemoRAG

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    env = environment()
    command = "python -m benchmarks stores " + " ".join(argv if argv is not None else sys.argv[1:])
    bench = load_set(DATA / args.set)
    questions = bench.questions[args.start : args.start + args.limit]
    stores = [*args.stores, *(f"own_c{c}" for c in args.candidate_k)]
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    scope: Scope | None = None
    memorize_s: list[float] = []
    for n, q in enumerate(questions, 1):
        if scope is None or args.setting == "context":
            if args.setting == "pooled":
                seen: dict[str, Any] = {}
                for other in questions:
                    for d in bench.scoped_documents(other):
                        seen.setdefault(d.doc_id, d)
                docs = list(seen.values())
            else:
                docs = bench.scoped_documents(q)
            scope = Scope(MemoRAG(), docs, args.stores)
            memorize_s.append(scope.memorize_s)
        row: dict[str, Any] = {"id": q.id, "question": q.question}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for s in stores:
                row[s] = scope.run(s, q)
        rows.append(row)
        print(
            f"{args.set}/{args.setting} {n}/{len(questions)} r@5 "
            + " ".join(f"{s}={row[s]['r@5']:.2f}" for s in stores),
            file=sys.stderr,
            flush=True,
        )
        summary = summarize(rows, stores)
        env["loadavg_end"] = list(os.getloadavg())
        header = _header(
            f"Heads over the user's stores: {args.set}, {args.setting} setting",
            env,
            command,
            time.perf_counter() - started,
        )
        payload = {
            "command": command,
            "environment": env,
            "summary": summary,
            "memorize_s": memorize_s,
            "rows": rows,
        }
        write_outputs(args.out, args.name, payload, markdown(summary, stores, header))


_RUNS = (
    ("hotpotqa-context", "--set hotpotqa --limit 25", 25, ("lc_qdrant",)),
    ("musique-context", "--set musique --limit 20", 20, ("lc_qdrant",)),
    (
        "hotpotqa-pooled",
        "--set hotpotqa --limit 10 --setting pooled --stores own dense lc_memory li_vector "
        "li_bm25 --candidate-k 20 100 200",
        30,
        (),
    ),
)
for _name, _args, _minutes, _extra in _RUNS:
    _stem = "stores_" + _name.replace("-", "_")
    experiment(
        Experiment(
            id=f"stores-{_name}",
            about=f"the heads route over each user store vs the own index ({_name})",
            steps=(Step(f"stores {_args} --name {_stem} --out {{out}}"),),
            result=f"{_stem}.json",
            numbers=(
                *(
                    Number(f"{store} {metric}", f"summary.{store}.{metric}")
                    for store in ("own", "dense", "lc_memory", *_extra, "li_vector", "li_bm25")
                    for metric in ("r@5", "mrr")
                ),
                Number("own: retrieve s (median)", "summary.own.seconds_median", "{:.2f}"),
                Number("own: heads s (median)", "summary.own.heads_median", "{:.2f}"),
                Number("lc_memory: retrieve s", "summary.lc_memory.seconds_median", "{:.2f}"),
                Number("lc_memory: search s", "summary.lc_memory.search_median", "{:.2f}"),
            ),
            sets=(_name.split("-")[0],),
            minutes=_minutes,
        )
    )

if __name__ == "__main__":
    main()
