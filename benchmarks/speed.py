"""Quick engine speed check on the embedded SmolLM2: plain prefill vs memorize, and decode.

    python -m benchmarks.speed [--tokens 4096] [--threads N]

Prints one line; run it on an otherwise idle machine (other processes on the same cores slow
PyTorch threads several times).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from shared_core.memory import CompressedKVMemory
from shared_core.models.loading import load_causal_lm

TEXT = Path(__file__).resolve().parents[1] / "examples" / "data" / "frankenstein.txt"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--ratio", type=int, default=4)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    lm = load_causal_lm()
    ids = lm.tokenizer(TEXT.read_text("utf-8"))["input_ids"][: args.tokens]
    with torch.inference_mode():
        started = time.perf_counter()
        lm.model(torch.tensor([ids]), logits_to_keep=1)
        plain = len(ids) / (time.perf_counter() - started)
    memory = CompressedKVMemory(
        lm.model, lm.tokenizer, beacon_ratio=args.ratio, show_progress=False
    )
    started = time.perf_counter()
    stats = memory.memorize(lm.tokenizer.decode(ids))
    memorize = stats.tokens_read / (time.perf_counter() - started)
    started = time.perf_counter()
    reply = memory.generate("Who is Walton writing to?", max_new_tokens=32)
    decode = reply.completion_tokens / (time.perf_counter() - started)
    print(
        f"threads={torch.get_num_threads()} plain prefill {len(ids)} tokens: {plain:.0f} tok/s | "
        f"memorize at ratio {args.ratio}: {memorize:.0f} tok/s ({memorize / plain:.2f}x) | "
        f"decode {decode:.1f} tok/s | memory {stats.memory_bytes / 2**20:.0f} MiB of "
        f"{stats.full_kv_bytes / 2**20:.0f} MiB full KV"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
