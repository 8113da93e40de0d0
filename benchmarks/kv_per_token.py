"""KV memory size per token: measured on the embedded SmolLM2 (a compressed-KV memory of a
text, full KV and ratio 4), and computed from the configs of the 7B memory checkpoints, with
how many memories of a given length fit one GPU. Writes ``results/kv_per_token.{md,json}``.

    python -m benchmarks.kv_per_token --tokens 1024

The 7B numbers come from the checkpoints' public ``config.json`` values (no hub here), listed
in ``CONFIGS``; bytes per element are those of bf16 (2), the dtype the engine loads on CUDA.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

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
        memory = CompressedKVMemory(lm.model, lm.tokenizer, beacon_ratio=ratio, window=512)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    smol = kv_bytes_per_token(30, 3, 64, 4)
    measured = measure(args.tokens)
    lines = [
        "# KV memory size per token",
        "",
        f"Command: `python -m benchmarks.kv_per_token --tokens {args.tokens}`",
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


if __name__ == "__main__":
    main()
