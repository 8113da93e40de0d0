"""Offline head studies over ``benchmarks.heads_dump`` recordings (no model is run).

Rebuilds what ``MemoRAG()`` does on the heads route from the recorded per-(head, chunk) masses:
each head's calibrated mass per chunk (query minus "N/A", optionally normalised by the chunk's
kept entries), z-normalised over the chunks and averaged over the selected heads; that list and
the query's dense list (top ``ZSCORE_DEPTH`` each) fused by weighted z-score
(``retrieval.fusion.zscore_fusion``'s rule: a chunk a list lacks gets the list's lowest z).
Heads are selected by their own paragraph recall@2 on training questions, and every number on
the set they were chosen from is **out of fold** (k-fold: a question's heads come from the other
folds). Writes ``results/<name>.md`` and ``.json``::

    python -m benchmarks.heads_study --train dump_hotpotqa --tune dump_qmsum \\
        --test dump_musique dump_needles --name heads_study
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from benchmarks.heads_dump import OUT, load
from benchmarks.metrics import bootstrap_diff_ci
from shared_core.heads.ranker import agreement

RESULTS = Path(__file__).parent / "results"
KS = (2, 5, 10)
DEPTH = 10  # retrieved list scored, as in heads_eval
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


def questions(name: str, out: Path = OUT) -> list[Question]:
    payload, tensors = load(out, name)
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


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", required=True, help="dump the heads are chosen on")
    parser.add_argument("--tune", nargs="*", default=[], help="more tuning dumps (scored)")
    parser.add_argument("--test", nargs="*", default=[], help="untuned dumps (reported)")
    parser.add_argument("--tops", nargs="+", type=int, default=[4, 8, 12, 16, 24])
    parser.add_argument("--weights", nargs="+", type=float, default=[0.25, 0.5, 1.0, 2.0])
    parser.add_argument("--norms", nargs="+", default=["sum", "mean", "sqrt", "lift"])
    parser.add_argument("--weightings", nargs="+", default=["fixed", "agreement"])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--name", required=True)
    args = parser.parse_args(argv)
    train = questions(args.train)
    sets = {t: questions(t) for t in [args.train, *args.tune, *args.test]}
    tuning = [args.train, *args.tune]
    command = "python -m benchmarks.heads_study " + " ".join(argv or sys.argv[1:])
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
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    (RESULTS / f"{args.name}.json").write_text(
        json.dumps(
            {"command": command, "dense": base, "best": best, "chosen": chosen, "cells": table},
            indent=1,
        )
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
