"""Quickstart: MemoRAG over the opening of *Frankenstein*, with the embedded offline models.

A small memory model (SmolLM2-135M-Instruct, shipped in a pip package) reads the whole extract
(~19k tokens) once into a compressed KV cache, saved to ``.cache/quickstart-memory``. For each
question the memory writes retrieval clues; the clues and the question retrieve passages with
all-MiniLM-L6-v2; the same small model answers over those passages.

    python examples/quickstart.py            # first run: memorize (a few minutes on CPU), save
    python examples/quickstart.py            # later runs: load the saved memory, answer
    python examples/quickstart.py --fresh    # memorize again
    python examples/quickstart.py -q "Who is Elizabeth?" -q "Where is Ingolstadt?"

Timings on a 2-core CPU: under 5 minutes for the first run (reading the ~19.5k tokens is
most of it), under a minute for later runs. ``--threads 1`` helps when other processes are
busy on the same cores (PyTorch threads that share a core spin and run several times slower).

Nothing is downloaded. Each answer is a short phrase the model chose from the passages, shown
with its source (the passage and the character offsets of the phrase in it; docs/answers.md).
A 135M model still chooses wrongly at times; the point here is the mechanics: which clues the
memory wrote, which passages they found, what the answer was copied from, and how long each
step took.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from shared_core import Answer, Document, MemoRAG, MemoRAGError
from shared_core.pipeline import read_save_info

HERE = Path(__file__).resolve().parent
DATA = HERE / "data" / "frankenstein.txt"
DEFAULT_SAVE_DIR = HERE.parent / ".cache" / "quickstart-memory"
QUESTIONS = (
    "Who is Robert Walton writing his letters to?",
    "How did Victor Frankenstein's mother die?",
    "Where did Walton's crew find Victor Frankenstein?",
)


def default_threads() -> int:
    """PyTorch's own default (one thread per core)."""
    return torch.get_num_threads()


def new_pipeline() -> MemoRAG:
    """The pipeline to memorize with: every model is the embedded offline default."""
    return MemoRAG()


def load_pipeline(save_dir: Path) -> MemoRAG:
    """A pipeline restored from a save, with the models that save names."""
    return MemoRAG.from_dir(save_dir)


def document_for(path: Path) -> Document:
    """The text as one document whose id carries a hash of its content."""
    text = path.read_text("utf-8")
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]
    return Document(text, doc_id=f"{path.stem}@{digest}", metadata={"source": path.name})


def saved_state(save_dir: Path, doc_id: str) -> str:
    """``"match"`` if ``save_dir`` holds a memory of exactly this document, ``"other"`` if it
    holds another memory, ``"none"`` if it holds no memory."""
    if not (save_dir / "CURRENT").is_file():
        return "none"
    try:
        info = read_save_info(save_dir)
    except MemoRAGError:
        return "other"
    return "match" if info.get("pipeline", {}).get("documents") == [doc_id] else "other"


def show_answer(number: int, question: str, answer: Answer) -> None:
    """Print the clues, the passages with who found them, the answer and the timings."""
    t = answer.timings
    print(f"\nQ{number}. {question}")
    print(f"  clues ({t.get('clues', 0.0):.1f} s):")
    for clue in answer.clues:
        print(f"    {clue.kind:<10} {clue.text}")
    print(f"  passages ({t.get('search', 0.0) + t.get('fusion', 0.0):.2f} s):")
    for rank, scored in enumerate(answer.passages, start=1):
        meta = scored.passage.metadata
        kinds = ", ".join(sorted({c.kind for c in scored.found_by}))
        preview = " ".join(scored.passage.text.split())[:100]
        print(
            f"    {rank}. {meta.get('doc_id')} [{meta.get('start')}:{meta.get('end')}] "
            f"found by {kinds}"
        )
        print(f"       {preview}...")
    print(f"  answer ({t.get('generation', 0.0):.1f} s): {answer.text}")
    for citation in answer.citations:
        rank = next(
            (i for i, p in enumerate(answer.passages, 1) if p.passage.id == citation.passage_id), 0
        )
        quote = " ".join(citation.quote.split())
        quote = quote if len(quote) <= 100 else quote[:97] + "..."
        print(f"    source: passage {rank} ({citation.doc_id}) [{citation.start}:{citation.end}]")
        print(f'      "{quote}"')


def main(argv: Sequence[str] | None = None) -> int:
    """Memorize (or reload) the extract, then answer the questions; returns an exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--save-dir", type=Path, default=DEFAULT_SAVE_DIR)
    parser.add_argument("--fresh", action="store_true", help="memorize again even if saved")
    parser.add_argument("--text", type=Path, default=DATA, help="memorize this file instead")
    parser.add_argument(
        "-q",
        "--question",
        action="append",
        dest="questions",
        help="ask this instead of the built-in questions (repeatable)",
    )
    parser.add_argument("-k", type=int, default=3, help="passages per answer (default 3)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None, help="PyTorch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, args.threads or default_threads()))
    started = time.perf_counter()
    try:
        doc = document_for(args.text)
        state = saved_state(args.save_dir, doc.doc_id)
        if state == "match" and not args.fresh:
            print(f"loading the saved memory from {args.save_dir}")
            pipe = load_pipeline(args.save_dir)
            print(f"loaded in {time.perf_counter() - started:.1f} s")
            print(pipe.stats_text())
        else:
            print(
                f"memorizing {args.text.name} ({len(doc.text):,} chars); this runs once, "
                f"then the memory is saved to {args.save_dir}"
            )
            pipe = new_pipeline()
            pipe.memorize(doc, save_dir=args.save_dir, print_stats=True, overwrite=state != "none")
            print(f"memorized and saved in {time.perf_counter() - started:.1f} s")
        for number, question in enumerate(args.questions or QUESTIONS, start=1):
            show_answer(
                number,
                question,
                pipe.answer(question, k=args.k, max_new_tokens=args.max_new_tokens),
            )
    except (MemoRAGError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"\ntotal: {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
