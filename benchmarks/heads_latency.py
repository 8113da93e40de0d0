"""The retrieval heads' query pass on a ~100k-token memory (issue 13: target < 1 s).

A real memory (``MemoRAG()`` defaults, the first ``--chars`` of the longbook_needles book) is
tiled to ``--entries`` entries per layer and KV head, 7,700 by default: what a ~100k-token
text keeps once compressed to fit SmolLM2's 8,192 positions. Tiling keeps the tensor sizes,
hence the cost, of a real memory of that size. Timed per query, wall clock and process CPU:
the heads pass with "N/A" cached (every query after the first), the first query on a memory
(query and "N/A"), and the whole ``retrieve`` on the heads route. ``--memory DIR`` times a
saved ``MemoRAG`` memory as it is instead (no tiling), e.g. the whole 101k-token book
memorized by ``benchmarks.heads_dump --save-memory``.

    python -m benchmarks.heads_latency --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from shared_core.pipeline import MemoRAG
from shared_core.types import Document

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "longbook_needles"
OUT = Path(__file__).resolve().parent / "results"
QUESTIONS = [
    "Which paragraph names the river number {i}?",
    "Where does Victor first see the creature after it leaves the laboratory ({i})?",
    "What did the letter from Elizabeth say about Justine? {i}",
]


def tiled(pipe: MemoRAG, entries: int) -> None:
    """Tile the memory's tensors to ``entries`` (benchmark only: touches the private state)."""
    memory = pipe.memory
    state = memory._state
    reps = -(-entries // state.entries)

    def tile(ts, dim):
        return tuple(torch.cat([t] * reps, dim=dim).narrow(dim, 0, entries).clone() for t in ts)

    memory._state = replace(
        state,
        keys=tile(state.keys, -2),
        values=tile(state.values, -2),
        positions=tile(state.positions, -1),
        origins=tile(state.origins, -1),
        next_position=min(memory.max_positions - 64, entries),
    )


def clocked(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def summary(pairs: list[tuple[float, float]]) -> dict[str, float]:
    walls, cpus = [w for w, _ in pairs], [c for _, c in pairs]
    return {
        "median_s": statistics.median(walls),
        "min_s": min(walls),
        "max_s": max(walls),
        "cpu_median_s": statistics.median(cpus),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--entries", type=int, default=7700)
    ap.add_argument("--chars", type=int, default=20000)
    ap.add_argument("--memory", type=Path, help="a saved MemoRAG to time as it is")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument("--name", default="heads_latency")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory is not None:  # with today's shipped head set, not the one the save holds
        from shared_core.heads.head_set import shipped_head_sets

        pipe = MemoRAG(head_set=shipped_head_sets()[0]).load(args.memory)
    else:
        book = json.loads((DATA / "documents.jsonl").open().readline())
        pipe = MemoRAG()
        pipe.memorize([Document(book["text"][: args.chars], book["doc_id"])])
        tiled(pipe, args.entries)
    memory = pipe.memory
    heads = pipe._retriever.route.active_head_set(memory).heads
    load0 = os.getloadavg()
    memory.entry_attention("warm-up question?", heads)
    pipe.retrieve("warm-up question?", 5)
    runs: dict[str, list[tuple[float, float]]] = {"pass": [], "first": [], "retrieve": []}
    parts: dict[str, list[float]] = {"heads": [], "search": []}
    for i in range(args.repeats):
        q = QUESTIONS[i % len(QUESTIONS)].format(i=i)
        runs["pass"].append(clocked(lambda q=q: memory.entry_attention(q, heads)))
        memory._null_mass = {}  # the first query on a memory: "N/A" is not cached yet
        runs["first"].append(clocked(lambda q=q: memory.entry_attention(q, heads)))
        got: list = []
        runs["retrieve"].append(clocked(lambda q=q, got=got: got.append(pipe.retrieve(q + "!", 5))))
        for part, seconds in parts.items():
            seconds.append(got[0].timings.get(part, float("nan")))
    load1 = os.getloadavg()
    payload = {
        "command": "python -m benchmarks.heads_latency " + " ".join(argv or sys.argv[1:]),
        "entries": memory._state.entries,
        "heads": [list(h) for h in heads],
        "torch_threads": torch.get_num_threads(),
        "loadavg_start": load0,
        "loadavg_end": load1,
        "repeats": args.repeats,
        **{name: summary(pairs) for name, pairs in runs.items()},
        **{f"retrieve_{p}_median_s": statistics.median(v) for p, v in parts.items()},
    }
    stats = memory.stats()
    payload["memory"] = "saved" if args.memory else "tiled"
    payload["tokens_read"] = stats.tokens_read
    lines = [
        "# Heads query pass on a ~100k-token memory",
        "",
        f"Command: `{payload['command']}`  ",
        ("a saved memory of " if args.memory else "a tiled memory (")
        + f"{stats.tokens_read:,} tokens read{'' if args.memory else ')'}, "
        f"{payload['entries']:,} entries per layer and KV head, heads {payload['heads']}, "
        f"torch threads {payload['torch_threads']}, load average {load0[0]:.1f} at start, "
        f"{load1[0]:.1f} at end (2 cores), {args.repeats} repeats",
        "",
        "| what | median s | min s | max s | CPU s (median) |",
        "|---|---|---|---|---|",
    ]
    for name, label in (
        ("pass", 'heads pass ("N/A" cached)'),
        ("first", 'first query on a memory (query + "N/A")'),
        ("retrieve", "`retrieve` on the heads route (all of it)"),
    ):
        s = payload[name]
        lines.append(
            f"| {label} | {s['median_s']:.3f} | {s['min_s']:.3f} | {s['max_s']:.3f} "
            f"| {s['cpu_median_s']:.3f} |"
        )
    lines += [
        "",
        f"Inside `retrieve` (medians): heads {payload['retrieve_heads_median_s']:.3f} s, dense "
        f"search (embedding the query) {payload['retrieve_search_median_s']:.3f} s.",
    ]
    text = "\n".join(lines)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(payload, indent=1) + "\n")
    (args.out / f"{args.name}.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
