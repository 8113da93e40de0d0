"""Aggregate per-question rows into summaries (means, paired bootstrap CIs against dense,
timings, clue diagnostics) and render them as Markdown tables."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from benchmarks.methods import GEN_K, KS, METHODS, SWEEP_WEIGHTS
from benchmarks.metrics import bootstrap_diff_ci

if TYPE_CHECKING:
    from benchmarks.scoring import SetRun

RETRIEVAL_METRICS = (*(f"recall@{k}" for k in KS), "all@5", "mrr")
ANSWER_METRICS = ("em", "f1", "contains", "rouge1", "rouge2", "rougeL")
TIMING_PARTS = ("clues", "search", "fusion", "generation")


def _mean(values: Iterable[float]) -> float | None:
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return float(np.mean(vals)) if vals else None


def summarize(run: SetRun, seed: int = 0) -> dict[str, Any]:
    """Per-method means, paired bootstrap CIs against dense, timings and diagnostics."""
    by_method: dict[str, dict[str, dict[str, Any]]] = {}
    for row in run.rows:
        by_method.setdefault(row["method"], {})[row["question_id"]] = row
    dense = by_method.get("dense", {})
    methods: dict[str, Any] = {}
    for name, rows in by_method.items():
        entry: dict[str, Any] = {
            "n": len(rows),
            "description": METHODS[name].description,
            "family": METHODS[name].family,
        }
        ratios = sorted({r["ratio"] for r in rows.values() if r["ratio"] is not None})
        entry["ratio"] = ratios
        for metric in (*RETRIEVAL_METRICS, *ANSWER_METRICS):
            vals = [r.get(metric) for r in rows.values()]
            mean = _mean(v for v in vals if v is not None)
            if mean is None:
                continue
            entry[metric] = mean
            entry[f"n_{metric}"] = sum(
                1 for v in vals if v is not None and not (isinstance(v, float) and math.isnan(v))
            )
            if name == "dense":
                continue
            pairs = [
                (r[metric], dense[qid][metric])
                for qid, r in rows.items()
                if qid in dense and _defined(r.get(metric)) and _defined(dense[qid].get(metric))
            ]
            if pairs:
                a, b = zip(*pairs, strict=True)
                diff, lo, hi = bootstrap_diff_ci(a, b, seed=seed)
                entry[f"delta_{metric}"] = {
                    "mean": diff,
                    "lo": lo,
                    "hi": hi,
                    "n": len(pairs),
                    "dense_mean": float(np.mean(b)),
                    "wins": sum(x > y for x, y in pairs),
                    "losses": sum(x < y for x, y in pairs),
                }
        timing: dict[str, float] = {}
        for part in (*TIMING_PARTS, "clue_tokens"):
            vals = [r["timings"].get(part) for r in rows.values() if part in r["timings"]]
            if vals:
                timing[part] = float(np.median(vals))
        entry["timings_median_s"] = timing
        diag = [r["diagnostics"] for r in rows.values() if "diagnostics" in r]
        if diag:
            entry["clue_stats"] = _clue_stats(diag)
        methods[name] = entry
    return {
        "set": run.name,
        "kind": run.kind,
        "setting": run.setting,
        "tuned": run.tuned,
        "questions": len(run.questions),
        "methods": methods,
        "refusals": run.refusals,
        "memories": run.memories,
    }


def _defined(v: Any) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def _clue_stats(diags: Sequence[dict[str, Any]]) -> dict[str, Any]:
    clues = [c for d in diags for c in d["clues"]]
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for c in clues:
        by_kind.setdefault(c["kind"], []).append(c)
    stats: dict[str, Any] = {
        "questions": len(diags),
        "clues_per_question": len(clues) / max(len(diags), 1),
        "no_clue_share": sum(1 for d in diags if not d["clues"]) / max(len(diags), 1),
        "by_kind": {},
        "sweep": {},
    }
    for kind, items in by_kind.items():
        stats["by_kind"][kind] = {
            "n": len(items),
            "copy_rate": _mean(c["copy_rate"] for c in items),
            "copied_share": _mean(
                float(c["copy_rate"] >= 0.8) for c in items if _defined(c["copy_rate"])
            ),
            "recall@5_alone": _mean(c["recall@5"] for c in items),
            "new_gold@5_share": _mean(float(c["new_gold@5"]) for c in items),
        }
    for weight in (*SWEEP_WEIGHTS, "interleave"):
        stats["sweep"][str(weight)] = {
            metric: _mean(d["sweep"][str(weight)][metric] for d in diags)
            for metric in ("recall@5", "mrr")
        }
    return stats


# ============================================================================ entry point


def _pct(x: Any) -> str:
    return "–" if x is None else f"{x:.3f}"


def _delta(entry: Mapping[str, Any], metric: str) -> str:
    d = entry.get(f"delta_{metric}")
    if not d:
        return "–"
    mark = "**" if d["lo"] > 0 or d["hi"] < 0 else ""
    return f"{mark}{d['mean']:+.3f}{mark} [{d['lo']:+.2f}, {d['hi']:+.2f}]"


def render_markdown(results: Mapping[str, Any]) -> str:
    """Tables for every (set, setting): retrieval, answers, ablations, clue diagnostics."""
    out: list[str] = []
    for s in results["sets"]:
        tag = "tuning set" if s["tuned"] else "untuned check"
        out.append(f"### {s['set']} — {s['setting']} setting ({tag}, {s['questions']} questions)")
        out.append("")
        grouped: dict[tuple[str, int], list[dict[str, Any]]] = {}
        for r in s["refusals"]:
            grouped.setdefault((r["backend"], r["ratio"]), []).append(r)
        for (backend, ratio), items in grouped.items():
            scopes = len({r["scope"] for r in items})
            methods = ", ".join(sorted({r["method"] for r in items}))
            out.append(
                f"- refused: {backend} ratio {ratio} for {scopes} context(s) ({methods}): "
                f"{items[0]['error'][:170]}"
            )
        if s["refusals"]:
            out.append("")
        methods = s["methods"]
        out.append(
            "| method | ratio | n | R@2 | R@5 | R@10 | all@5 | MRR | ΔR@5 vs dense [95% CI] "
            "| ΔMRR vs dense [95% CI] |"
        )
        out.append("|---|---|---|---|---|---|---|---|---|---|")
        for name, e in methods.items():
            if "recall@5" not in e:
                continue
            ratio = ",".join(str(r) for r in e["ratio"]) or "–"
            out.append(
                f"| {name} | {ratio} | {e['n_recall@5']} | {_pct(e.get('recall@2'))} "
                f"| {_pct(e.get('recall@5'))} | {_pct(e.get('recall@10'))} "
                f"| {_pct(e.get('all@5'))} | {_pct(e.get('mrr'))} "
                f"| {_delta(e, 'recall@5')} | {_delta(e, 'mrr')} |"
            )
        out.append("")
        answer_metrics = (
            ("rouge1", "rouge2", "rougeL") if s["kind"] == "meeting" else ("em", "f1", "contains")
        )
        gen = {n: e for n, e in methods.items() if answer_metrics[1] in e}
        if gen:
            head = " | ".join(answer_metrics)
            main = answer_metrics[1]
            out.append(
                f"| method (answers, top-{GEN_K} passages) | n | {head} "
                f"| Δ{main} vs dense [95% CI] |"
            )
            out.append("|---|---|" + "---|" * len(answer_metrics) + "---|")
            for name, e in gen.items():
                vals = " | ".join(_pct(e.get(m)) for m in answer_metrics)
                out.append(f"| {name} | {e[f'n_{main}']} | {vals} | {_delta(e, main)} |")
            out.append("")
        diag = {n: e["clue_stats"] for n, e in methods.items() if "clue_stats" in e}
        if diag:
            out.append(
                "| clue method | kind | clues/q | copied from text | R@5 of the clue alone "
                "| finds gold the query misses |"
            )
            out.append("|---|---|---|---|---|---|")
            for name, st in diag.items():
                for kind, k in st["by_kind"].items():
                    out.append(
                        f"| {name} | {kind} | {k['n'] / max(st['questions'], 1):.2f} "
                        f"| {_pct(k['copied_share'])} | {_pct(k['recall@5_alone'])} "
                        f"| {_pct(k['new_gold@5_share'])} |"
                    )
            out.append("")
            weights = [str(w) for w in SWEEP_WEIGHTS] + ["interleave"]
            heads = {"0.0": "clues only", "interleave": "interleave"}
            out.append(
                "| R@5 / MRR by fusion (RRF: the query weighs w, each clue 1) | "
                + " | ".join(heads.get(w, f"w={w}") for w in weights)
                + " |"
            )
            out.append("|---|" + "---|" * len(weights))
            for name, st in diag.items():
                cells = []
                for w in weights:
                    cell = st["sweep"].get(w)
                    cells.append(
                        "–" if not cell else f"{_pct(cell['recall@5'])} / {_pct(cell['mrr'])}"
                    )
                out.append(f"| {name} | {' | '.join(cells)} |")
            out.append("")
    return "\n".join(out)
