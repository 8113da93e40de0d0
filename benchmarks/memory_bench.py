"""Memory engine benchmark: memorize throughput against a plain prefill, memory bytes against a
full KV cache, peak RSS, and query latency, for several text lengths and ratios.

Each configuration runs in a fresh subprocess (``--worker``) so its peak RSS (``VmHWM`` from
``/proc/self/status``) is its own. A configuration over the model's capacity is recorded as
``refused`` (the memory raises ``LimitError``) and the nearest larger ratio that fits is run in
its place. The text is real prose (the dev novel, then HotpotQA, MuSiQue and QMSum text) cut to
the requested number of SmolLM2 tokens.

    python -m benchmarks.memory_bench                      # 8k, 32k, 128k x ratios 1, 4, 8
    python -m benchmarks.memory_bench --sizes 8k,32k --ratios 4
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
RESULTS = REPO / "benchmarks" / "results"
DEFAULT_SIZES = ("8k", "32k", "128k")
DEFAULT_RATIOS = (1, 4, 8)
MAX_RATIO = 64
QUERY_TOKENS = 32
QUERY_PROMPT = "List the main points of the text. One short sentence per line."
WORKER_TIMEOUT_S = 3000


def parse_size(text: str) -> int:
    """``"8k"`` -> 8192 tokens, ``"6000"`` -> 6000."""
    text = text.strip().lower()
    return int(float(text[:-1]) * 1024) if text.endswith("k") else int(text)


def size_label(tokens: int) -> str:
    return f"{tokens // 1024}k" if tokens % 1024 == 0 else str(tokens)


# ---------------------------------------------------------------------------------- worker


def _vm(field: str) -> int:
    """A ``/proc/self/status`` field in KiB (0 where unavailable)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _source_texts() -> list[str]:
    texts = []
    novel = DATA / "longbook_needles" / "documents.jsonl"
    for path in (novel, DATA / "hotpotqa" / "corpus.jsonl", DATA / "musique" / "corpus.jsonl"):
        if path.is_file():
            with path.open(encoding="utf-8") as fh:
                texts.append("\n\n".join(json.loads(line)["text"] for line in fh if line.strip()))
    meetings = DATA / "qmsum" / "documents.jsonl"
    if meetings.is_file():
        with meetings.open(encoding="utf-8") as fh:
            for line in fh:
                row = json.loads(line)
                texts.append("\n".join(f"{t['speaker']}: {t['content']}" for t in row["turns"]))
    if not texts:
        raise FileNotFoundError(f"no text under {DATA} to build benchmark inputs from")
    return texts


def text_of_tokens(tokenizer: Any, tokens: int) -> str:
    """Real prose cut to about ``tokens`` tokens of ``tokenizer``."""
    ids: list[int] = []
    for text in _source_texts():
        need = tokens - len(ids)
        if need <= 0:
            break
        ids += tokenizer(text[: need * 8], add_special_tokens=False)["input_ids"][:need]
        if len(ids) < tokens:
            ids += tokenizer("\n\n", add_special_tokens=False)["input_ids"]
    return tokenizer.decode(ids[:tokens])


def worker(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Run one configuration in this process; returns its measurements."""
    import torch

    torch.set_num_threads(int(spec.get("threads", 2)))
    from shared_core.errors import LimitError
    from shared_core.memory import CompressedKVMemory
    from shared_core.models.loading import load_causal_lm

    started = time.perf_counter()
    lm = load_causal_lm(None, device="cpu")
    load_s = time.perf_counter() - started
    tokens, mode = int(spec["tokens"]), spec["mode"]
    text = text_of_tokens(lm.tokenizer, tokens)
    out: dict[str, Any] = {**spec, "load_s": load_s, "rss_after_load_mib": _vm("VmRSS") / 1024}
    max_pos = int(lm.model.config.max_position_embeddings)
    if mode == "prefill":
        ids = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) > max_pos:
            out.update(status="does not fit", error=f"{len(ids)} tokens > {max_pos} positions")
        else:
            from transformers import DynamicCache

            cache = DynamicCache()
            with torch.inference_mode():
                t0 = time.perf_counter()
                lm.model(
                    input_ids=torch.tensor([ids]), cache=cache, use_cache=True, logits_to_keep=1
                )
                seconds = time.perf_counter() - t0
            kv_bytes = sum(
                layer.keys.numel() * layer.keys.element_size()
                + layer.values.numel() * layer.values.element_size()
                for layer in cache.layers
            )
            out.update(
                status="ok",
                tokens_read=len(ids),
                seconds=seconds,
                tokens_per_second=len(ids) / seconds,
                kv_bytes=kv_bytes,
            )
    else:
        memory = CompressedKVMemory(
            lm.model,
            lm.tokenizer,
            name=lm.name,
            beacon_ratio=int(spec["ratio"]),
            window=int(spec["window"]),
            scorer="key_norm",
            show_progress=False,
        )
        try:
            stats = memory.memorize(text)
        except LimitError as exc:
            out.update(status="refused", error=str(exc))
        else:
            frame = len(memory.prefix_ids) + len(memory.suffix_ids)
            per_entry = stats.memory_bytes / max(stats.kv_entries, 1)
            out.update(
                status="ok",
                tokens_read=stats.tokens_read,
                seconds=stats.seconds,
                tokens_per_second=stats.tokens_per_second,
                kv_entries=stats.kv_entries,
                memory_bytes=stats.memory_bytes,
                full_kv_bytes=stats.full_kv_bytes,
                frame_tokens=frame,
                sink_bytes=int(per_entry * frame),
                position_mode=stats.position_mode,
                windows=stats.windows,
                capacity_tokens=stats.capacity_tokens,
            )
            out.update(_query_latency(memory))
    out["peak_rss_mib"] = _vm("VmHWM") / 1024
    return out


def _query_latency(memory: Any) -> dict[str, float]:
    """Seconds for a 1-token and a ``QUERY_TOKENS``-token reply against the memory."""
    t0 = time.perf_counter()
    memory.generate(QUERY_PROMPT, max_new_tokens=1)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    gen = memory.generate(QUERY_PROMPT, max_new_tokens=QUERY_TOKENS)
    total = time.perf_counter() - t0
    n = gen.completion_tokens
    return {
        "query_first_token_s": first,
        "query_s": total,
        "query_tokens": n,
        "decode_s_per_token": (total - first) / (n - 1) if n > 1 else math.nan,
    }


# ---------------------------------------------------------------------------------- driver


def run_config(spec: Mapping[str, Any], log: Any = print) -> dict[str, Any]:
    """One configuration in a fresh subprocess."""
    cmd = [sys.executable, "-m", "benchmarks.memory_bench", "--worker", json.dumps(dict(spec))]
    label = f"{spec['mode']} {size_label(spec['tokens'])} ratio {spec.get('ratio', '-')}"
    log(f"  memory_bench: {label} ...")
    started = time.perf_counter()
    env = {
        **os.environ,
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    try:
        proc = subprocess.run(
            cmd, cwd=REPO, capture_output=True, text=True, timeout=WORKER_TIMEOUT_S, env=env
        )
    except subprocess.TimeoutExpired:
        return {**spec, "status": "timeout", "error": f"over {WORKER_TIMEOUT_S} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RESULT "):
            row = json.loads(line[len("RESULT ") :])
            row["wall_s"] = time.perf_counter() - started
            log(
                f"    -> {row['status']}"
                + (
                    f", {row['seconds']:.1f}s, {row['tokens_per_second']:.0f} tok/s, "
                    f"peak RSS {row['peak_rss_mib']:.0f} MiB"
                    if row["status"] == "ok"
                    else ""
                )
            )
            return row
    return {**spec, "status": "error", "error": proc.stderr[-2000:]}


def run_grid(
    sizes: Sequence[int],
    ratios: Sequence[int],
    *,
    window: int = 2048,
    threads: int = 2,
    prefill: bool = True,
    log: Any = print,
) -> list[dict[str, Any]]:
    """Every (size, ratio); a refused one is followed by the nearest larger ratio that fits."""
    rows: list[dict[str, Any]] = []
    done: dict[tuple[int, int], dict[str, Any]] = {}
    for tokens in sizes:
        if prefill:
            rows.append(run_config({"mode": "prefill", "tokens": tokens, "threads": threads}, log))
        for ratio in ratios:
            row = done.get((tokens, ratio)) or run_config(
                {
                    "mode": "memorize",
                    "tokens": tokens,
                    "ratio": ratio,
                    "window": window,
                    "threads": threads,
                },
                log,
            )
            done[(tokens, ratio)] = row
            rows.append(row)
            fallback = ratio * 2
            while row["status"] == "refused" and fallback <= MAX_RATIO:
                if (tokens, fallback) in done:
                    row = done[(tokens, fallback)]
                    if row["status"] == "ok":
                        break
                    fallback *= 2
                    continue
                if fallback in ratios:
                    break  # it runs in its own turn
                row = run_config(
                    {
                        "mode": "memorize",
                        "tokens": tokens,
                        "ratio": fallback,
                        "window": window,
                        "threads": threads,
                        "fallback_for": ratio,
                    },
                    log,
                )
                done[(tokens, fallback)] = row
                rows.append(row)
                fallback *= 2
    return rows


def growth_exponent(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of log(y) on log(x): 1 = linear, 2 = quadratic."""
    pts = [(math.log(x), math.log(y)) for x, y in points if x > 0 and y > 0]
    if len(pts) < 2:
        return None
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    den = sum((p[0] - mx) ** 2 for p in pts)
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / den if den else None


def analyse(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Target checks: throughput vs plain prefill, bytes vs full KV / ratio, RSS growth."""
    prefill = {r["tokens"]: r for r in rows if r["mode"] == "prefill" and r["status"] == "ok"}
    checks = []
    for r in rows:
        if r["mode"] != "memorize" or r["status"] != "ok":
            continue
        ref = prefill.get(r["tokens"])
        ref_note = "same length"
        if ref is None and prefill:
            ref = prefill[max(prefill)]
            ref_note = f"{size_label(ref['tokens'])} prefill (longest that fits)"
        bound = r["full_kv_bytes"] / r["ratio"] + r["sink_bytes"]
        checks.append(
            {
                "tokens": r["tokens"],
                "ratio": r["ratio"],
                "throughput_vs_prefill": (
                    r["tokens_per_second"] / ref["tokens_per_second"] if ref else None
                ),
                "prefill_reference": ref_note if ref else "none",
                "bytes_vs_full": r["memory_bytes"] / r["full_kv_bytes"],
                "bytes_bound_ok": r["memory_bytes"] <= bound * 1.001,
            }
        )
    growth: dict[str, Any] = {}
    ok = [r for r in rows if r["mode"] == "memorize" and r["status"] == "ok"]
    for ratio in sorted({r["ratio"] for r in ok}):
        pts = sorted((r for r in ok if r["ratio"] == ratio), key=lambda r: r["tokens"])
        if len(pts) >= 2:
            growth[str(ratio)] = {
                "sizes": [p["tokens"] for p in pts],
                "time_exponent": growth_exponent([(p["tokens"], p["seconds"]) for p in pts]),
                "rss_mib": [round(p["peak_rss_mib"]) for p in pts],
            }
    all_pts = [(r["tokens"], r["seconds"]) for r in ok]
    return {
        "checks": checks,
        "growth_by_ratio": growth,
        "time_exponent_all": growth_exponent(all_pts),
    }


def render(rows: Sequence[Mapping[str, Any]], analysis: Mapping[str, Any]) -> str:
    out = [
        "| tokens | ratio | status | memorize s | tok/s | vs plain prefill | memory MiB "
        "| full KV MiB | bytes/full | ≤ full/ratio + sinks | peak RSS MiB | KV entries "
        "| positions | 32-token query s | ms/token |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    checks = {(c["tokens"], c["ratio"]): c for c in analysis["checks"]}
    mib = 1024 * 1024
    for r in rows:
        if r["mode"] == "prefill":
            if r["status"] == "ok":
                out.append(
                    f"| {size_label(r['tokens'])} | plain prefill | ok | {r['seconds']:.1f} "
                    f"| {r['tokens_per_second']:.0f} | 1.00 | – | {r['kv_bytes'] / mib:.0f} | – "
                    f"| – | {r['peak_rss_mib']:.0f} | – | – | – | – |"
                )
            else:
                out.append(
                    f"| {size_label(r['tokens'])} | plain prefill | {r['status']} "
                    "| – | – | – | – | – | – | – | – | – | – | – | – |"
                )
            continue
        label = str(r["ratio"]) + (f" (for {r['fallback_for']})" if r.get("fallback_for") else "")
        if r["status"] != "ok":
            status = "refused: over capacity" if r["status"] == "refused" else r["status"]
            out.append(
                f"| {size_label(r['tokens'])} | {label} | {status} "
                "| – | – | – | – | – | – | – | – | – | – | – | – |"
            )
            continue
        c = checks[(r["tokens"], r["ratio"])]
        vs = "–" if c["throughput_vs_prefill"] is None else f"{c['throughput_vs_prefill']:.2f}"
        if c["prefill_reference"] != "same length" and c["throughput_vs_prefill"] is not None:
            vs += "*"
        dec = r.get("decode_s_per_token")
        out.append(
            f"| {size_label(r['tokens'])} | {label} | ok | {r['seconds']:.1f} "
            f"| {r['tokens_per_second']:.0f} | {vs} | {r['memory_bytes'] / mib:.1f} "
            f"| {r['full_kv_bytes'] / mib:.0f} | {c['bytes_vs_full']:.3f} "
            f"| {'yes' if c['bytes_bound_ok'] else 'NO'} | {r['peak_rss_mib']:.0f} "
            f"| {r['kv_entries']:,} | {r['position_mode']} | {r['query_s']:.1f} "
            f"| {'–' if dec is None or math.isnan(dec) else f'{1000 * dec:.0f}'} |"
        )
    out.append("")
    out.append("\\* compared with the longest plain prefill that fits the model's positions.")
    out.append("")
    out.append(
        "| ratio | sizes | memorize time growth exponent (1 = linear, 2 = quadratic) "
        "| peak RSS MiB by size |"
    )
    out.append("|---|---|---|---|")
    for ratio, g in analysis["growth_by_ratio"].items():
        exp = g["time_exponent"]
        out.append(
            f"| {ratio} | {', '.join(size_label(s) for s in g['sizes'])} "
            f"| {'–' if exp is None else f'{exp:.2f}'} "
            f"| {', '.join(str(x) for x in g['rss_mib'])} |"
        )
    exp = analysis.get("time_exponent_all")
    if exp is not None:
        out.append("")
        out.append(f"All memorize points together: time ∝ tokens^{exp:.2f}.")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.memory_bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--sizes", default=",".join(DEFAULT_SIZES))
    p.add_argument("--ratios", default=",".join(str(r) for r in DEFAULT_RATIOS))
    p.add_argument("--window", type=int, default=2048)
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--no-prefill", action="store_true")
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--name", default="memory_bench")
    p.add_argument("--no-plots", action="store_true")
    args = p.parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(worker(json.loads(args.worker))), flush=True)
        return
    from benchmarks.report import _header, environment, write_outputs

    env = environment()
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    ratios = [int(r) for r in args.ratios.split(",")]
    started = time.perf_counter()
    rows = run_grid(
        sizes, ratios, window=args.window, threads=args.threads, prefill=not args.no_prefill
    )
    seconds = time.perf_counter() - started
    env["loadavg_end"] = list(os.getloadavg())
    analysis = analyse(rows)
    command = "python -m benchmarks.memory_bench " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    payload = {
        "suite": "memory_bench",
        "command": command,
        "environment": env,
        "seconds": seconds,
        "window": args.window,
        "query_tokens": QUERY_TOKENS,
        "rows": rows,
        "analysis": analysis,
    }
    md = _header("Memory engine benchmark", env, command, seconds) + "\n" + render(rows, analysis)
    out = Path(args.out)
    for path in write_outputs(out, args.name, payload, md):
        print(f"wrote {path}")
    if not args.no_plots:
        from benchmarks.plots import scaling_plot

        print(f"wrote {scaling_plot(rows, out / f'{args.name}_scaling.png')}")


if __name__ == "__main__":
    main()
