"""One command per table: ``python -m benchmarks.run --suite quality|cost|all``.

Writes ``<out>/<name>.json`` (every number, per-question rows, models, versions, machine, date,
seed, cache use, load average), ``<out>/<name>.md`` and PNG plots. ``--smoke`` runs a tiny
quality run (2 HotpotQA questions, retrieval only, 8-token clues) in about a minute: it checks
the harness, not the scores.

Examples::

    python -m benchmarks.run --suite quality                  # default limits, < 1 h cold
    python -m benchmarks.run --suite quality --data DIR --limit 20
    python -m benchmarks.run --suite cost
    python -m benchmarks.run --smoke --out /tmp/bench
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks import quality
from benchmarks.report import _header, environment, write_outputs

RESULTS = quality.REPO / "benchmarks" / "results"


def run_quality_suite(args: argparse.Namespace, command: str) -> list[Path]:
    import torch

    torch.set_num_threads(args.threads)
    env = environment(args.seed)
    cache_dir = None if args.no_cache else Path(args.cache_dir)
    rt = quality.Runtime(
        cache=quality.GenCache(None if cache_dir is None else cache_dir / "generations.jsonl"),
        cache_dir=cache_dir,
    )
    cfg = quality.QualityConfig(
        data=[Path(d) for d in (args.data or [quality.DEFAULT_DATA])],
        limit=args.limit,
        seed=args.seed,
    )
    if args.settings:
        cfg.settings = tuple(args.settings.split(","))
        cfg.explicit_settings = True
    if args.methods:
        cfg.methods = tuple(args.methods.split(","))
        unknown = set(cfg.methods) - set(quality.METHODS)
        if unknown:
            raise SystemExit(f"unknown methods {sorted(unknown)}; known: {list(quality.METHODS)}")
    if args.ablation_limit is not None:
        cfg.ablation_limit = args.ablation_limit
    if args.gen_limit is not None:
        cfg.gen_limit = args.gen_limit
    name = args.name or "quality"
    if args.smoke:
        name = args.name or "smoke"
        data = [Path(d) for d in (args.data or [quality.DEFAULT_DATA / "hotpotqa"])]
        cfg = quality.QualityConfig(
            data=data,
            limit=args.limit or 2,
            settings=("context",),
            methods=("dense", "bm25", "hyde", "multi_query", "memorag", "memorag_copy_only"),
            ablation_limit=2,
            gen_limit=1,
            seed=args.seed,
        )
        rt.clue_tokens, rt.hyde_tokens, rt.mq_tokens = 8, 8, 12
        rt.qa_tokens = rt.summary_tokens = 4
    started = time.perf_counter()
    results = quality.run_quality(rt, cfg, progress=_log)
    seconds = time.perf_counter() - started
    env["loadavg_end"] = list(os.getloadavg())
    cached = sum(1 for r in results["rows"] if r["cached"])
    payload = {
        "suite": "smoke" if args.smoke else "quality",
        "command": command,
        "environment": env,
        "seconds": seconds,
        "config": {
            "data": [str(p) for p in cfg.data],
            "limit": cfg.limit,
            "default_limits": quality.DEFAULT_LIMITS,
            "settings": list(cfg.settings),
            "methods": {m: quality.METHODS[m].description for m in cfg.methods},
            "ablation_limit": cfg.ablation_limit,
            "default_ablation_limits": quality.DEFAULT_ABLATION_LIMITS,
            "gist_limits": quality.GIST_LIMITS,
            "pooled_sets": list(cfg.pooled_sets),
            "gen_limit": cfg.gen_limit,
            "ks": list(quality.KS),
            "depth": quality.DEPTH,
            "gen_k": quality.GEN_K,
            "query_weight": quality.QUERY_WEIGHT,
            "fusion": "rrf (k=60)",
            "chunking": {
                "chunk_tokens": rt.chunker.chunk_tokens,
                "overlap_tokens": rt.chunker.overlap_tokens,
            },
            "clue_tokens_override": rt.clue_tokens,
            "cache": str(cache_dir) if cache_dir else None,
            "rows_from_cache": cached,
            "rows": len(results["rows"]),
            "tuned_sets": list(quality.TUNED_SETS),
        },
        **results,
    }
    markdown = (
        _header("Quality benchmark" + (" (smoke)" if args.smoke else ""), env, command, seconds)
        + "\n"
        + quality.render_markdown(payload)
    )
    out = Path(args.out)
    paths = write_outputs(out, name, payload, markdown)
    if not args.no_plots:
        from benchmarks import plots

        paths += plots.quality_plots(payload, out, prefix=name)
        paths += plots.latency_plot(payload, out, prefix=name)
    return paths


def run_cost_suite(args: argparse.Namespace, command: str) -> list[Path]:
    from benchmarks import cost

    return cost.run(args, command)


def _log(message: str) -> None:
    print(message, flush=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--suite", choices=("quality", "cost", "all"), default="quality")
    p.add_argument("--smoke", action="store_true", help="tiny quality run (~1 min), for tests")
    p.add_argument(
        "--data",
        action="append",
        metavar="DIR",
        help="a set folder (shared/data/<set> layout) or a folder of them; repeatable "
        f"(default {quality.DEFAULT_DATA})",
    )
    p.add_argument(
        "--limit",
        type=int,
        default=None,
        help=f"questions per set, seeded sample (default {quality.DEFAULT_LIMITS})",
    )
    p.add_argument(
        "--settings",
        help="comma list of context,pooled (default: context for every set, pooled for "
        "HotpotQA; naming pooled runs it for every paragraph set given)",
    )
    p.add_argument("--methods", help=f"comma list of {','.join(quality.METHODS)}")
    p.add_argument(
        "--ablation-limit",
        type=int,
        default=None,
        help=f"paid ablations on the first N questions of every set (default "
        f"{quality.DEFAULT_ABLATION_LIMITS}, none elsewhere)",
    )
    p.add_argument(
        "--gen-limit",
        type=int,
        default=None,
        help=f"answers generated for the first N (default {quality.DEFAULT_GEN_LIMIT})",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(RESULTS), help="output folder (default benchmarks/results)")
    p.add_argument("--name", help="output file stem (default: the suite name)")
    p.add_argument("--cache-dir", default=str(quality.DEFAULT_CACHE))
    p.add_argument("--no-cache", action="store_true", help="recompute every generation/memory")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--sizes", help="cost suite: memory scaling sizes, e.g. 8k,32k,64k,128k")
    p.add_argument("--ratios", help="cost suite: memory ratios, e.g. 1,4,8")
    p.add_argument(
        "--latency-questions",
        type=int,
        default=None,
        help="cost suite: questions timed live per method",
    )
    return p


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    command = "python -m benchmarks.run " + " ".join(sys.argv[1:] if argv is None else argv)
    paths: list[Path] = []
    if args.smoke or args.suite in ("quality", "all"):
        paths += run_quality_suite(args, command)
    if not args.smoke and args.suite in ("cost", "all"):
        paths += run_cost_suite(args, command)
    for path in paths:
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
