"""The memory engine's cost: speed, memory scaling and KV bytes per token.

- ``speed``: plain prefill against memorize, and greedy decode against the memory, on the
  embedded SmolLM2 (run it on an otherwise idle machine: other processes on the same cores
  slow torch threads several times).
- ``memory``: memorize throughput against a plain prefill, memory bytes against a full KV
  cache, peak RSS and query latency, for several text lengths and ratios; each configuration
  in a fresh subprocess so its peak RSS (``VmHWM``) is its own.
- ``kv-per-token``: KV bytes per token measured on SmolLM2 and computed from the 7B memory
  checkpoints' configs, with how many memories fit one GPU.
- ``gpu-check``: the native beacon memory on CUDA (fixture parity, 7B-shape timing; below).
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

import torch

from benchmarks.metrics import environment, header, write_outputs
from benchmarks.registry import CACHE, DATA, REPO, RESULTS, command
from shared_core.memory.beacon import BeaconConfig, BeaconEngine, BeaconForCausalLM
from shared_core.memory.beacon.model import StepOptions
from shared_core.memory.beacon.state import peak_entries
from shared_core.memory.beacon.weights import build_model, read_state_dict

MEMORY_DOC = """Memory engine benchmark: memorize throughput against a plain prefill, memory bytes
against a full KV cache, peak RSS, and query latency, for several text lengths and ratios.

A configuration over the model's capacity is recorded as ``refused`` (the memory raises
``LimitError``) and the nearest larger ratio that fits is run in its place. The text is real
prose (the dev novel, then HotpotQA, MuSiQue and QMSum text) cut to the requested number of
SmolLM2 tokens. Example: ``python -m benchmarks memory --sizes 8k,32k --ratios 4``."""

KV_DOC = """KV memory size per token: measured on the embedded SmolLM2 (full KV and ratio 4) and
computed from the 7B memory checkpoints' public config.json values (listed in ``CONFIGS``;
bf16, 2 bytes an element), with how many memories of a given length fit one GPU."""

TEXT = REPO / "examples" / "data" / "frankenstein.txt"


# ----------------------------------------------------------------------------------- speed


@command("speed", "plain prefill vs memorize, and decode, on the embedded SmolLM2")
def speed_main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    import torch

    from shared_core.memory import CompressedKVMemory
    from shared_core.models.loading import load_causal_lm

    parser = argparse.ArgumentParser(prog="python -m benchmarks speed", description=__doc__)
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--ratio", type=int, default=4)
    parser.add_argument("--window", type=int, default=2048)
    parser.add_argument("--name", default="speed")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    env = environment()
    begun = time.perf_counter()
    lm = load_causal_lm()
    ids = lm.tokenizer(TEXT.read_text("utf-8"))["input_ids"][: args.tokens]
    with torch.inference_mode():
        started = time.perf_counter()
        lm.model(torch.tensor([ids]), logits_to_keep=1)
        plain = len(ids) / (time.perf_counter() - started)
    memory = CompressedKVMemory(
        lm.model,
        lm.tokenizer,
        beacon_ratio=args.ratio,
        window=args.window,
        compress="always",
        scorer="stride",
        show_progress=False,
    )
    started = time.perf_counter()
    stats = memory.memorize(lm.tokenizer.decode(ids))
    memorize = stats.tokens_read / (time.perf_counter() - started)
    started = time.perf_counter()
    reply = memory.generate("Who is Walton writing to?", max_new_tokens=32)
    decode = reply.completion_tokens / (time.perf_counter() - started)
    env["loadavg_end"] = list(os.getloadavg())
    result = {
        "command": "python -m benchmarks speed " + " ".join(sys.argv[1:] if argv is None else argv),
        "env": env,
        "tokens": len(ids),
        "ratio": args.ratio,
        "window": args.window,
        "plain_prefill_tokens_per_s": plain,
        "memorize_tokens_per_s": memorize,
        "memorize_vs_prefill": memorize / plain,
        "decode_tokens_per_s": decode,
        "memory_mib": stats.memory_bytes / 2**20,
        "full_kv_mib": stats.full_kv_bytes / 2**20,
    }
    line = (
        f"threads={env['torch_threads']} load {env['loadavg_start'][0]:.1f}: plain prefill "
        f"{len(ids)} tokens {plain:.0f} tok/s | memorize at ratio {args.ratio}: {memorize:.0f} "
        f"tok/s ({memorize / plain:.2f}x) | decode {decode:.1f} tok/s | memory "
        f"{result['memory_mib']:.0f} MiB of {result['full_kv_mib']:.0f} MiB full KV"
    )
    print(line)
    text = (
        header("Engine speed", env, result["command"], time.perf_counter() - begun)
        + "\n"
        + line
        + "\n"
    )
    write_outputs(args.out, args.name, result, text)
    return result


# ---------------------------------------------------------------------------------- memory

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
            compress="always",  # every window at the ratio asked (the recorded runs' rule)
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
    cmd = [sys.executable, "-m", "benchmarks", "memory", "--worker", json.dumps(dict(spec))]
    label = f"{spec['mode']} {size_label(spec['tokens'])} ratio {spec.get('ratio', '-')}"
    log(f"  memory: {label} ...")
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


@command("memory", "memorize throughput, memory bytes and peak RSS by text length and ratio")
def memory_main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks memory",
        description=MEMORY_DOC,
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
    args = p.parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(worker(json.loads(args.worker))), flush=True)
        return
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
    command = "python -m benchmarks memory " + " ".join(sys.argv[1:] if argv is None else argv)
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
    md = header("Memory engine benchmark", env, command, seconds) + "\n" + render(rows, analysis)
    for path in write_outputs(Path(args.out), args.name, payload, md):
        print(f"wrote {path}")


# ---------------------------------------------------------------------------- kv-per-token

GIB = 1024**3

#: (layers, kv_heads, head_dim, params in billions) from each checkpoint's config.json.
CONFIGS = {
    "TommyChien/memorag-qwen2-7b-inst (Qwen2-7B-Instruct)": (28, 4, 128, 7.62),
    "TommyChien/memorag-mistral-7b-inst (Mistral-7B-Instruct-v0.2)": (32, 8, 128, 7.24),
}
GPUS = {"A100/H100 80 GB": 80e9, "H200 141 GB": 141e9}


def kv_bytes_per_token(layers: int, kv_heads: int, head_dim: int, dtype_bytes: int) -> int:
    """Keys and values of every layer for one cached token."""
    return layers * kv_heads * head_dim * 2 * dtype_bytes


def fits(gpu_bytes: float, params_b: float, per_token: float, tokens: int, ratio: int) -> int:
    """Memories of ``tokens`` tokens (kept at ``1/ratio``) beside one bf16 copy of the weights;
    10% of the GPU is left for activations and the allocator."""
    free = gpu_bytes * 0.9 - params_b * 1e9 * 2
    return max(0, int(free // (per_token * tokens / ratio)))


def measure(tokens: int) -> list[dict[str, float]]:
    """Memorize ~``tokens`` tokens at ratio 1 and 4 with the embedded SmolLM2 (fp32, CPU)."""
    import torch

    from shared_core.memory.compressed_kv import CompressedKVMemory
    from shared_core.models.loading import load_causal_lm

    torch.set_num_threads(1)
    lm = load_causal_lm(None, device="cpu")
    sentence = "The keeper wrote the name of every ship that passed the lighthouse in a book. "
    text = sentence * max(1, tokens // 17)
    rows = []
    for ratio in (1, 4):
        memory = CompressedKVMemory(
            lm.model,
            lm.tokenizer,
            beacon_ratio=ratio,
            window=512,
            scorer="key_norm",
            compress="always",  # ratio 4 compresses even a text that would fit
        )
        started = time.perf_counter()
        stats = memory.memorize(text)
        rows.append(
            {
                "ratio": ratio,
                "tokens": stats.tokens_read,
                "kv_entries": stats.kv_entries,
                "memory_bytes": stats.memory_bytes,
                "bytes_per_token_read": stats.memory_bytes / stats.tokens_read,
                "bytes_per_kv_entry": stats.memory_bytes / max(1, stats.kv_entries),
                "seconds": time.perf_counter() - started,
            }
        )
    return rows


@command("kv-per-token", "KV memory bytes per token: measured on SmolLM2, computed for 7B")
def kv_main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks kv-per-token", description=KV_DOC)
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    smol = kv_bytes_per_token(30, 3, 64, 4)
    measured = measure(args.tokens)
    lines = [
        "# KV memory size per token",
        "",
        f"Command: `python -m benchmarks kv-per-token --tokens {args.tokens}`",
        "",
        "## Measured: embedded SmolLM2-135M (30 layers x 3 KV heads x head dim 64, fp32 on CPU)",
        "",
        f"Computed: 30 x 3 x 64 x 2 (K and V) x 4 bytes = {smol:,} bytes/token "
        f"({smol / 1024:.1f} KiB; {smol // 2 / 1024:.1f} KiB in bf16).",
        "",
        "| ratio | tokens read | KV entries kept | memory bytes | bytes per KV entry "
        "| bytes per token read | memorize s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in measured:
        lines.append(
            f"| {r['ratio']} | {r['tokens']:,} | {r['kv_entries']:,} | {r['memory_bytes']:,} "
            f"| {r['bytes_per_kv_entry']:,.0f} | {r['bytes_per_token_read']:,.0f} "
            f"| {r['seconds']:.1f} |"
        )
    lines += [
        "",
        "## Computed from config.json: the 7B memory checkpoints (bf16)",
        "",
        "| model | layers x KV heads x head dim | KiB/token | GiB per 128k-token memory (ratio 1 "
        "/ 4 / 8) | 128k-token memories at ratio 4 per GPU |",
        "|---|---|---|---|---|",
    ]
    computed = {}
    for name, (layers, heads, dim, params) in CONFIGS.items():
        per = kv_bytes_per_token(layers, heads, dim, 2)
        sizes = " / ".join(f"{per * 131072 / r / GIB:.2f}" for r in (1, 4, 8))
        counts = ", ".join(f"{gpu}: {fits(b, params, per, 131072, 4)}" for gpu, b in GPUS.items())
        computed[name] = {"bytes_per_token": per, "layers": layers, "kv_heads": heads}
        lines.append(
            f"| {name} | {layers} x {heads} x {dim} | {per / 1024:.0f} | {sizes} | {counts} |"
        )
    smol16 = smol // 2
    lines += [
        "",
        "SmolLM2 on a GPU (bf16): a memory is capped by the model's 8,192 positions (about "
        f"4,150 KV entries, {4150 * smol16 / 2**20:.0f} MiB), so an H200 holds about "
        f"{fits(141e9, 0.135, smol16, 4150, 1):,} such memories.",
        "",
        "GPU counts keep 10% of the card free and one bf16 copy of the weights; they are "
        "arithmetic, not measured (no GPU here).",
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "kv_per_token.md").write_text("\n".join(lines) + "\n")
    payload = {
        "measured_smollm2": measured,
        "smollm2_fp32_bytes_per_token": smol,
        "computed": computed,
    }
    (args.out / "kv_per_token.json").write_text(json.dumps(payload, indent=1))
    print("\n".join(lines))


# ---------------------------------------------------------------------- gpu-check

GPU_DOC = """GPU check of the native beacon memory: fixture parity in bf16/fp32 and 7B-shape timing.

    python -m benchmarks gpu-check                 # on CUDA: parity + 16k/64k/128k timing
    python -m benchmarks gpu-check --device cpu --tiny   # CPU smoke test of the same code

Without CUDA (and no ``--device cpu``) it prints "no CUDA" and exits 0. Timing uses a
random-weight model with the shape of memorag-qwen2-7b-inst (Qwen2-7B-Instruct: hidden 3584,
28 layers, 28 heads, 4 KV heads, intermediate 18944, vocab 152064, 32768 positions, RoPE
theta 1e6) and beacon_window 2048 (the MemoRAG training scripts' value; the hub config was not
read: an assumption). Each length runs at ratio 4 if its positions fit, else the next ratio
(8, 16) that fits; the ratio used is recorded. Writes ``gpu_check.{json,md}`` to ``--out``.
"""

FIXTURES = REPO.parent / "shared" / "fixtures" / "beacon"
QWEN2_7B = {
    "model_type": "qwen2",
    "vocab_size": 152064,
    "hidden_size": 3584,
    "num_hidden_layers": 28,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "intermediate_size": 18944,
    "max_position_embeddings": 32768,
    "rope_theta": 1000000.0,
    "rms_norm_eps": 1e-6,
    "beacon_window": 2048,
    "beacon_stride": 2048,
    "beacon_ratio": [2, 4, 8],
    "beacon_pos": "interleave",
    "beacon_attn": "full-coverage",
    "beacon_param": ["q", "k", "v"],
}
TINY = {**QWEN2_7B, "vocab_size": 512, "hidden_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 128,
        "max_position_embeddings": 512, "beacon_window": 16, "beacon_stride": 16}  # fmt: skip
# bf16 keeps ~3 significant digits; the fixture logits reach |3.9|. Measured on CPU bf16: worst
# 0.041 (teacher-forced). 0.1 is ~2.5% of the logit range and far below what a wrong
# implementation moves (beacon q/k/v ablation: > 1.3; see docs/beacon.md).
BF16_ATOL = 0.1
FP32_ATOL = 1e-4


def parity(device: torch.device, dtype: torch.dtype, atol: float) -> dict[str, Any]:
    """Replay every fixture run (memorize, prompt, 10 greedy steps) in ``dtype`` on ``device``."""
    from safetensors.torch import load_file

    if not (FIXTURES / "README.md").is_file():
        return {"skipped": f"no fixtures at {FIXTURES}"}
    worst, ids_equal, runs, scale = 0.0, 0, 0, 0.0
    for family in ("qwen2", "mistral"):
        inputs = load_file(str(FIXTURES / family / "inputs.safetensors"))
        tensors = read_state_dict(FIXTURES / family / "model")
        prompt = inputs["prompt_7"][0].tolist()
        for ratio in (2, 4, 8):
            cfg = BeaconConfig.from_file(FIXTURES / family / "model", ratio=ratio)
            eng = BeaconEngine(build_model(cfg, tensors, device=device, dtype=dtype))
            for n in (100, 37, 48):
                fx = load_file(str(FIXTURES / family / f"r{ratio}_ctx{n}.safetensors"))
                state, mem = eng.feed(eng.empty(), inputs[f"context_{n}"][0].tolist(), logits="raw")
                _, cont = eng.feed(state, prompt, logits="raw")
                gen, logits = eng.feed(state, prompt)
                rows, tokens = [], []
                want = fx["generate/ids"].tolist()
                for i in range(10):  # teacher-forced: feed the fixture's ids, count ours
                    rows.append(logits.float().cpu())
                    tokens.append(int(logits.argmax()))
                    if i < 9:
                        gen, logits = eng.feed(gen, [want[i]])
                for got, key in ((mem, "memorize/logits"), (cont, "continue/prompt_logits")):
                    worst = max(worst, float((got.float().cpu() - fx[key]).abs().max()))
                worst = max(worst, float((torch.stack(rows) - fx["generate/logits"]).abs().max()))
                ids_equal += sum(a == b for a, b in zip(tokens, want, strict=True))
                scale = max(scale, float(fx["generate/logits"].abs().max()))
                runs += 10
    return {
        "dtype": str(dtype).removeprefix("torch."),
        "worst_abs_diff": worst,
        "atol": atol,
        "passed": worst <= atol,
        "greedy_ids_equal": f"{ids_equal}/{runs}",
        "max_abs_logit": scale,
    }


def random_model(cfg: BeaconConfig, device: torch.device, dtype: torch.dtype) -> BeaconForCausalLM:
    """A random-weight model of ``cfg``'s shape, filled in place on ``device`` (no download)."""
    with torch.device("meta"):
        model = BeaconForCausalLM(cfg, StepOptions())
    model = model.to(dtype).to_empty(device=device)  # allocate once, in the final dtype
    gen = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("layernorm.weight") or name.endswith("norm.weight"):
                p.fill_(1.0)
            elif p.ndim == 1:
                p.zero_()
            else:
                p.normal_(0.0, 0.02, generator=gen)
    return model.eval().requires_grad_(False)


def timing(
    cfg: BeaconConfig, lengths: list[int], device: torch.device, dtype: torch.dtype, gen: int
) -> list[dict[str, Any]]:
    model = random_model(cfg, device, dtype)
    eng = BeaconEngine(model)
    out = []
    for n in lengths:
        room = cfg.max_position_embeddings
        fits = [r for r in (4, 8, 16) if peak_entries(eng.empty(r), n + 64 + gen) <= room]
        ratio = fits[0] if fits else None
        if ratio is None:
            out.append({"tokens": n, "skipped": "over the positions even at ratio 16"})
            continue
        ids = torch.randint(
            3, cfg.vocab_size, (n + 64,), generator=torch.Generator().manual_seed(n)
        )
        text, prompt = ids[:n].tolist(), ids[n:].tolist()
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            torch.cuda.synchronize()
        started = time.perf_counter()
        state, _ = eng.feed(eng.empty(ratio), text, logits="none")
        _sync(device)
        memorize_s = time.perf_counter() - started
        started = time.perf_counter()
        fork, logits = eng.feed(state, prompt)
        _sync(device)
        prompt_s = time.perf_counter() - started
        started = time.perf_counter()
        for _ in range(gen):
            fork, logits = eng.feed(fork, [int(logits.argmax())])
        _sync(device)
        decode_s = time.perf_counter() - started
        peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else 0
        out.append(
            {
                "tokens": n,
                "ratio": ratio,
                "memorize_s": round(memorize_s, 3),
                "memorize_tokens_per_s": round(n / memorize_s, 1),
                "prompt_64_s": round(prompt_s, 4),
                "decode_tokens_per_s": round(gen / decode_s, 2),
                "entries_kept": state.entries,
                "memory_mib": round(state.nbytes() / 2**20, 1),
                "peak_gpu_gib": round(peak / 2**30, 2),
            }
        )
        print(json.dumps(out[-1]), flush=True)
        del state, fork
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def write_gpu_check(results: dict[str, Any], out: Path, stem: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [f"# {stem}", "", f"device: {results['device']}", "", "## Fixture parity", ""]
    for entry in results["parity"]:
        lines.append(f"- {json.dumps(entry)}")
    lines += ["", "## Timing (random weights, shape: " + results["shape"] + ")", ""]
    lines += [
        "| tokens | ratio | memorize s | tok/s | decode tok/s | kept | memory MiB | peak GiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for t in results["timing"]:
        if "skipped" in t:
            lines.append(f"| {t['tokens']:,} | {t['skipped']} |||||||")
            continue
        lines.append(
            f"| {t['tokens']:,} | {t['ratio']} | {t['memorize_s']} "
            f"| {t['memorize_tokens_per_s']:,} | {t['decode_tokens_per_s']} "
            f"| {t['entries_kept']:,} | {t['memory_mib']} "
            f"| {t['peak_gpu_gib']} |"
        )
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")


@command("gpu-check", "the native beacon memory on CUDA: fixture parity and 7B-shape timing")
def gpu_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks gpu-check", description=GPU_DOC)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="a tiny model and short lengths")
    parser.add_argument("--lengths", default=None, help="comma-separated token counts")
    parser.add_argument("--bf16", action="store_true", help="bf16 parity off CUDA too")
    parser.add_argument("--gen-tokens", type=int, default=32)
    parser.add_argument("--out", type=Path, default=CACHE / "gpu-check")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA")
        return 0
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 parity needs real fp32 matmuls
        torch.backends.cudnn.allow_tf32 = False
    checks = [parity(device, torch.float32, FP32_ATOL)]
    if device.type == "cuda" or args.bf16:
        checks.append(parity(device, torch.bfloat16, BF16_ATOL))
    for c in checks:
        print("parity", json.dumps(c), flush=True)
    shape = TINY if args.tiny else QWEN2_7B
    default = "256,400" if args.tiny else "16384,65536,131072"
    lengths = [int(x) for x in (args.lengths or default).split(",")]
    cfg = BeaconConfig.from_dict(shape, ratio=4)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    results = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else str(device),
        "torch": torch.__version__,
        "dtype": str(dtype).removeprefix("torch."),
        "shape": "tiny" if args.tiny else "memorag-qwen2-7b-inst (assumed window 2048)",
        "parity": checks,
        "timing": timing(cfg, lengths, device, dtype, args.gen_tokens),
    }
    write_gpu_check(results, args.out, "gpu_check_tiny" if args.tiny else "gpu_check")
    ok = all(c.get("passed", True) for c in checks)
    print("parity ok" if ok else "PARITY FAILED")
    return 0 if ok else 1
