"""Summarize: the memory lists the key points of a text; they retrieve passages to summarize.

By default the memory reads Walton's first letters from the *Frankenstein* extract; with
``--from-save`` it summarizes a memory saved earlier (for example by the quickstart, whose
memory holds the whole extract) without reading anything again.

    python examples/summarize.py                      # Letters 1-2
    python examples/summarize.py --letters 4          # all four letters
    python examples/summarize.py --from-save .cache/quickstart-memory
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from shared_core import Document, InputError, MemoRAG, MemoRAGError

DATA = Path(__file__).resolve().parent / "data" / "frankenstein.txt"
_HEADING = re.compile(r"^(Letter \d+|Chapter \d+)\s*$", re.MULTILINE)


def new_pipeline() -> MemoRAG:
    """The pipeline to memorize with: every model is the embedded offline default."""
    return MemoRAG()


def load_pipeline(save_dir: Path) -> MemoRAG:
    """A pipeline restored from a save, with the models that save names."""
    return MemoRAG.from_dir(save_dir)


def first_letters(text: str, count: int) -> str:
    """The extract from its start up to (not including) the heading after Letter ``count``."""
    headings = list(_HEADING.finditer(text))
    letters = [h for h in headings if h.group(1).startswith("Letter")]
    if not 1 <= count <= len(letters):
        raise InputError(f"--letters must be between 1 and {len(letters)}, got {count}")
    after = [h for h in headings if h.start() > letters[count - 1].start()]
    return text[: after[0].start()].rstrip() if after else text


def main(argv: Sequence[str] | None = None) -> int:
    """Memorize the letters (or load a save), then summarize; returns an exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--letters", type=int, default=2, help="how many letters (1-4)")
    source.add_argument("--from-save", type=Path, metavar="DIR", help="a saved memory")
    parser.add_argument("-k", type=int, default=5, help="passages to summarize (default 5)")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        if args.from_save is not None:
            pipe = load_pipeline(args.from_save)
            print(f"loaded {args.from_save} in {time.perf_counter() - started:.1f} s")
        else:
            text = first_letters(DATA.read_text("utf-8"), args.letters)
            pipe = new_pipeline()
            pipe.memorize(Document(text, doc_id=f"letters-1-{args.letters}"))
            print(
                f"memorized Letters 1-{args.letters} ({len(text):,} chars) "
                f"in {time.perf_counter() - started:.1f} s"
            )
        answer = pipe.answer(task_type="summarize", k=args.k, max_new_tokens=args.max_new_tokens)
    except (MemoRAGError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("\nkey points the memory listed:")
    for clue in answer.clues:
        if clue.kind != "query":
            print(f"  - {clue.text}")
    print("\npassages summarized:")
    for scored in answer.passages:
        meta = scored.passage.metadata
        print(
            f"  {meta.get('doc_id')} [{meta.get('start')}:{meta.get('end')}] "
            f"{' '.join(scored.passage.text.split())[:80]}..."
        )
    print(f"\nsummary:\n{answer.text}")
    timings = ", ".join(f"{k} {v:.1f} s" for k, v in answer.timings.items())
    print(f"\ntime: {timings}; total {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
