"""Helpers for the reliability tests, and a fork-server that the crash test SIGKILLs.

As a module it gives the tests one tiny, real pipeline (compressed KV memory on the tiny
Llama + the embedded MiniLM embedder). As a script (``python tests/crash_worker.py DIR``) it
loads the models once, prints ``ready`` and then, for every ``<op> <trial>`` line on stdin,
forks a child that runs the operation against the save directory ``DIR``:

* ``memorize N``: ``memorize(docs_for(N), DIR, overwrite=True)`` (a new memory);
* ``add N``: ``load(DIR)`` then ``add(extra_doc(N), save_dir=DIR)`` (an incremental save).

The parent prints ``child <pid>`` (the test kills that pid with SIGKILL after a random delay)
and ``exit <status>`` once the child is gone, but reaps it only when the test sends ``reap``
(so the pid cannot be reused before the test's kill). The child prints ``step <name>`` as it
enters each stage of the work and ``done`` when the call returned. Each stage sleeps
``STEP_DELAY`` seconds and the tensor file is written in two halves, so random kills land
inside every stage of a save, including half-written files. ``<op> <trial> <step> <n>``
instead pauses the child (``paused``) at the n-th ``<step>``, for a kill at a known point.
The engine itself has no test hook: all of this is monkeypatching in the child.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from tiny_models import tiny_model, tiny_tokenizer

from shared_core.memory.compressed_kv import CompressedKVMemory
from shared_core.pipeline import MemoRAG
from shared_core.retrieval.embeddings import Embedder
from shared_core.types import Clue, Document

STEP_DELAY = 0.03
ANIMALS = ["fox", "owl", "cat", "bee", "elk", "dog", "yak", "emu", "ant", "cod"]
PLACES = ["river", "barn", "attic", "meadow", "forest", "kennel", "hill", "plain", "nest", "sea"]


@functools.lru_cache(maxsize=1)
def shared_embedder() -> Embedder:
    """The embedded MiniLM embedder, loaded once per process (offline)."""
    embedder = Embedder.load(device="cpu")
    _ = embedder.dim
    return embedder


class RawClues:
    """A clue writer that turns the memory's raw reply into one clue.

    The tiny random model's replies are not useful clues, but they depend on every token in
    the prompt's cache: if two concurrent prompts saw each other's tokens, the clue (and so
    the retrieved passages) would change.
    """

    def __init__(self, max_new_tokens: int = 8) -> None:
        self.max_new_tokens = max_new_tokens

    def write(self, query: str, memory: Any, *, history: Any = ()) -> list[Clue]:
        reply = memory.generate(
            query, history=tuple(history), max_new_tokens=self.max_new_tokens, temperature=0.0
        )
        return [Clue(text=f"{query} {reply.text!r}", kind="custom")]


def make_memory(model: Any = None, **kw: Any) -> CompressedKVMemory:
    kw.setdefault("window", 128)
    kw.setdefault("reserve_tokens", 128)
    return CompressedKVMemory(
        model if model is not None else tiny_model("llama"),
        tiny_tokenizer(),
        show_progress=False,
        **{"compress": "always", "scorer": "key_norm", **kw},
    )


def make_pipeline(model: Any = None, *, clues: Any = None, **memory_kw: Any) -> MemoRAG:
    """A real pipeline on tiny models: compressed KV memory (tiny Llama) + MiniLM."""
    return MemoRAG(
        memory=make_memory(model, **memory_kw),
        embedder=shared_embedder(),
        clue_strategy=clues if clues is not None else RawClues(),
        retrieval_chunk_size=40,
        chunk_overlap=0,
        language="en",
    )


def corpus(n: int = 10) -> list[Document]:
    return [
        Document(
            f"The {ANIMALS[i % 10]} {i} lives by the {PLACES[i % 10]}. "
            f"It eats food of kind {i * 3}, and sleeps at hour {i % 24}.",
            doc_id=f"doc-{i}",
        )
        for i in range(n)
    ]


def docs_for(trial: int) -> list[Document]:
    """What ``memorize <trial>`` memorizes."""
    return [
        Document(
            f"Trial {trial} note {j}: the {ANIMALS[(trial + j) % 10]} crossed the "
            f"{PLACES[(trial * 3 + j) % 10]} at dawn number {trial * 7 + j}.",
            doc_id=f"t{trial}-{j}",
        )
        for j in range(2)
    ]


def extra_doc(trial: int) -> Document:
    """What ``add <trial>`` adds."""
    return Document(
        f"Added in trial {trial}: the {ANIMALS[trial % 10]} moved to the "
        f"{PLACES[(trial + 5) % 10]} with {trial} friends.",
        doc_id=f"add-{trial}",
    )


# -- the fork-server ------------------------------------------------------------------------


def _say(line: str) -> None:
    os.write(1, (line + "\n").encode())


def _instrument(stop: tuple[str, int] | None) -> None:
    """Announce and slow down every stage of memorize/add/save (in the child only)."""
    import safetensors.torch

    import shared_core.persistence.files as files_mod
    import shared_core.persistence.save_dir as save_dir_mod
    import shared_core.retrieval.index as index_mod
    import shared_core.saving as saving_mod

    seen: dict[str, int] = {}

    def announce(name: str) -> None:
        seen[name] = seen.get(name, 0) + 1
        _say(f"step {name}")
        if stop == (name, seen[name]):
            _say("paused")
            time.sleep(3600)  # until the test's SIGKILL
        time.sleep(STEP_DELAY)

    def staged(name: str, fn: Any) -> Any:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            announce(name)
            return fn(*args, **kwargs)

        return wrapper

    CompressedKVMemory._read = staged("read-text", CompressedKVMemory._read)
    index_mod.DenseIndex.add = staged("embed", index_mod.DenseIndex.add)
    index_mod.DenseIndex.save = staged("write-index", index_mod.DenseIndex.save)
    saving_mod.write_manifest = staged("write-manifest", saving_mod.write_manifest)
    save_dir_mod.fsync_tree = staged("fsync-snapshot", save_dir_mod.fsync_tree)
    # staging, rename, CURRENT (and the folders fsync_tree syncs)
    files_mod.fsync_dir = save_dir_mod.fsync_dir = staged("dir-sync", files_mod.fsync_dir)
    save_dir_mod.shutil.rmtree = staged("cleanup", save_dir_mod.shutil.rmtree)

    import shared_core.memory.kv_persist as kv_persist_mod

    def slow_write_tensors(path: Path, tensors: Any, metadata: Any = None) -> int:
        data = safetensors.torch.save(tensors, metadata=metadata)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
        with os.fdopen(fd, "wb") as f:  # written in two halves: a kill can truncate it
            f.write(data[: len(data) // 2])
            f.flush()
            announce("write-tensors")  # the file is half written here
            f.write(data[len(data) // 2 :])
        return len(data)

    kv_persist_mod.write_tensors = slow_write_tensors


def _own_progress_lock() -> None:
    """Give this child its own tqdm lock. The one inherited from the fork-server holds a
    semaphore shared by every child, and a sibling SIGKILLed while drawing a progress bar
    leaves it taken: the next child then waits for it forever."""
    import threading

    from tqdm import std
    from tqdm.auto import tqdm as auto_tqdm

    for cls in {std.tqdm, auto_tqdm}:
        cls.set_lock(threading.RLock())


def _child(save_dir: str, op: str, trial: int, stop: tuple[str, int] | None) -> None:
    import faulthandler

    # A child that has not finished after a minute writes every thread's stack to the log.
    faulthandler.dump_traceback_later(60, exit=False, file=sys.stderr)
    _own_progress_lock()
    _instrument(stop)
    pipe = make_pipeline(_MODEL)
    if op == "memorize":
        pipe.memorize(docs_for(trial), save_dir, overwrite=True)
    elif op == "add":
        pipe.load(save_dir)
        pipe.add([extra_doc(trial)], save_dir=save_dir)
    else:
        raise ValueError(op)
    _say("done")


_MODEL: Any = None


def main(save_dir: str) -> None:
    global _MODEL
    import faiss
    import torch

    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    _MODEL = tiny_model("llama")
    shared_embedder()
    _say("ready")
    for line in sys.stdin:
        op, trial, *rest = line.split()
        stop = (rest[0], int(rest[1])) if rest else None
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                _child(save_dir, op, int(trial), stop)
            except BaseException as exc:  # reported, then the child ends
                _say(f"error {type(exc).__name__}: {exc}")
                code = 1
            os._exit(code)
        _say(f"child {pid}")
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)  # a zombie keeps its pid
        killed = info.si_code in (os.CLD_KILLED, os.CLD_DUMPED)
        _say(f"exit {'signal' if killed else 'code'} {info.si_status}")
        sys.stdin.readline()  # "reap": the test has sent its kill
        os.waitpid(pid, 0)


if __name__ == "__main__":
    main(sys.argv[1])
