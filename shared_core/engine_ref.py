"""What a pickled or copied ``MemoRAG`` is: its settings and a pointer to its save directory.

A pickle never holds a memory (no pickled tensors, nothing a loader would have to trust): it
names the save directory the engine's state is in, and the settings to rebuild it with. On
unpickle the engine is rebuilt from those settings, cheaply, and reads the save the first time
it is used, as ``MemoRAG.from_dir(save_dir, **settings)`` would. An engine whose state is in no
save (memorized and never saved, changed since its last save, or built around caller objects a
save cannot hold) refuses to be pickled with ``NotPicklableError`` saying what to do.
"""

from __future__ import annotations

import pickle
import threading
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared_core.errors import NotPicklableError

#: Settings a pickle leaves out: a hub token has no place in a file that may be shipped around
#: (the reload reads ``HF_TOKEN`` / the local cache instead).
_LEFT_OUT = ("access_token",)


@dataclass(frozen=True)
class EngineRef:
    """A save directory, the snapshot the engine's state was in, and its settings."""

    save_dir: Path | None  # None: nothing memorized, the settings are the whole engine
    snapshot: str | None
    options: Mapping[str, Any] = field(default_factory=dict)


def plain_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """A config's ``as_options()`` as picklable plain values (read-only mappings as dicts)."""
    return {
        k: dict(v) if isinstance(v, Mapping) else v
        for k, v in options.items()
        if k not in _LEFT_OUT
    }


def refuse_injected(names: list[str]) -> NotPicklableError:
    given = ", ".join(f"{n}=" for n in names)
    return NotPicklableError(
        f"this MemoRAG was built around caller objects ({given}), which a save does not hold, "
        "so a pickle or copy could not rebuild it. Build the engine from settings "
        "(model names), save it with engine.save(dir), and pickle that; or share the engine "
        "object itself instead of copying it"
    )


def refuse_unsaved() -> NotPicklableError:
    return NotPicklableError(
        "this MemoRAG holds a memory that is in no save (memorized and never saved, or changed "
        "by memorize/add since its last save); a pickle or copy refers to a save directory, it "
        "never holds the memory itself. Call engine.save(dir) first (or build the engine with "
        "MemoRAG.from_dir(dir)); to share the engine, pass the same object instead of a copy"
    )


class Resume:
    """A pending load of a save, run once, on first use, by whichever thread gets there first.

    Other threads wait for it; the loading thread's own nested calls pass straight through.
    """

    def __init__(self, ref: EngineRef | None = None) -> None:
        self.ref = ref
        self._lock = threading.RLock()
        self._running = False

    def cancel(self) -> None:
        """Drop a pending load (the engine is about to memorize something else)."""
        with self._lock:
            self.ref = None

    def run(self, load: Callable[[Path], Any], current: Callable[[Path], str | None]) -> None:
        """Load ``ref.save_dir`` if still pending; ``current`` names its live snapshot."""
        if self.ref is None:
            return
        with self._lock:
            ref = self.ref
            if ref is None or self._running or ref.save_dir is None:
                return
            self._running = True
            try:
                live = current(ref.save_dir)
                if ref.snapshot is not None and live is not None and live != ref.snapshot:
                    warnings.warn(
                        f"{ref.save_dir} was saved again since this engine was pickled "
                        f"({ref.snapshot} then, {live} now): loading the current save",
                        stacklevel=4,
                    )
                load(ref.save_dir)
                self.ref = None
            finally:
                self._running = False


def check_picklable(engine: Any, owner: str) -> None:
    """Raise our error now if ``engine`` cannot be pickled, rather than let a framework drop it.

    LlamaIndex components silently remove attributes that fail to pickle; an adapter calls this
    from its ``__getstate__`` so a lost engine is an error naming the fix instead.
    """
    if engine is None:
        return
    try:
        pickle.dumps(engine)
    except NotPicklableError:
        raise
    except Exception as exc:  # any pickling failure of a caller-supplied engine
        raise NotPicklableError(
            f"{owner}'s engine ({type(engine).__name__}) cannot be pickled: {exc}. Use a "
            "saved shared_core.MemoRAG (engine.save(dir) or MemoRAG.from_dir(dir)), which "
            "pickles as a reference to its save directory"
        ) from exc


def shared_engine_memo(memo: dict[int, Any] | None, *engines: Any) -> dict[int, Any]:
    """A ``copy.deepcopy`` memo under which ``engines`` are shared, not copied (an adapter's
    deep copy is a new wrapper around the same engine: the weights and memory are not cloned)."""
    memo = {} if memo is None else memo
    for engine in engines:
        if engine is not None:
            memo.setdefault(id(engine), engine)
    return memo


__all__ = [
    "EngineRef",
    "Resume",
    "check_picklable",
    "plain_options",
    "refuse_injected",
    "refuse_unsaved",
    "shared_engine_memo",
]
