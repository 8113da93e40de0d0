"""``memorag``: memorize text files into a saved memory, then ask, retrieve and inspect it.

    memorag memorize book.txt notes.txt --save-dir mem/        # progress bars, then stats
    memorag add letters.txt mem/                               # more text, same memory
    memorag ask mem/ "Who is the narrator writing to?"
    memorag ask mem/ "And where?" --task-type dialogue --turn "user:Who wrote it?" \
        --turn "assistant:Walton."
    memorag retrieve mem/ "Who is the narrator writing to?" -k 5
    memorag stats mem/ --json

Every command takes ``--json`` (one JSON object on stdout). Errors print ``error: ...`` on
stderr and exit with status 2; set ``MEMORAG_DEBUG=1`` to see the traceback instead.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from shared_core.cli_inputs import documents_from_files, read_turns, stats_from_manifest
from shared_core.clues.keys import NO_CLUES_NOTE
from shared_core.errors import InputError, MemoRAGError
from shared_core.inputs import check_query
from shared_core.persistence.save_dir import check_not_inside_save
from shared_core.pipeline import TASK_TYPES, Answer, MemoRAG, read_save_info
from shared_core.types import RetrievalResult

PREVIEW_CHARS = 100


def _build_pipeline(save_dir: str | Path | None = None, **kwargs: Any) -> MemoRAG:
    """Every pipeline the CLI uses comes from here (tests patch it to inject tiny models).

    With ``save_dir`` the pipeline is loaded from that save (``MemoRAG.from_dir``); otherwise a
    new one is built from ``kwargs``.
    """
    if save_dir is not None:
        return MemoRAG.from_dir(save_dir, **kwargs)
    return MemoRAG(**kwargs)


# -- argument parsing -------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _non_empty(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="memorag",
        description="MemoRAG from the command line: a memory model reads your text once; "
        "questions are answered over passages found by the memory's clues.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--json", action="store_true", help="print one JSON object")
        return p

    p = command("memorize", "read text files into a new memory and save it")
    p.add_argument("files", nargs="+", metavar="FILE", help="text files (UTF-8 unless --encoding)")
    p.add_argument("--encoding", default="utf-8", metavar="NAME", help=_ENCODING_HELP)
    p.add_argument("--save-dir", required=True, type=_non_empty, metavar="DIR")
    p.add_argument("--overwrite", action="store_true", help="replace a memory already saved in DIR")
    p.add_argument(
        "--beacon-ratio",
        type=_positive_int,
        default=4,
        metavar="N",
        help="keep 1 KV entry per N text tokens (default 4; 1 keeps all)",
    )
    p.add_argument(
        "--mem-model",
        type=_non_empty,
        metavar="NAME",
        help="memory model (hub id or folder; default: embedded SmolLM2-135M)",
    )
    p.add_argument(
        "--ret-model",
        type=_non_empty,
        metavar="NAME",
        help="embedding model (default: embedded all-MiniLM-L6-v2)",
    )
    p.set_defaults(func=_memorize)

    p = command("add", "read more text files into a saved memory (nothing is re-read)")
    p.add_argument("paths", nargs="+", metavar="FILE... DIR", help="text files, then the save dir")
    p.add_argument("--encoding", default="utf-8", metavar="NAME", help=_ENCODING_HELP)
    p.set_defaults(func=_add)

    p = command("ask", "answer a question over a saved memory")
    p.add_argument("save_dir", metavar="DIR")
    p.add_argument("question", metavar="QUESTION")
    p.add_argument("--task-type", choices=TASK_TYPES, default="memorag")
    p.add_argument("--max-new-tokens", type=_positive_int, default=256, metavar="N")
    p.add_argument(
        "-k",
        type=_positive_int,
        default=None,
        metavar="N",
        help="passages to answer over (default: the save's ret_hit)",
    )
    p.add_argument(
        "--history",
        metavar="FILE.json",
        help='earlier turns: a JSON list of {"role": "user"|"assistant"|"system", "content": ...}',
    )
    p.add_argument(
        "--turn",
        action="append",
        default=[],
        metavar="ROLE:TEXT",
        help="an earlier turn, e.g. 'user:Who wrote it?' (repeat, in order; after --history)",
    )
    p.add_argument("--stream", action="store_true", help="print the answer as it is written")
    p.set_defaults(func=_ask)

    p = command("retrieve", "show the memory's clues and the passages they retrieve")
    p.add_argument("save_dir", metavar="DIR")
    p.add_argument("question", metavar="QUESTION")
    p.add_argument("-k", type=_positive_int, default=3, metavar="N")
    p.set_defaults(func=_retrieve)

    p = command("stats", "describe a saved memory")
    p.add_argument("save_dir", metavar="DIR")
    p.set_defaults(func=_stats)
    from shared_core.cli_calibrate import register

    register(sub, command)
    return parser


# -- helpers ----------------------------------------------------------------------------------


_ENCODING_HELP = "text encoding of the files (default utf-8; e.g. latin-1, cp1252)"


def _check_target(save_dir: Path, overwrite: bool) -> None:
    """Refuse a save dir that would be refused after memorizing, before the slow part."""
    check_not_inside_save(save_dir)  # also with --overwrite: it would break the outer save
    if not save_dir.exists():
        return
    if not save_dir.is_dir():
        raise InputError(f"--save-dir {save_dir} is a file, not a directory")
    if overwrite:
        return
    if (save_dir / "CURRENT").is_file():
        raise InputError(
            f"{save_dir} already holds a saved memory; to add these files to it run "
            f"`memorag add FILE... {save_dir}`, or pass --overwrite to replace it (its "
            "documents are then lost)"
        )
    if any(not p.name.startswith(".") for p in save_dir.iterdir()):
        raise InputError(
            f"{save_dir} is not empty and holds no memory; pick an empty directory "
            "or pass --overwrite"
        )


def _emit(data: dict[str, Any]) -> None:
    print(json.dumps(data, ensure_ascii=False, default=str))


def _preview(text: str, limit: int = PREVIEW_CHARS) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _passages(result: RetrievalResult | Answer) -> list[dict[str, Any]]:
    rows = []
    for rank, scored in enumerate(result.passages, start=1):
        meta = scored.passage.metadata
        rows.append(
            {
                "rank": rank,
                "id": scored.passage.id,
                "doc_id": meta.get("doc_id"),
                "start": meta.get("start"),
                "end": meta.get("end"),
                "score": round(scored.score, 6),
                "found_by": sorted({c.kind for c in scored.found_by}),
                "text": scored.passage.text,
            }
        )
    return rows


def _clues(result: RetrievalResult | Answer) -> list[dict[str, Any]]:
    return [{"kind": c.kind, "weight": c.weight, "text": c.text} for c in result.clues]


def _print_passages(rows: list[dict[str, Any]], out: TextIO) -> None:
    for row in rows:
        where = f"[{row['start']}:{row['end']}]" if row["start"] is not None else ""
        print(
            f"  {row['rank']}. {row['doc_id']} {where}  score {row['score']:.4f}  "
            f"found by {', '.join(row['found_by'])}",
            file=out,
        )
        print(f"     {_preview(row['text'])}", file=out)


def _timings(timings: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.2f}s" for k, v in timings.items())


def _memorize(args: argparse.Namespace) -> int:
    docs = documents_from_files(args.files, args.encoding)  # all checked before any model loads
    save_dir = Path(args.save_dir)
    _check_target(save_dir, args.overwrite)
    pipe = _build_pipeline(
        mem_model_name_or_path=args.mem_model,
        ret_model_name_or_path=args.ret_model,
        beacon_ratio=args.beacon_ratio,
    )
    started = time.perf_counter()
    # Progress bars go to stderr; with --json the stats text goes there too.
    quiet = contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext()
    with quiet:
        pipe.memorize(docs, save_dir=save_dir, print_stats=True, overwrite=args.overwrite)
    seconds = time.perf_counter() - started
    stats = pipe.stats()
    if args.json:
        _emit(
            {
                "save_dir": str(save_dir),
                "documents": [d.doc_id for d in docs],
                "chunks": stats["chunks"],
                "seconds": round(seconds, 3),
                "memory": stats["memory"],
            }
        )
    else:
        print(
            f"saved {len(docs)} document(s), {stats['chunks']} chunks to {save_dir} "
            f"in {seconds:.1f} s"
        )
    return 0


def _add(args: argparse.Namespace) -> int:
    if len(args.paths) < 2:
        raise InputError("memorag add needs one or more text files, then the save directory")
    *files, save_dir = args.paths
    docs = documents_from_files(files, args.encoding)
    info = read_save_info(save_dir)  # a clear error before any model is loaded
    saved = set(info.get("pipeline", {}).get("documents") or [])
    again = [d.doc_id for d in docs if d.doc_id in saved]
    if again:
        raise InputError(
            f"{save_dir} already holds {', '.join(map(repr, again[:3]))}; rename the file(s) to "
            "add them as new documents"
        )
    pipe = _build_pipeline(save_dir=save_dir)
    started = time.perf_counter()
    quiet = contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext()
    with quiet:
        pipe.add(docs, save_dir=save_dir)
    seconds = time.perf_counter() - started
    stats = pipe.stats()
    added = [d.doc_id for d in docs]
    if args.json:
        _emit(
            {
                "save_dir": str(save_dir),
                "added": added,
                "documents": [d["doc_id"] for d in pipe.memory.documents],
                "chunks": stats["chunks"],
                "seconds": round(seconds, 3),
                "memory": stats["memory"],
            }
        )
    else:
        print(
            f"added {len(added)} document(s) to {save_dir}: now {len(pipe.memory.documents)} "
            f"document(s), {stats['chunks']} chunks ({seconds:.1f} s)"
        )
    return 0


def _load(save_dir: str) -> tuple[dict[str, Any], MemoRAG]:
    info = read_save_info(save_dir)  # a clear error before any model is loaded
    return info, _build_pipeline(save_dir=save_dir)


def _ask(args: argparse.Namespace) -> int:
    if args.stream and args.json:
        raise InputError("--stream and --json cannot be combined (JSON is printed at the end)")
    check_query(args.question)  # e.g. an undecodable byte: refused before any model loads
    history = read_turns(args.history, args.turn)
    if args.task_type == "dialogue" and not history:
        raise InputError(
            "--task-type dialogue answers a follow-up: pass the earlier turns with "
            "--turn 'user:...' --turn 'assistant:...' (repeat) or --history FILE.json"
        )
    _, pipe = _load(args.save_dir)
    write = None
    if args.stream:

        def write(piece: str) -> None:
            sys.stdout.write(piece)
            sys.stdout.flush()

    answer = pipe.answer(
        args.question,
        task_type=args.task_type,
        k=args.k,
        history=history,
        max_new_tokens=args.max_new_tokens,
        on_text=write,
    )
    if args.json:
        _emit(
            {
                "question": args.question,
                "task_type": answer.task_type,
                "answer": answer.text,
                "clues": _clues(answer),
                "clues_empty": NO_CLUES_NOTE in answer.notes,
                "notes": list(answer.notes),
                "passages": _passages(answer),
                "timings": answer.timings,
            }
        )
        return 0
    if args.stream:
        print()
    else:
        print(answer.text)
    if answer.passages:
        print("\nsources:")
        _print_passages(_passages(answer), sys.stdout)
    print(f"\ntime: {_timings(answer.timings)}")
    return 0


def _retrieve(args: argparse.Namespace) -> int:
    check_query(args.question)
    _, pipe = _load(args.save_dir)
    result = pipe.retrieve(args.question, args.k)
    if args.json:
        _emit(
            {
                "question": args.question,
                "k": args.k,
                "clues": _clues(result),
                "clues_empty": NO_CLUES_NOTE in result.notes,
                "notes": list(result.notes),
                "passages": _passages(result),
                "timings": dict(result.timings),
            }
        )
        return 0
    print("clues:")
    for clue in result.clues:
        print(f"  {clue.kind:<10} x{clue.weight:g}  {clue.text}")
    print("passages:")
    _print_passages(_passages(result), sys.stdout)
    print(f"time: {_timings(dict(result.timings))}")
    return 0


def _stats(args: argparse.Namespace) -> int:
    info = read_save_info(args.save_dir)  # the manifest only: no model is loaded
    pipeline = info.get("pipeline", {})
    index = info.get("index", {})
    memory = stats_from_manifest(info.get("memory", {}))
    if args.json:
        _emit(
            {
                "save_dir": args.save_dir,
                "snapshot": info.get("snapshot"),
                "lineage": info.get("lineage"),
                "format_version": info.get("format_version"),
                "documents": pipeline.get("documents"),
                "pipeline": pipeline,
                "index": index,
                "chunks": index.get("count"),
                "memory": memory,
            }
        )
        return 0
    documents = pipeline.get("documents") or []
    print(f"save:              {args.save_dir} ({info.get('snapshot')})")
    print(f"memory model:      {pipeline.get('mem_model_name_or_path') or 'embedded default'}")
    print(f"embedder:          {pipeline.get('embedder')}")
    shown = ", ".join(map(str, documents[:5])) + (" ..." if len(documents) > 5 else "")
    print(f"documents:         {len(documents)} ({shown})")
    for key, value in memory.items():
        print(f"{key.replace('_', ' ') + ':':<19}{value}")
    size = pipeline.get("retrieval_chunk_size")
    print(f"retrieval corpus:  {index.get('count')} chunks of <= {size} tokens")
    return 0


def _show_warning(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> None:
    """Warnings (e.g. "k is more than the passages") as one ``warning:`` line on stderr."""
    print(f"warning: {message}", file=sys.stderr)


# -- entry point ------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``memorag`` command line; returns the exit status (0 ok, 2 error)."""
    if hasattr(signal, "SIGXFSZ") and threading.current_thread() is threading.main_thread():
        # Reliability: past a file-size limit (ulimit -f) a write raises EFBIG, which ends the
        # command with our error (the old save intact), instead of the signal killing it.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help exits 0, usage errors 2
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return int(args.func(args))
    except (MemoRAGError, OSError, ValueError, ImportError) as exc:
        if os.environ.get("MEMORAG_DEBUG"):
            raise
        message = str(exc) or type(exc).__name__
        print(f"error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
