"""Personalize: the memory reads a user's reading/viewing log and recommends what's next.

Each line of ``examples/data/reading_history.jsonl`` becomes one short document ("2024-01-04,
book: The Left Hand of Darkness by Ursula K. Le Guin, rated 5/5. The crossing of ..."). With
``task_type="personalize"`` the memory, having read the whole log, lists what the user seems
to like; those preferences retrieve matching entries, and the generator recommends from them.

    python examples/personalize.py
    python examples/personalize.py -q "Suggest a film for a quiet evening."
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from shared_core import Document, MemoRAG, MemoRAGError

HISTORY = Path(__file__).resolve().parent / "data" / "reading_history.jsonl"
QUESTION = "What should I read next?"


def new_pipeline() -> MemoRAG:
    """The pipeline to use: every model is the embedded offline default."""
    return MemoRAG()


def history_documents(path: Path) -> list[Document]:
    """One document per log entry, rendered as a line of text; fields kept as metadata."""
    docs = []
    for number, line in enumerate(path.read_text("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        entry = json.loads(line)
        text = (
            f"{entry['date']}, {entry['kind']}: {entry['title']} by {entry['creator']}, "
            f"rated {entry['rating']}/5. {entry['note']}"
        )
        docs.append(
            Document(
                text,
                doc_id=f"entry-{number:02d}",
                metadata={
                    "title": entry["title"],
                    "kind": entry["kind"],
                    "rating": entry["rating"],
                },
            )
        )
    return docs


def main(argv: Sequence[str] | None = None) -> int:
    """Memorize the log, then ask for a recommendation; returns an exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-q", "--question", default=QUESTION)
    parser.add_argument("--history", type=Path, default=HISTORY, help="a JSONL log like ours")
    parser.add_argument("-k", type=int, default=5, help="log entries to recommend from")
    parser.add_argument("--max-new-tokens", type=int, default=96)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        docs = history_documents(args.history)
        pipe = new_pipeline()
        pipe.memorize(docs)
        print(f"memorized {len(docs)} log entries in {time.perf_counter() - started:.1f} s")
        answer = pipe.answer(
            args.question, task_type="personalize", k=args.k, max_new_tokens=args.max_new_tokens
        )
    except (MemoRAGError, OSError, ValueError, KeyError) as exc:
        print(f"error: {exc!s}", file=sys.stderr)
        return 2
    print("\nwhat the memory thinks this user likes:")
    for clue in answer.clues:
        if clue.kind != "query":
            print(f"  - {clue.text}")
    print("\nlog entries it retrieved:")
    for scored in answer.passages:
        meta = scored.passage.metadata
        kinds = ", ".join(sorted({c.kind for c in scored.found_by}))
        print(
            f"  {meta['doc_id']}  {meta.get('title')} ({meta.get('kind')}, "
            f"{meta.get('rating')}/5)  found by {kinds}"
        )
    print(f"\n{args.question}\n{answer.text}")
    timings = ", ".join(f"{k} {v:.1f} s" for k, v in answer.timings.items())
    print(f"\ntime: {timings}; total {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
