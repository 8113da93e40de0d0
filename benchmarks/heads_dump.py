"""Record every head's attention per chunk, once per question, for offline head studies.

For each question (context setting: its own documents are the memory) the shipped
``MemoRAG()`` memorizes the documents and runs one query pass with **all** heads of the
memory model. Per (head, chunk of the engine's index) it records the query's mass, the "N/A"
question's mass and the number of kept entries; per chunk the query's cosine similarity
(the dense list) and which gold items the chunk covers. ``benchmarks.heads_study`` then
selects heads, normalises and fuses offline, the way ``MemoRAG()`` does, without the model::

    python -m benchmarks.heads_dump --set hotpotqa --limit 100 --name dump_hotpotqa

``--setting pooled`` memorizes every selected question's documents as one memory (the shipped
``MemoRAG()``: it compresses as much as the positions require) and asks each question of it.
Tensors go to ``results/dumps/<name>.safetensors`` (float64), the rest to ``<name>.json``
(not committed: ``.gitignore``); both are rewritten every 5 questions, so an interrupted run
keeps what it recorded (``--resume`` continues it).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.datasets import load_set
from benchmarks.heads_eval import DATA, select
from benchmarks.metrics import covers
from benchmarks.report import environment

OUT = Path(__file__).parent / "results" / "dumps"


def record(
    base: Any, docs: Sequence[Any], q: Any, memorize: bool = True
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Memorize ``docs`` (unless the memory holds them) and record the all-heads pass of ``q``
    (tensors, metadata)."""
    import torch

    from shared_core.heads.ranker import chunk_keys, score_chunks
    from shared_core.heads.route import query_similarity
    from shared_core.memory.attention_probe import EntryAttention

    started = time.perf_counter()
    if memorize:
        base.memorize(list(docs))
    memorize_s = time.perf_counter() - started
    memory, index = base.memory, base.index
    n_layers, n_heads = memory.head_grid()
    heads = [(layer, h) for layer in range(n_layers) for h in range(n_heads)]
    chunks = list(index.chunks)
    keys = chunk_keys(memory, chunks)
    started = time.perf_counter()
    attention = memory.entry_attention(q.question, heads)
    pass_s = time.perf_counter() - started
    null = memory._null_mass[tuple(heads)][1]  # the "N/A" mass the pass subtracted

    def per_chunk(mass: torch.Tensor) -> torch.Tensor:
        return score_chunks(
            EntryAttention(attention.heads, mass, attention.origins, attention.token_map), keys
        )

    sims = query_similarity(index, q.question, {c.chunk_id for c in chunks})
    tensors = {
        "query": per_chunk(attention.mass + null),
        "null": per_chunk(null),
        "entries": per_chunk(torch.ones_like(null)),
        "dense": torch.tensor([sims[c.chunk_id] for c in chunks], dtype=torch.float64),
    }
    spans = [(str(c.doc_id), int(c.start), int(c.end)) for c in chunks]
    meta = {
        "id": q.id,
        "type": q.type,
        "question": q.question,
        "chunks": len(chunks),
        "gold_items": len(q.gold),
        "covers": [[g for g, item in enumerate(q.gold) if covers(s, item)] for s in spans],
        "tokens": memory.stats().tokens_read,
        "memorize_s": round(memorize_s, 2),
        "pass_s": round(pass_s, 3),
    }
    return tensors, meta


def save(out: Path, name: str, payload: dict[str, Any], tensors: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out / f"{name}.safetensors"))
    (out / f"{name}.json").write_text(json.dumps(payload, indent=1))


def load(out: Path, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A dump's metadata and tensors (``q<i>.<kind>``)."""
    from safetensors.torch import load_file

    payload = json.loads((out / f"{name}.json").read_text())
    return payload, load_file(str(out / f"{name}.safetensors"))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", required=True)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--setting", choices=["context", "pooled"], default="context")
    parser.add_argument("--scopes", nargs="*", default=[], help="only these documents' questions")
    parser.add_argument("--per-scope", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--save-memory", type=Path, help="save the (last) memorized MemoRAG here")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--name", required=True)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    import torch

    from shared_core.pipeline import MemoRAG

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    bench = load_set(DATA / args.set)
    questions = select(bench, args.start, args.limit, args.scopes, args.per_scope)
    payload: dict[str, Any] = {
        "command": "python -m benchmarks.heads_dump " + " ".join(argv or sys.argv[1:]),
        "env": environment(),
        "set": args.set,
        "rows": [],
    }
    tensors: dict[str, Any] = {}
    if args.resume and (args.out / f"{args.name}.json").exists():
        payload, tensors = load(args.out, args.name)
    done = {r["id"] for r in payload["rows"]}
    seen: dict[str, Any] = {}
    for other in questions:  # the pooled setting: every question's documents in one memory
        for d in bench.scoped_documents(other):
            seen.setdefault(d.doc_id, d)
    pooled = list(seen.values())
    base = MemoRAG()
    held = None
    for n, q in enumerate(questions, 1):
        if q.id in done:
            continue
        docs = pooled if args.setting == "pooled" else bench.scoped_documents(q)
        scope = tuple(d.doc_id for d in docs)
        got, meta = record(base, docs, q, memorize=scope != held)
        if args.save_memory is not None and scope != held:
            base.save(args.save_memory, overwrite=True)
        held = scope
        i = len(payload["rows"])
        tensors.update({f"q{i}.{k}": v for k, v in got.items()})
        payload["rows"].append(meta)
        print(
            f"{args.set} {n}/{len(questions)} {meta['tokens']} tokens, memorize "
            f"{meta['memorize_s']} s, pass {meta['pass_s']} s",
            file=sys.stderr,
            flush=True,
        )
        if n % 5 == 0 or n == len(questions):
            save(args.out, args.name, payload, tensors)
    save(args.out, args.name, payload, tensors)


if __name__ == "__main__":
    main()
