"""Per-question scores: evidence ranks, recall@k / all@k / MRR, answer metrics, copy rate."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from benchmarks.datasets import BenchQuestion
from benchmarks.methods import KS
from benchmarks.metrics import (
    all_hit_at_k,
    contains_answer,
    evidence_hits,
    exact_match,
    list_item_f1,
    mrr,
    recall_at_k,
    rouge_l,
    rouge_n,
    spans_of,
    token_f1,
)


def retrieval_scores(passages: Sequence[Any], question: BenchQuestion) -> dict[str, Any]:
    """Ranks of each gold item and recall@k / all@k / MRR (``nan`` without gold)."""
    spans = spans_of(passages)
    ranks = evidence_hits(spans, question.gold)
    row: dict[str, Any] = {"ranks": ranks}
    for k in KS:
        row[f"recall@{k}"] = recall_at_k(ranks, k)
        row[f"all@{k}"] = all_hit_at_k(ranks, k)
    row["mrr"] = mrr(ranks)
    return row


def answer_scores(prediction: str, question: BenchQuestion, kind: str) -> dict[str, float]:
    if kind == "meeting":
        return {
            "rouge1": max(rouge_n(prediction, a, 1) for a in question.answers),
            "rouge2": max(rouge_n(prediction, a, 2) for a in question.answers),
            "rougeL": max(rouge_l(prediction, a) for a in question.answers),
        }
    scores = {
        "em": exact_match(prediction, question.answers),
        "f1": token_f1(prediction, question.answers),
        "contains": contains_answer(prediction, question.answers),
    }
    if question.type == "aggregation_list":
        scores["f1"] = list_item_f1(prediction, question.answers)
        scores["contains"] = float(scores["f1"] == 1.0)
    return scores


_WORDS = re.compile(r"[a-z0-9]+")


def _grams(text: str, n: int = 3) -> set[tuple[str, ...]]:
    words = _WORDS.findall(text.lower())
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def copy_rate(clue: str, context_grams: set[tuple[str, ...]]) -> float:
    """Share of the clue's word trigrams found in the memorized text (1.0: copied)."""
    grams = _grams(clue)
    if not grams:
        return math.nan
    return sum(1 for g in grams if g in context_grams) / len(grams)


# ============================================================================ running


@dataclass
class SetRun:
    """One (set, setting): its questions, per-question rows and notes."""

    name: str
    kind: str
    setting: str
    tuned: bool
    questions: list[BenchQuestion]
    rows: list[dict[str, Any]] = field(default_factory=list)
    refusals: list[dict[str, Any]] = field(default_factory=list)
    memories: dict[str, dict[str, Any]] = field(default_factory=dict)
