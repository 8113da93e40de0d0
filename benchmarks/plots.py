"""PNG plots of benchmark results (matplotlib, headless): recall@k curves per method, latency
breakdown bars, memory scaling lines."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

PARTS = ("clues", "search", "fusion", "generation")
PART_LABELS = {
    "clues": "clue / key writing",
    "search": "searches",
    "fusion": "fusion",
    "generation": "answer generation",
}
_STYLE = {
    "dense": ("black", "-"),
    "bm25": ("tab:gray", "--"),
    "hyde": ("tab:blue", "-"),
    "multi_query": ("tab:cyan", "-"),
    "memorag": ("tab:red", "-"),
}


def _style(name: str) -> tuple[str | None, str]:
    return _STYLE.get(name, (None, ":"))


def recall_curve(rows: Sequence[Mapping[str, Any]], max_k: int = 10) -> list[float]:
    """Mean recall@k, k = 1..max_k, from per-question gold ranks (no-gold questions skipped)."""
    curves = []
    usable = [r["ranks"] for r in rows if r.get("ranks")]
    for k in range(1, max_k + 1):
        if not usable:
            curves.append(math.nan)
            continue
        curves.append(
            sum(sum(1 for x in rk if 0 < x <= k) / len(rk) for rk in usable) / len(usable)
        )
    return curves


def quality_plots(payload: Mapping[str, Any], out: Path, prefix: str = "quality") -> list[Path]:
    """One recall@k figure per (set, setting): main methods solid, ablations dotted."""
    paths = []
    groups: dict[tuple[str, str], dict[str, list[Mapping[str, Any]]]] = {}
    for row in payload["rows"]:
        groups.setdefault((row["set"], row["setting"]), {}).setdefault(row["method"], []).append(
            row
        )
    for (set_name, setting), by_method in groups.items():
        if not any(r.get("ranks") for rows in by_method.values() for r in rows):
            continue
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        ks = list(range(1, 11))
        for name, rows in by_method.items():
            color, line = _style(name)
            n = sum(1 for r in rows if r.get("ranks"))
            ax.plot(
                ks,
                recall_curve(rows),
                line,
                color=color,
                marker="o",
                markersize=3,
                linewidth=2 if name in _STYLE else 1,
                label=f"{name} (n={n})",
            )
        ax.set_xlabel("k (passages retrieved)")
        ax.set_ylabel("evidence recall@k")
        ax.set_title(f"{set_name}, {setting} setting")
        ax.set_ylim(0, 1)
        ax.set_xticks(ks)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right", ncol=2)
        fig.tight_layout()
        path = out / f"{prefix}_recall_{set_name}_{setting}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def latency_bars(timings: Mapping[str, Mapping[str, float]], path: Path, title: str) -> Path:
    """Stacked horizontal bars: seconds per query by part, one bar per method."""
    names = list(timings)
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(names) + 1.5))
    left = [0.0] * len(names)
    for part in PARTS:
        vals = [float(timings[n].get(part, 0.0) or 0.0) for n in names]
        ax.barh(names, vals, left=left, label=PART_LABELS[part])
        left = [a + b for a, b in zip(left, vals, strict=True)]
    for i, total in enumerate(left):
        ax.text(total, i, f" {total:.1f}s", va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("seconds per query (median)")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def latency_plot(payload: Mapping[str, Any], out: Path, prefix: str = "quality") -> list[Path]:
    """Median timings per method over the context-setting rows that generated an answer."""
    by_method: dict[str, list[Mapping[str, float]]] = {}
    for row in payload["rows"]:
        if row["setting"] == "context" and "generation" in row["timings"]:
            by_method.setdefault(row["method"], []).append(row["timings"])
    if not by_method:
        return []
    medians = {
        name: {p: _median([t.get(p, 0.0) for t in ts]) for p in PARTS}
        for name, ts in by_method.items()
    }
    path = out / f"{prefix}_latency.png"
    title = "Latency per query by part (as measured when generated; context setting)"
    return [latency_bars(medians, path, title)]


def _median(values: Sequence[float]) -> float:
    vals = sorted(float(v) for v in values)
    if not vals:
        return 0.0
    mid = len(vals) // 2
    return vals[mid] if len(vals) % 2 else (vals[mid - 1] + vals[mid]) / 2


def scaling_plot(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Memorize seconds, peak RSS and per-token query latency against text tokens, per ratio."""
    ok = [r for r in rows if r.get("status") == "ok" and r.get("mode") == "memorize"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    ratios = sorted({r["ratio"] for r in ok})
    for ratio in ratios:
        pts = sorted((r for r in ok if r["ratio"] == ratio), key=lambda r: r["tokens"])
        x = [p["tokens"] for p in pts]
        axes[0].plot(x, [p["seconds"] for p in pts], marker="o", label=f"ratio {ratio}")
        axes[1].plot(x, [p["peak_rss_mib"] for p in pts], marker="o", label=f"ratio {ratio}")
        dec = [
            p
            for p in pts
            if p.get("decode_s_per_token") is not None and math.isfinite(p["decode_s_per_token"])
        ]
        axes[2].plot(
            [p["kv_entries"] for p in dec],
            [1000 * p["decode_s_per_token"] for p in dec],
            marker="o",
            label=f"ratio {ratio}",
        )
    prefill = [r for r in rows if r.get("status") == "ok" and r.get("mode") == "prefill"]
    if prefill:
        pts = sorted(prefill, key=lambda r: r["tokens"])
        for ax, key in zip(axes[:2], ("seconds", "peak_rss_mib"), strict=True):
            ax.plot(
                [p["tokens"] for p in pts],
                [p[key] for p in pts],
                "k--",
                marker="x",
                label="plain prefill",
            )
    axes[0].set(
        xscale="log",
        yscale="log",
        xlabel="text tokens",
        ylabel="memorize seconds",
        title="memorize time",
    )
    axes[1].set(xscale="log", xlabel="text tokens", ylabel="peak RSS (MiB)", title="peak RSS")
    axes[2].set(
        xlabel="KV entries kept",
        ylabel="ms per generated token",
        title="query decode latency vs memory size",
    )
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
