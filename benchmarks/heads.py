"""Retrieval heads: offline head studies and the heads pass's latency.

``heads-dump`` records every head's attention per chunk, once per question; ``heads-study``
then chooses heads, normalisation and fusion weight offline from the recordings (no model);
``heads-latency`` times the pass on a ~100k-token memory. The shipped head set's size and the
heads defaults were chosen with dump + study (``benchmarks/reports/2026-12-heads-study.md``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from benchmarks.datasets import load_set
from benchmarks.metrics import DEPTH, KS, bootstrap_diff_ci, covers, environment
from benchmarks.registry import DUMPS, RESULTS, command, data_dir
from benchmarks.retrieval import select
from shared_core.heads.ranker import agreement
from shared_core.pipeline import MemoRAG
from shared_core.types import Document

DUMP_DOC = """Record every head's attention per chunk, once per question, for offline head studies.

For each question (context setting: its own documents are the memory) the shipped
``MemoRAG()`` memorizes the documents and runs one query pass with **all** heads of the
memory model. Per (head, chunk of the engine's index) it records the query's mass, the "N/A"
question's mass and the number of kept entries; per chunk the query's cosine similarity
(the dense list) and which gold items the chunk covers. ``heads-study`` then selects heads,
normalises and fuses offline, the way ``MemoRAG()`` does, without the model.
``--setting pooled`` memorizes every selected question's documents as one memory and asks
each question of it. Tensors go to ``results/dumps/<name>.safetensors`` (float64), the rest to
``<name>.json`` (not committed); both are rewritten every 5 questions (``--resume``
continues an interrupted run)."""

STUDY_DOC = """Offline head studies over ``heads-dump`` recordings (no model is run).

Rebuilds what ``MemoRAG()`` does on the heads route from the recorded per-(head, chunk)
masses: each head's calibrated mass per chunk (query minus "N/A", optionally normalised by
the chunk's kept entries), z-normalised over the chunks and averaged over the selected heads;
that list and the query's dense list (top ``ZSCORE_DEPTH`` each) fused by weighted z-score
(``retrieval.fusion.zscore_fusion``'s rule). Heads are selected by their own recall@2 on the
training questions, and every number on the set they were chosen from is **out of fold**."""

LATENCY_DOC = """The retrieval heads' query pass on a ~100k-token memory.

A real memory (``MemoRAG()`` defaults, the first ``--chars`` of the longbook_needles book) is
tiled to ``--entries`` entries per layer and KV head (7,700: what a ~100k-token text keeps
once compressed to fit SmolLM2's 8,192 positions); ``--memory DIR`` times a saved memory as it
is instead (e.g. the whole novel saved by ``heads-dump --save-memory``). Timed per query: the
heads pass with "N/A" cached, the first query on a memory, and the whole ``retrieve``."""


# ------------------------------------------------------------------------------ heads-dump


def record(
    base: Any, docs: Sequence[Any], q: Any, memorize: bool = True
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Memorize ``docs`` (unless the memory holds them) and record the all-heads pass of ``q``
    (tensors, metadata)."""
    import torch

    from shared_core.heads.ranker import chunk_keys, score_chunks
    from shared_core.heads.route import query_similarity
    from shared_core.memory.attention_probe import EntryAttention

    started = time.perf_counter()
    if memorize:
        base.memorize(list(docs))
    memorize_s = time.perf_counter() - started
    memory, index = base.memory, base.index
    n_layers, n_heads = memory.head_grid()
    heads = [(layer, h) for layer in range(n_layers) for h in range(n_heads)]
    chunks = list(index.chunks)
    keys = chunk_keys(memory, chunks)
    started = time.perf_counter()
    attention = memory.entry_attention(q.question, heads)
    pass_s = time.perf_counter() - started
    null = memory._null_mass[tuple(heads)][1]  # the "N/A" mass the pass subtracted

    def per_chunk(mass: torch.Tensor) -> torch.Tensor:
        return score_chunks(
            EntryAttention(attention.heads, mass, attention.origins, attention.token_map), keys
        )

    sims = query_similarity(index, q.question, {c.chunk_id for c in chunks})
    tensors = {
        "query": per_chunk(attention.mass + null),
        "null": per_chunk(null),
        "entries": per_chunk(torch.ones_like(null)),
        "dense": torch.tensor([sims[c.chunk_id] for c in chunks], dtype=torch.float64),
    }
    spans = [(str(c.doc_id), int(c.start), int(c.end)) for c in chunks]
    meta = {
        "id": q.id,
        "type": q.type,
        "question": q.question,
        "chunks": len(chunks),
        "gold_items": len(q.gold),
        "covers": [[g for g, item in enumerate(q.gold) if covers(s, item)] for s in spans],
        "tokens": memory.stats().tokens_read,
        "memorize_s": round(memorize_s, 2),
        "pass_s": round(pass_s, 3),
    }
    return tensors, meta


def save_dump(out: Path, name: str, payload: dict[str, Any], tensors: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out / f"{name}.safetensors"))
    (out / f"{name}.json").write_text(json.dumps(payload, indent=1))


def load_dump(out: Path, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A dump's metadata and tensors (``q<i>.<kind>``)."""
    from safetensors.torch import load_file

    payload = json.loads((out / f"{name}.json").read_text())
    return payload, load_file(str(out / f"{name}.safetensors"))


@command("heads-dump", "record every head's attention per chunk, once per question")
def dump_main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks heads-dump", description=DUMP_DOC)
    parser.add_argument("--set", required=True)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--setting", choices=["context", "pooled"], default="context")
    parser.add_argument("--scopes", nargs="*", default=[], help="only these documents' questions")
    parser.add_argument("--per-scope", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--save-memory", type=Path, help="save the (last) memorized MemoRAG here")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--name", required=True)
    parser.add_argument("--out", type=Path, default=DUMPS)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    bench = load_set(data_dir(args.set))
    questions = select(bench, args.start, args.limit, args.scopes, args.per_scope)
    payload: dict[str, Any] = {
        "command": "python -m benchmarks heads-dump " + " ".join(argv or sys.argv[1:]),
        "env": environment(),
        "set": args.set,
        "rows": [],
    }
    tensors: dict[str, Any] = {}
    if args.resume and (args.out / f"{args.name}.json").exists():
        payload, tensors = load_dump(args.out, args.name)
    done = {r["id"] for r in payload["rows"]}
    seen: dict[str, Any] = {}
    for other in questions:  # the pooled setting: every question's documents in one memory
        for d in bench.scoped_documents(other):
            seen.setdefault(d.doc_id, d)
    pooled = list(seen.values())
    base = MemoRAG()
    held = None
    for n, q in enumerate(questions, 1):
        if q.id in done:
            continue
        docs = pooled if args.setting == "pooled" else bench.scoped_documents(q)
        scope = tuple(d.doc_id for d in docs)
        got, meta = record(base, docs, q, memorize=scope != held)
        if args.save_memory is not None and scope != held:
            base.save(args.save_memory, overwrite=True)
        held = scope
        i = len(payload["rows"])
        tensors.update({f"q{i}.{k}": v for k, v in got.items()})
        payload["rows"].append(meta)
        print(
            f"{args.set} {n}/{len(questions)} {meta['tokens']} tokens, memorize "
            f"{meta['memorize_s']} s, pass {meta['pass_s']} s",
            file=sys.stderr,
            flush=True,
        )
        if n % 5 == 0 or n == len(questions):
            save_dump(args.out, args.name, payload, tensors)
    save_dump(args.out, args.name, payload, tensors)


# ----------------------------------------------------------------------------- heads-study

ZSCORE_DEPTH = 50  # each list's depth under z-score fusion (heads/route.py)
QUERY_WEIGHT = 2.0


@dataclass(frozen=True)
class Question:
    id: str
    query: torch.Tensor  # [heads, chunks] query mass per chunk
    null: torch.Tensor  # [heads, chunks] "N/A" mass per chunk
    entries: torch.Tensor  # [heads, chunks] kept entries per chunk
    dense: torch.Tensor  # [chunks] cosine similarity to the query
    covers: list[list[int]]  # per chunk, the gold items it covers
    gold_items: int


def questions(name: str, out: Path = DUMPS) -> list[Question]:
    payload, tensors = load_dump(out, name)
    return [
        Question(
            r["id"],
            tensors[f"q{i}.query"],
            tensors[f"q{i}.null"],
            tensors[f"q{i}.entries"],
            tensors[f"q{i}.dense"],
            r["covers"],
            r["gold_items"],
        )
        for i, r in enumerate(payload["rows"])
        if r["gold_items"]
    ]


def head_mass(q: Question, norm: str = "sum") -> torch.Tensor:
    """Calibrated mass per (head, chunk): ``sum`` (shipped: query minus "N/A"), ``mean`` (per
    kept entry), ``sqrt`` (divided by the square root of the entries) or ``lift``
    (``log(query / "N/A")``: a bias shared by both questions, such as recency, cancels)."""
    if norm == "lift":
        eps = 1e-6
        return torch.log((q.query + eps) / (q.null + eps))
    mass = q.query - q.null
    if norm == "sum":
        return mass
    n = q.entries.clamp_min(1.0)
    return mass / (n if norm == "mean" else n.sqrt())


def zscores(x: torch.Tensor) -> torch.Tensor:
    """z over the last axis (sample std, as ``ranker.combine``)."""
    if x.shape[-1] < 2:
        return torch.zeros_like(x)
    return (x - x.mean(-1, keepdim=True)) / x.std(-1, keepdim=True).clamp_min(1e-12)


def ranks_of(order: Sequence[int], q: Question) -> list[int]:
    """1-based rank of each gold item in ``order`` (0: not in the top ``DEPTH``)."""
    ranks = [0] * q.gold_items
    for pos, c in enumerate(order[:DEPTH], 1):
        for g in q.covers[c]:
            if ranks[g] == 0:
                ranks[g] = pos
    return ranks


def _list_z(scores: torch.Tensor) -> torch.Tensor:
    """Z over a list's top ``ZSCORE_DEPTH`` hits (population std); the rest get the floor."""
    n = scores.shape[0]
    top = torch.argsort(scores, descending=True, stable=True)[: min(ZSCORE_DEPTH, n)]
    vals = scores[top]
    std = vals.std(unbiased=False)
    z = (vals - vals.mean()) / (std if std > 0 else 1.0)
    out = torch.full_like(scores, float(z.min()))
    out[top] = z
    return out


def fused_order(q: Question, heads_score: torch.Tensor | None, weight: float) -> list[int]:
    """Chunks best first: dense alone (``heads_score`` None or weight 0) or z-score fusion."""
    if heads_score is None or weight == 0:
        return torch.argsort(q.dense, descending=True, stable=True).tolist()
    total = QUERY_WEIGHT * _list_z(q.dense) + weight * _list_z(heads_score)
    # ties: the better dense rank first (zscore_fusion breaks ties by best single rank)
    dense_rank = torch.empty_like(q.dense)
    dense_rank[torch.argsort(q.dense, descending=True, stable=True)] = torch.arange(
        len(q.dense), dtype=q.dense.dtype
    )
    keyed = sorted(range(len(total)), key=lambda c: (-float(total[c]), float(dense_rank[c])))
    return keyed


def heads_score(q: Question, heads: Sequence[int], norm: str = "sum") -> torch.Tensor:
    return zscores(head_mass(q, norm)[list(heads)]).mean(0)


def metrics(ranks: list[int]) -> dict[str, float]:
    out = {f"r@{k}": sum(1 for r in ranks if 0 < r <= k) / len(ranks) for k in KS}
    found = [r for r in ranks if r > 0]
    out["mrr"] = 1.0 / min(found) if found else 0.0
    return out


def head_recall(qs: Sequence[Question], norm: str = "sum", at: int = 2) -> torch.Tensor:
    """Every head's mean recall@``at`` alone over ``qs`` (the calibration criterion)."""
    total = None
    for q in qs:
        mass = head_mass(q, norm)
        gold = torch.zeros(mass.shape[1], q.gold_items, dtype=torch.float64)
        for c, items in enumerate(q.covers):
            for g in items:
                gold[c, g] = 1.0
        top = torch.topk(mass, min(at, mass.shape[1]), dim=1).indices  # [heads, at]
        found = gold[top].amax(dim=1).sum(dim=1) / q.gold_items  # gold items covered
        total = found if total is None else total + found
    assert total is not None
    return total / len(qs)


def pick(qs: Sequence[Question], top: int, norm: str = "sum") -> list[int]:
    return torch.argsort(head_recall(qs, norm), descending=True, stable=True)[:top].tolist()


def list_weight(q: Question, heads: Sequence[int], weight: float, weighting: str) -> float:
    """The heads list's fusion weight, as ``heads.route.AttentionRoute.list_weight``."""
    if weighting == "fixed":
        return weight
    return weight * max(0.0, agreement(q.query[list(heads)] - q.null[list(heads)]))


def evaluate(
    qs: Sequence[Question],
    heads_for: Any,
    weight: float,
    norm: str = "sum",
    weighting: str = "fixed",
) -> list[dict[str, float]]:
    """Per question metrics; ``heads_for(i)`` gives question i's head list (None: dense)."""
    rows = []
    for i, q in enumerate(qs):
        heads = heads_for(i)
        score, w = None, weight
        if heads is not None:
            score, w = heads_score(q, heads, norm), list_weight(q, heads, weight, weighting)
        rows.append(metrics(ranks_of(fused_order(q, score, w), q)))
    return rows


def folds(n: int, k: int) -> list[int]:
    """Fold of each question (in file order, round robin)."""
    return [i % k for i in range(n)]


class HeadChoice:
    """The heads each question gets: chosen on the training questions, or, for a question of
    the training set (by id, in any dump), on the folds without it."""

    def __init__(self, train: Sequence[Question], top: int, norm: str, k: int) -> None:
        fold = folds(len(train), k)
        self.fold = {q.id: f for q, f in zip(train, fold, strict=True)}
        self.all = pick(train, top, norm)
        self.by_fold = {
            f: pick([q for q, g in zip(train, fold, strict=True) if g != f], top, norm)
            for f in range(k)
        }

    def heads(self, q: Question) -> list[int]:
        f = self.fold.get(q.id)
        return self.all if f is None else self.by_fold[f]


def evaluate_choice(
    qs: Sequence[Question],
    choice: HeadChoice | None,
    weight: float,
    norm: str = "sum",
    weighting: str = "fixed",
) -> list[dict[str, float]]:
    def heads_for(i: int) -> list[int] | None:
        return None if choice is None else choice.heads(qs[i])

    return evaluate(qs, heads_for, weight, norm, weighting)


def mean(rows: Sequence[dict[str, float]], key: str) -> float:
    return statistics.fmean(r[key] for r in rows)


def ci(a: Sequence[dict[str, float]], b: Sequence[dict[str, float]], key: str) -> list[float]:
    return list(bootstrap_diff_ci([r[key] for r in a], [r[key] for r in b]))


@command("heads-study", "choose heads and fusion offline from heads-dump recordings")
def study_main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks heads-study", description=STUDY_DOC)
    parser.add_argument("--train", required=True, help="dump the heads are chosen on")
    parser.add_argument("--tune", nargs="*", default=[], help="more tuning dumps (scored)")
    parser.add_argument("--test", nargs="*", default=[], help="untuned dumps (reported)")
    parser.add_argument("--tops", nargs="+", type=int, default=[4, 8, 12, 16, 24])
    parser.add_argument("--weights", nargs="+", type=float, default=[0.25, 0.5, 1.0, 2.0])
    parser.add_argument("--norms", nargs="+", default=["sum", "mean", "sqrt", "lift"])
    parser.add_argument("--weightings", nargs="+", default=["fixed", "agreement"])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--name", required=True)
    parser.add_argument("--dumps", type=Path, default=DUMPS, help="where the recordings are")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    train = questions(args.train, args.dumps)
    sets = {t: questions(t, args.dumps) for t in [args.train, *args.tune, *args.test]}
    tuning = [args.train, *args.tune]
    command = "python -m benchmarks heads-study " + " ".join(argv or sys.argv[1:])
    table: list[dict[str, Any]] = []
    dense = {t: evaluate_choice(qs, None, 0) for t, qs in sets.items()}
    grid = [
        (n, t, g, w)
        for g in args.weightings
        for n in args.norms
        for t in args.tops
        for w in args.weights
    ]
    choices: dict[tuple[int, str], HeadChoice] = {}
    for norm, top, weighting, w in grid:
        if (top, norm) not in choices:
            choices[top, norm] = HeadChoice(train, top, norm, args.folds)
        cell: dict[str, Any] = {"norm": norm, "top": top, "weighting": weighting, "weight": w}
        for t, qs in sets.items():
            rows = evaluate_choice(qs, choices[top, norm], w, norm, weighting)
            cell[t] = {m: mean(rows, m) for m in ("r@2", "r@5", "r@10", "mrr")}
            cell[t]["r@5_vs_dense"] = ci(rows, dense[t], "r@5")
            cell[t]["mrr_vs_dense"] = ci(rows, dense[t], "mrr")
        cell["tuning_r@5"] = statistics.fmean(cell[t]["r@5"] for t in tuning)
        # the "never below dense", on point estimates, on every tuning set
        cell["never_below"] = all(
            cell[t][m] >= mean(dense[t], m) - 1e-9 for t in tuning for m in ("r@5", "mrr")
        )
        table.append(cell)
        print(
            f"{norm} top{top} {weighting} w{w}: tuning {cell['tuning_r@5']:.3f} "
            + " ".join(f"{t} {cell[t]['r@5']:.3f}/{cell[t]['mrr']:.3f}" for t in sets),
            file=sys.stderr,
        )
    best = max(table, key=lambda c: c["tuning_r@5"])
    safe = [c for c in table if c["never_below"]]
    chosen = max(safe, key=lambda c: c["tuning_r@5"]) if safe else None
    base = {t: {m: mean(dense[t], m) for m in ("r@2", "r@5", "r@10", "mrr")} for t in sets}

    def named(c: dict[str, Any] | None) -> str:
        if c is None:
            return "none"
        return (
            f"norm {c['norm']}, {c['top']} heads, {c['weighting']} weighting, heads_weight "
            f"{c['weight']} (tuning R@5 {c['tuning_r@5']:.3f})"
        )

    lines = [
        "# Offline head study: selection size, per-chunk normalisation, fusion weight",
        "",
        f"Command: `{command}`  ",
        f"Heads chosen on `{args.train}` ({len(train)} questions, by each head's recall@2). "
        f"Every question of that set, in any dump, gets heads chosen without it "
        f"({args.folds}-fold, out of fold). Tuning sets (the `tuning R@5` column is their mean): "
        + ", ".join(f"`{t}`" for t in tuning)
        + ". Untuned: "
        + (", ".join(f"`{t}`" for t in args.test) or "none")
        + ". Query weight 2. Questions: "
        + ", ".join(f"{t} {len(q)}" for t, q in sets.items())
        + ".",
        "",
        "Dense R@5 / MRR: "
        + ", ".join(f"{t} {base[t]['r@5']:.3f} / {base[t]['mrr']:.3f}" for t in sets),
        "",
        f"- Best tuning R@5: {named(best)}.",
        f"- **Chosen** (best tuning R@5 among the cells with R@5 and MRR at least dense's on "
        f"every tuning set, the `≥ dense` column): {named(chosen)}.",
        "",
        "| norm | heads | weighting | heads_weight | tuning R@5 | ≥ dense | "
        + " | ".join(f"{t} R@5 (Δ dense [95% CI]) | {t} MRR Δ" for t in sets)
        + " |",
        "|---|---|---|---|---|---|" + "---|---|" * len(sets),
    ]
    for c in table:
        cells = []
        for t in sets:
            d, m = c[t]["r@5_vs_dense"], c[t]["mrr_vs_dense"]
            cells.append(f"{c[t]['r@5']:.3f} ({d[0]:+.3f} [{d[1]:+.3f}, {d[2]:+.3f}])")
            cells.append(f"{m[0]:+.3f} [{m[1]:+.3f}, {m[2]:+.3f}]")
        lines.append(
            f"| {c['norm']} | {c['top']} | {c['weighting']} | {c['weight']} | "
            f"{c['tuning_r@5']:.3f} | {'yes' if c['never_below'] else 'no'} | "
            + " | ".join(cells)
            + " |"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    (args.out / f"{args.name}.json").write_text(
        json.dumps(
            {"command": command, "dense": base, "best": best, "chosen": chosen, "cells": table},
            indent=1,
        )
    )
    print("\n".join(lines))


# --------------------------------------------------------------------------- heads-latency

QUESTIONS = [
    "Which paragraph names the river number {i}?",
    "Where does Victor first see the creature after it leaves the laboratory ({i})?",
    "What did the letter from Elizabeth say about Justine? {i}",
]


def tiled(pipe: MemoRAG, entries: int) -> None:
    """Tile the memory's tensors to ``entries`` (benchmark only: touches the private state)."""
    memory = pipe.memory
    state = memory._state
    reps = -(-entries // state.entries)

    def tile(ts, dim):
        return tuple(torch.cat([t] * reps, dim=dim).narrow(dim, 0, entries).clone() for t in ts)

    memory._state = replace(
        state,
        keys=tile(state.keys, -2),
        values=tile(state.values, -2),
        positions=tile(state.positions, -1),
        origins=tile(state.origins, -1),
        next_position=min(memory.max_positions - 64, entries),
    )


def clocked(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def summary(pairs: list[tuple[float, float]]) -> dict[str, float]:
    walls, cpus = [w for w, _ in pairs], [c for _, c in pairs]
    return {
        "median_s": statistics.median(walls),
        "min_s": min(walls),
        "max_s": max(walls),
        "cpu_median_s": statistics.median(cpus),
    }


@command("heads-latency", "time the heads pass and retrieve on a ~100k-token memory")
def latency_main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks heads-latency", description=LATENCY_DOC)
    ap.add_argument("--entries", type=int, default=7700)
    ap.add_argument("--chars", type=int, default=20000)
    ap.add_argument("--memory", type=Path, help="a saved MemoRAG to time as it is")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument("--name", default="heads_latency")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory is not None:  # with today's shipped head set, not the one the save holds
        from shared_core.head_sets import shipped_head_sets

        pipe = MemoRAG(head_set=shipped_head_sets()[0]).load(args.memory)
    else:
        book = json.loads((data_dir("longbook_needles") / "documents.jsonl").open().readline())
        pipe = MemoRAG()
        pipe.memorize([Document(book["text"][: args.chars], book["doc_id"])])
        tiled(pipe, args.entries)
    memory = pipe.memory
    heads = pipe._retriever.route.active_head_set(memory).heads
    load0 = os.getloadavg()
    memory.entry_attention("warm-up question?", heads)
    pipe.retrieve("warm-up question?", 5)
    runs: dict[str, list[tuple[float, float]]] = {"pass": [], "first": [], "retrieve": []}
    parts: dict[str, list[float]] = {"heads": [], "search": []}
    for i in range(args.repeats):
        q = QUESTIONS[i % len(QUESTIONS)].format(i=i)
        runs["pass"].append(clocked(lambda q=q: memory.entry_attention(q, heads)))
        memory._null_mass = {}  # the first query on a memory: "N/A" is not cached yet
        runs["first"].append(clocked(lambda q=q: memory.entry_attention(q, heads)))
        got: list = []
        runs["retrieve"].append(clocked(lambda q=q, got=got: got.append(pipe.retrieve(q + "!", 5))))
        for part, seconds in parts.items():
            seconds.append(got[0].timings.get(part, float("nan")))
    load1 = os.getloadavg()
    payload = {
        "command": "python -m benchmarks heads-latency " + " ".join(argv or sys.argv[1:]),
        "entries": memory._state.entries,
        "heads": [list(h) for h in heads],
        "torch_threads": torch.get_num_threads(),
        "loadavg_start": load0,
        "loadavg_end": load1,
        "repeats": args.repeats,
        **{name: summary(pairs) for name, pairs in runs.items()},
        **{f"retrieve_{p}_median_s": statistics.median(v) for p, v in parts.items()},
    }
    stats = memory.stats()
    payload["memory"] = "saved" if args.memory else "tiled"
    payload["tokens_read"] = stats.tokens_read
    lines = [
        "# Heads query pass on a ~100k-token memory",
        "",
        f"Command: `{payload['command']}`  ",
        ("a saved memory of " if args.memory else "a tiled memory (")
        + f"{stats.tokens_read:,} tokens read{'' if args.memory else ')'}, "
        f"{payload['entries']:,} entries per layer and KV head, heads {payload['heads']}, "
        f"torch threads {payload['torch_threads']}, load average {load0[0]:.1f} at start, "
        f"{load1[0]:.1f} at end (2 cores), {args.repeats} repeats",
        "",
        "| what | median s | min s | max s | CPU s (median) |",
        "|---|---|---|---|---|",
    ]
    for name, label in (
        ("pass", 'heads pass ("N/A" cached)'),
        ("first", 'first query on a memory (query + "N/A")'),
        ("retrieve", "`retrieve` on the heads route (all of it)"),
    ):
        s = payload[name]
        lines.append(
            f"| {label} | {s['median_s']:.3f} | {s['min_s']:.3f} | {s['max_s']:.3f} "
            f"| {s['cpu_median_s']:.3f} |"
        )
    lines += [
        "",
        f"Inside `retrieve` (medians): heads {payload['retrieve_heads_median_s']:.3f} s, dense "
        f"search (embedding the query) {payload['retrieve_search_median_s']:.3f} s.",
    ]
    text = "\n".join(lines)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(payload, indent=1) + "\n")
    (args.out / f"{args.name}.md").write_text(text + "\n")
    return 0
