"""Run every method on every question: each retrieval goes through the shipped pipeline.

Every method is a ``shared_core.MemoRAG`` with its parts injected: the scope's ``DenseIndex``
(built from cached passage vectors with ``DenseIndex.from_vectors``), the memory's cached
generator as its memory, the cached plain generator as its generator, and the scope's text as
the copy source for copy-from-text clues. BM25 is the one external back-end (``search=``).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from benchmarks.baselines import BM25Backend, hyde_queries, multi_query
from benchmarks.datasets import BenchQuestion, BenchSet, load_set
from benchmarks.methods import (
    ABLATIONS,
    DEFAULT_ABLATION_LIMITS,
    DEFAULT_GEN_LIMIT,
    DEFAULT_LIMIT,
    DEFAULT_LIMITS,
    DEPTH,
    GEN_K,
    GIST_LIMITS,
    MAIN_METHODS,
    METHODS,
    POOLED_METHODS,
    QUERY_WEIGHT,
    RATIO_LADDER,
    SWEEP_WEIGHTS,
    TUNED_SETS,
    Method,
)
from benchmarks.render import summarize
from benchmarks.runtime import MemoryHandle, Runtime
from benchmarks.scoring import SetRun, _grams, answer_scores, copy_rate, retrieval_scores
from shared_core.clues.writers import CopyingClueWriter
from shared_core.errors import LimitError
from shared_core.models.generation import format_passages
from shared_core.pipeline import MemoRAG
from shared_core.retrieval.fusion import fuse
from shared_core.retrieval.index import DenseIndex
from shared_core.types import Clue, Document


def _scope_docs(bench: BenchSet, q: BenchQuestion, setting: str) -> list[Document]:
    return list(bench.documents) if setting == "pooled" else bench.scoped_documents(q)


def _keys_for(rt: Runtime, method: Method, question: str) -> list[str]:
    if method.keys == "hyde":
        return hyde_queries(question, rt.plain(), max_new_tokens=rt.hyde_tokens)
    if method.keys == "multi_query":
        return multi_query(question, rt.plain(), n=3, max_new_tokens=rt.mq_tokens)
    return []


def _resolve_memory(
    rt: Runtime,
    docs: Sequence[Document],
    method: Method,
    refusals: list[dict[str, Any]],
    handles: dict[tuple[str, int], MemoryHandle | str],
    scope: str,
) -> MemoryHandle | None:
    """The method's memory, walking up the ratio ladder when allowed; ``None`` if refused.

    ``handles`` remembers, per scope, each (back-end, ratio) built or refused; a refusal is
    recorded once per scope."""
    backend = method.memory
    ratios = [method.ratio]
    if method.fallback:
        ratios += [r for r in RATIO_LADDER if r > method.ratio]
    for ratio in ratios:
        key = (backend, ratio if backend == "compressed_kv" else 0)
        known = handles.get(key)
        if isinstance(known, MemoryHandle):
            return known
        if isinstance(known, str):
            if known.startswith("not available"):
                return None
            continue
        try:
            handle = rt.memory(docs, backend, ratio)
        except LimitError as exc:
            handles[key] = str(exc).splitlines()[0][:300]
        except (ImportError, TypeError) as exc:
            handles[key] = f"not available: {exc}"
        else:
            handles[key] = handle
            return handle
        refusals.append(
            {
                "scope": scope,
                "method": method.name,
                "backend": backend,
                "ratio": ratio,
                "error": handles[key],
            }
        )
        if handles[key].startswith("not available"):  # type: ignore[union-attr]
            return None
    return None


def _pipeline(rt: Runtime, method: Method, scope: Mapping[str, Any], memory: Any) -> MemoRAG:
    """The shipped pipeline for ``method`` over the scope's index, every part injected.

    ``memory`` answers the clue prompts (a memory's cached generator, or the plain one for the
    blind control and for methods that write no clues: "none" never prompts it).
    """
    writer: Any = rt.clue_writer(method.clue_strategy) if method.keys == "clues" else "none"
    copies = isinstance(writer, CopyingClueWriter) and writer.uses_source
    return MemoRAG(
        memory=memory,
        embedder=rt.embedder,
        generator=rt.plain(),
        search_index=scope["dense"],
        copy_source=rt.copy_source(scope["texts"]) if copies else None,
        query_weight=QUERY_WEIGHT,
        clue_strategy=writer,
        anchor_clues=method.anchored,
        **({"fusion": method.fusion} if method.fusion else {}),
    )


def run_method(
    rt: Runtime,
    method: Method,
    q: BenchQuestion,
    backends: Mapping[str, Any],
    memory: MemoryHandle | None,
) -> tuple[Any, dict[str, float], bool]:
    """Retrieve ``DEPTH`` passages for ``q`` with ``method`` through ``MemoRAG.retrieve``.

    Returns the result, the timings (clue/key writing seconds are the generations' own
    seconds, cached or not) and whether every generation came from the cache.
    """
    mark = rt.log.mark()
    started = time.perf_counter()
    extra = _keys_for(rt, method, q.question)
    key_seconds = time.perf_counter() - started
    source = memory.generator() if memory is not None else rt.plain()
    pipe = _pipeline(rt, method, backends, source)
    search = backends["bm25"] if method.search == "bm25" else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = pipe.retrieve(q.question, DEPTH, search=search, extra_queries=extra)
    gen_seconds, tokens, cached = rt.log.since(mark)
    timings = dict(result.timings)
    # Key writing = the model's generation seconds, as measured when generated (a cache hit
    # reports the original measurement); parsing adds milliseconds.
    timings["clues"] = gen_seconds + (0.0 if gen_seconds else key_seconds)
    timings["clue_tokens"] = float(tokens)
    return result, timings, cached


def _answer(
    rt: Runtime, q: BenchQuestion, passages: Sequence[Any], kind: str
) -> tuple[str, float, bool]:
    prompt = rt.prompts.answer.format(
        context=format_passages(list(passages)[:GEN_K]), question=q.question
    )
    tokens = rt.summary_tokens if kind == "meeting" else rt.qa_tokens
    mark = rt.log.mark()
    out = rt.plain().generate(prompt, max_new_tokens=tokens)
    seconds, _, cached = rt.log.since(mark)
    return out.text.strip(), seconds, cached


def _diagnose(
    result: Any, q: BenchQuestion, backend: Any, context_grams: set[tuple[str, ...]]
) -> dict[str, Any]:
    """Per-key hit lists of a clue method: each clue alone, and the query-weight sweep."""
    keys = list(result.clues)
    lists = backend.search_many([k.text for k in keys], DEPTH) if keys else []
    query_ranks: list[int] = []
    for key, hits in zip(keys, lists, strict=True):
        if key.kind == "query":
            query_ranks = retrieval_scores(hits, q)["ranks"]
    clues = []
    for key, hits in zip(keys, lists, strict=True):
        if key.kind == "query":
            continue
        scores = retrieval_scores(hits, q)
        new_gold = any(
            0 < r <= 5 and not (i < len(query_ranks) and 0 < query_ranks[i] <= 5)
            for i, r in enumerate(scores["ranks"])
        )
        clues.append(
            {
                "kind": key.kind,
                "text": key.text,
                "copy_rate": copy_rate(key.text, context_grams),
                "recall@5": scores["recall@5"],
                "new_gold@5": new_gold,
            }
        )
    sweep = {}
    for weight in SWEEP_WEIGHTS:
        pairs = []
        for key, hits in zip(keys, lists, strict=True):
            if key.kind == "query":
                if weight > 0:
                    pairs.append((Clue(key.text, "query", weight), hits))
            else:
                pairs.append((key, hits))
        fused = fuse(pairs, DEPTH) if pairs else []
        scores = retrieval_scores(fused, q)
        sweep[str(weight)] = {"recall@5": scores["recall@5"], "mrr": scores["mrr"]}
    # The engine's other fusion: round-robin over the lists, heaviest first.
    pairs = list(zip(keys, lists, strict=True))
    fused = fuse(pairs, DEPTH, method="interleave") if pairs else []
    scores = retrieval_scores(fused, q)
    sweep["interleave"] = {"recall@5": scores["recall@5"], "mrr": scores["mrr"]}
    return {"clues": clues, "sweep": sweep}


def run_set(
    rt: Runtime,
    bench: BenchSet,
    setting: str,
    methods: Sequence[str],
    *,
    ablation_limit: int,
    gen_limit: int,
    progress: Callable[[str], None] = print,
) -> SetRun:
    """Every method on every question of ``bench`` in ``setting``."""
    run = SetRun(bench.name, bench.kind, setting, bench.name in TUNED_SETS, list(bench.questions))
    needed: dict[str, Document] = {}
    for q in bench.questions:
        for d in _scope_docs(bench, q, setting):
            needed.setdefault(d.doc_id or "", d)
    chunks = rt.chunks_of(list(needed.values()))
    by_doc: dict[str, list[int]] = {}
    for i, c in enumerate(chunks):
        by_doc.setdefault(c.doc_id, []).append(i)
    vectors = rt.vectors_of(chunks)
    shared_handles: dict[str, dict[tuple[str, int], MemoryHandle | str]] = {}
    shared_backends: dict[str, dict[str, Any]] = {}
    for qi, q in enumerate(bench.questions):
        docs = _scope_docs(bench, q, setting)
        scope = "pooled" if setting == "pooled" else "|".join(d.doc_id or "" for d in docs)
        if scope not in shared_backends:
            idx = [i for d in docs for i in by_doc[d.doc_id or ""]]
            sub = [chunks[i] for i in idx]
            shared_backends = {
                scope: {
                    "dense": DenseIndex.from_vectors(sub, vectors[idx], rt.embedder),
                    "bm25": BM25Backend(sub),
                    "grams": _grams("\n\n".join(d.text for d in docs)),
                    "texts": [c.text for c in sub],
                }
            }
            for handles in shared_handles.values():
                for handle in handles.values():
                    if isinstance(handle, MemoryHandle):
                        handle.release()
            shared_handles = {scope: {}}
        backends = shared_backends[scope]
        handles = shared_handles[scope]
        for name in methods:
            method = METHODS[name]
            cap = ablation_limit
            if method.memory == "gist":
                cap = min(cap, GIST_LIMITS.get(bench.name, 0))
            if method.limited and qi >= cap:
                continue
            memory = None
            if method.keys == "clues" and method.memory != "blind":
                memory = _resolve_memory(
                    rt,
                    docs,
                    method,
                    run.refusals,
                    handles,
                    scope if setting != "pooled" else "pooled",
                )
                if memory is None:
                    continue
            started = time.perf_counter()
            result, timings, cached = run_method(rt, method, q, backends, memory)
            row: dict[str, Any] = {
                "set": bench.name,
                "setting": setting,
                "question_id": q.id,
                "type": q.type,
                "method": name,
                "question_index": qi,
                "ratio": memory.ratio if memory is not None else None,
                "retrieved": [p.passage.id for p in result.passages],
                "keys": [
                    {"kind": c.kind, "text": c.text, "weight": c.weight} for c in result.clues
                ],
                "cached": cached,
                **retrieval_scores(result.passages, q),
            }
            if method.keys == "clues":
                row["diagnostics"] = _diagnose(result, q, backends["dense"], backends["grams"])
            if method.generate and qi < gen_limit:
                answer, seconds, gen_cached = _answer(rt, q, result.passages, bench.kind)
                timings["generation"] = seconds
                row["answer"] = answer
                row["cached"] = cached and gen_cached
                row.update(answer_scores(answer, q, bench.kind))
            row["timings"] = timings
            run.rows.append(row)
            progress(
                f"  [{bench.name}/{setting}] q{qi + 1}/{len(bench.questions)} {name:<18} "
                f"R@5={_fmt(row['recall@5'])} mrr={_fmt(row['mrr'])} "
                f"({time.perf_counter() - started:.1f}s{', cached' if row['cached'] else ''})"
            )
        for handle in handles.values():
            if isinstance(handle, MemoryHandle) and handle.record:
                run.memories[f"{handle.backend}-r{handle.ratio}:{scope[:60]}"] = handle.record
    return run


def _fmt(x: float) -> str:
    return "  -  " if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2f}"


# ============================================================================ aggregation


@dataclass
class QualityConfig:
    data: list[Path]
    limit: int | None = None
    settings: tuple[str, ...] = ("context", "pooled")
    methods: tuple[str, ...] = (*MAIN_METHODS, *ABLATIONS)
    ablation_limit: int | None = None  # None: DEFAULT_ABLATION_LIMITS
    gen_limit: int = DEFAULT_GEN_LIMIT
    seed: int = 0
    #: Sets run in the pooled setting when ``settings`` was not chosen explicitly (MuSiQue pooled:
    #: ``--settings pooled``; it adds ~8 min of memorizing).
    pooled_sets: tuple[str, ...] = ("hotpotqa",)
    explicit_settings: bool = False


def resolve_data(paths: Sequence[Path]) -> list[Path]:
    """Set folders from ``paths``: each is a set folder (with questions.jsonl) or holds some."""
    out: list[Path] = []
    for path in paths:
        if (path / "questions.jsonl").is_file():
            out.append(path)
        elif path.is_dir():
            out += sorted(p for p in path.iterdir() if (p / "questions.jsonl").is_file())
        else:
            raise FileNotFoundError(f"{path}: not a data folder")
    if not out:
        raise FileNotFoundError(f"no data folders (with questions.jsonl) under {list(paths)}")
    return out


def run_quality(
    rt: Runtime, cfg: QualityConfig, progress: Callable[[str], None] = print
) -> dict[str, Any]:
    """Run every set and setting; returns the JSON-ready results (summaries + rows)."""
    results: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    for folder in resolve_data(cfg.data):
        name = folder.resolve().name
        limit = cfg.limit if cfg.limit is not None else DEFAULT_LIMITS.get(name, DEFAULT_LIMIT)
        bench = load_set(folder, limit=limit, seed=cfg.seed)
        for setting in cfg.settings:
            if setting == "pooled" and (
                bench.kind != "paragraph_qa"
                or (name not in cfg.pooled_sets and not cfg.explicit_settings)
            ):
                continue
            methods = [m for m in cfg.methods if setting == "context" or m in POOLED_METHODS]
            progress(
                f"[{name}/{setting}] {len(bench.questions)} questions, "
                f"methods: {', '.join(methods)}"
            )
            started = time.perf_counter()
            run = run_set(
                rt,
                bench,
                setting,
                methods,
                ablation_limit=(
                    cfg.ablation_limit
                    if cfg.ablation_limit is not None
                    else DEFAULT_ABLATION_LIMITS.get(name, 0)
                ),
                gen_limit=cfg.gen_limit,
                progress=progress,
            )
            summary = summarize(run, seed=cfg.seed)
            summary["seconds"] = time.perf_counter() - started
            summary["data"] = str(folder)
            summary["limit"] = limit
            results.append(summary)
            rows += run.rows
    return {"sets": results, "rows": rows}


def with_defaults(cfg: QualityConfig, **kw: Any) -> QualityConfig:
    return replace(cfg, **kw)


# ============================================================================ report
