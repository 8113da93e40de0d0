"""Greedy loops with and without the decoder's loop stop, through a LlamaIndex query engine.

The README's LlamaIndex snippet (``--corpus readme``: its three documents, top 2) or the demo
novel's opening (``--corpus book``: the first 12,000 characters of
``examples/data/frankenstein.txt``, top 4), at LlamaIndex's default 256 output tokens on the
embedded SmolLM2: each question is answered twice, with the loop stop
(``shared_core.models.decoding.looping``) and with it turned off, recording the reply's tokens,
finish reason and seconds.

    OMP_NUM_THREADS=1 python -m benchmarks.loop_check --corpus readme
    OMP_NUM_THREADS=1 python -m benchmarks.loop_check --corpus book --out .../loop_check_book
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

BOOK = Path(__file__).resolve().parents[1] / "examples" / "data" / "frankenstein.txt"
BOOK_QUESTIONS = ("Why does he travel north?", "Who is the narrator writing to?")
QUESTIONS = (
    "Why does Walton sail north?",
    "Who does Walton write to?",
    "What does Walton do at Archangel?",
)
TEXTS = (
    "Walton writes to his sister Margaret from St. Petersburgh.",
    "He sails north to find a passage near the pole and the secret of the magnet.",
    "He hires a ship at Archangel and gathers a crew of sailors.",
)


def run(corpus: str, max_tokens: int = 256) -> list[dict[str, Any]]:
    from llama_index.core import Document
    from llama_index.core.query_engine import RetrieverQueryEngine

    from llamaindex_memorag import MemoRAGRetriever, MemoryLLM
    from shared_core.models import decoding

    if corpus == "book":
        texts, top, questions = [BOOK.read_text(encoding="utf-8")[:12000]], 4, BOOK_QUESTIONS
    else:
        texts, top, questions = list(TEXTS), 2, QUESTIONS
    retriever = MemoRAGRetriever.from_defaults(
        documents=[Document(text=t) for t in texts], similarity_top_k=top
    )
    engine = retriever.engine
    seen: list[Any] = []
    chat = engine.chat

    def recording_chat(messages: Any, **options: Any) -> Any:
        generation = chat(messages, **options)
        seen.append(generation)
        return generation

    engine.chat = recording_chat  # type: ignore[method-assign]
    llm = MemoryLLM(engine=engine, num_output=max_tokens)
    query_engine = RetrieverQueryEngine.from_args(retriever, llm=llm)
    real = decoding.looping
    rows = []
    for question in questions:
        for stop in (True, False):
            decoding.looping = real if stop else (lambda tokens: False)  # type: ignore[assignment]
            seen.clear()
            started = time.perf_counter()
            text = str(query_engine.query(question))
            seconds = time.perf_counter() - started
            gen = seen[-1]
            rows.append(
                {
                    "question": question,
                    "loop_stop": stop,
                    "completion_tokens": gen.completion_tokens,
                    "finish_reason": gen.finish_reason,
                    "seconds": round(seconds, 2),
                    "reply": text,
                }
            )
            print(json.dumps(rows[-1])[:300], flush=True)
    decoding.looping = real  # type: ignore[assignment]
    return rows


def render(rows: list[dict[str, Any]], corpus: str) -> str:
    lines = [
        f"# Loop stop through a LlamaIndex query engine, corpus {corpus!r} (SmolLM2-135M, greedy,"
        " 256 tokens)",
        "",
        f"`OMP_NUM_THREADS=1 python -m benchmarks.loop_check --corpus {corpus}` (1 torch thread, "
        "shared 2-core CPU)",
        "",
        "| question | loop stop | reply tokens | finish | seconds |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['question']} | {'on' if r['loop_stop'] else 'off'} | "
            f"{r['completion_tokens']} | {r['finish_reason']} | {r['seconds']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="benchmarks/results/loop_check")
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--corpus", choices=("readme", "book"), default="readme")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = run(args.corpus, args.max_tokens)
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(rows, indent=2), encoding="utf-8")
    out.with_suffix(".md").write_text(render(rows, args.corpus), encoding="utf-8")


if __name__ == "__main__":
    main()
