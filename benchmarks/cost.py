"""Cost suite: live per-query latency by part for every method, memorize cost of every memory
back-end, and memory scaling (memorize time, peak RSS, query latency against text length).

Nothing comes from the generation cache here: every model call is timed as it runs.

    python -m benchmarks.run --suite cost [--sizes 6k,8k,32k,64k,128k] [--ratios 1,4,8]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks import memory_bench, quality
from benchmarks.datasets import load_set

DEFAULT_SIZES = ("6k", "8k", "32k", "64k", "128k")
DEFAULT_RATIOS = (1, 4, 8)
LATENCY_SET = "hotpotqa"
LATENCY_QUESTIONS = 3
LATENCY_METHODS = (
    "dense",
    "bm25",
    "hyde",
    "multi_query",
    "memorag",
    "memorag_r1",
    "memorag_r8",
    "memorag_gist",
)
PARTS = ("clues", "search", "fusion", "generation")


def latency(
    rt: quality.Runtime, data: Path, n: int, methods: Sequence[str], seed: int = 0
) -> dict[str, Any]:
    """Every method on ``n`` questions of ``data`` (context setting), answers generated, timed
    live; plus the memorize cost of each memory built on the way."""
    bench = load_set(data, limit=n, seed=seed)
    run = quality.run_set(
        rt,
        bench,
        "context",
        methods,
        ablation_limit=n,
        gen_limit=n,
        progress=lambda m: print(m, flush=True),
    )
    # A method without answers for a question is not timed end to end.
    generating = [m for m in methods if quality.METHODS[m].generate] or list(methods)
    per_method: dict[str, Any] = {}
    for name in methods:
        rows = [r for r in run.rows if r["method"] == name]
        if not rows:
            continue
        entry: dict[str, Any] = {"n": len(rows)}
        for part in (*PARTS, "clue_tokens"):
            vals = [r["timings"].get(part, 0.0) for r in rows]
            entry[part] = statistics.median(vals)
        entry["total"] = sum(entry[p] for p in PARTS)
        entry["answers"] = name in generating
        per_method[name] = entry
    memories: dict[str, list[dict[str, Any]]] = {}
    for record in rt.memory_records.values():
        key = f"{record['backend']} ratio {record['ratio']}"
        memories.setdefault(key, []).append(record)
    backends = {}
    for key, records in memories.items():
        ok = [r["stats"] for r in records if r["status"] == "ok"]
        if not ok:
            backends[key] = {"status": "refused", "error": records[0].get("error", "")}
            continue
        backends[key] = {
            "status": "ok",
            "n": len(ok),
            "tokens_read": statistics.median(s["tokens_read"] for s in ok),
            "seconds": statistics.median(s["seconds"] for s in ok),
            "tokens_per_second": statistics.median(s["tokens_per_second"] for s in ok),
            "memory_bytes": statistics.median(s["memory_bytes"] for s in ok),
            "full_kv_bytes": statistics.median(s["full_kv_bytes"] for s in ok),
        }
    return {
        "set": bench.name,
        "questions": [q.id for q in bench.questions],
        "methods": per_method,
        "backends": backends,
        "refusals": run.refusals,
    }


def render_latency(lat: Mapping[str, Any]) -> str:
    out = [
        f"Median seconds per query over {len(lat['questions'])} {lat['set']} questions "
        "(each question's own 10 paragraphs; answers from the top 3 passages, 32 new tokens).",
        "",
        "| method | clue / key writing | searches | fusion | answer generation | total "
        "| tokens written for keys |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, e in lat["methods"].items():
        gen = f"{e['generation']:.2f}" if e["answers"] else "(not run)"
        out.append(
            f"| {name} | {e['clues']:.2f} | {e['search']:.3f} | {e['fusion'] * 1000:.2f} ms "
            f"| {gen} | {e['total']:.2f} | {e['clue_tokens']:.0f} |"
        )
    out += [
        "",
        "| memory back-end | contexts | text tokens | memorize s | tokens/s | memory MiB "
        "| full KV MiB |",
        "|---|---|---|---|---|---|---|",
    ]
    mib = 1024 * 1024
    for key, b in lat["backends"].items():
        if b["status"] != "ok":
            out.append(f"| {key} | refused | – | – | – | – | – |")
            continue
        out.append(
            f"| {key} | {b['n']} | {b['tokens_read']:.0f} | {b['seconds']:.1f} "
            f"| {b['tokens_per_second']:.0f} | {b['memory_bytes'] / mib:.1f} "
            f"| {b['full_kv_bytes'] / mib:.1f} |"
        )
    for r in lat["refusals"]:
        out.append("")
        out.append(f"- `{r['method']}` ({r['backend']} ratio {r['ratio']}): {r['error'][:200]}")
    return "\n".join(out)


def run(args: argparse.Namespace, command: str) -> list[Path]:
    import torch

    from benchmarks import plots
    from benchmarks.report import _header, environment, write_outputs

    torch.set_num_threads(args.threads)
    env = environment(args.seed)
    out = Path(args.out)
    started = time.perf_counter()
    data = [Path(d) for d in (args.data or [quality.DEFAULT_DATA / LATENCY_SET])]
    folder = quality.resolve_data(data)[0]
    rt = quality.Runtime(cache=quality.GenCache(None), cache_dir=None)
    n = args.latency_questions or LATENCY_QUESTIONS
    lat = latency(rt, folder, n, LATENCY_METHODS, seed=args.seed)
    sizes = [memory_bench.parse_size(s) for s in (args.sizes or ",".join(DEFAULT_SIZES)).split(",")]
    ratios = [int(r) for r in (args.ratios or ",".join(map(str, DEFAULT_RATIOS))).split(",")]
    grid_started = time.perf_counter()
    rows = memory_bench.run_grid(sizes, ratios, threads=args.threads)
    grid_seconds = time.perf_counter() - grid_started
    analysis = memory_bench.analyse(rows)
    seconds = time.perf_counter() - started
    env["loadavg_end"] = list(os.getloadavg())
    payload = {
        "suite": "cost",
        "command": command,
        "environment": env,
        "seconds": seconds,
        "latency": lat,
        "scaling": {"rows": rows, "analysis": analysis, "query_tokens": memory_bench.QUERY_TOKENS},
    }
    md = "\n".join(
        [
            _header("Cost benchmark", env, command, seconds),
            "## Latency per query, by part",
            "",
            render_latency(lat),
            "",
            "## Memory scaling (each configuration in a fresh process)",
            "",
            memory_bench.render(rows, analysis),
        ]
    )
    name = args.name or "cost"
    paths = write_outputs(out, name, payload, md)
    bench_payload = {
        "suite": "memory_bench",
        "command": command,
        "environment": env,
        "seconds": grid_seconds,
        "window": 2048,
        "query_tokens": memory_bench.QUERY_TOKENS,
        "rows": rows,
        "analysis": analysis,
    }
    bench_md = (
        _header("Memory engine benchmark", env, command, grid_seconds)
        + "\n"
        + (memory_bench.render(rows, analysis))
    )
    paths += write_outputs(out, "memory_bench", bench_payload, bench_md)
    if not args.no_plots:
        paths.append(
            plots.latency_bars(
                {k: v for k, v in lat["methods"].items()},
                out / f"{name}_latency.png",
                f"Latency per query by part (live, {lat['set']}, median of {n})",
            )
        )
        paths.append(plots.scaling_plot(rows, out / f"{name}_scaling.png"))
    return paths
