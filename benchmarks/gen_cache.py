"""Cached generations: greedy outputs keyed by (model, engine code, memory, prompt), with the
seconds each took when it was generated, so reruns skip the model and still report timings."""

from __future__ import annotations

import functools
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.methods import REPO
from shared_core.types import ChatTurn, Generation


def _sha(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


@functools.cache
def code_fingerprint() -> str:
    """Hash of the engine code whose changes change generations (memory, model layer, span
    copying), read once: the code this process imported, even if the files change meanwhile."""
    root = REPO / "shared_core"
    files = sorted(
        [*root.glob("memory/*.py"), *root.glob("models/*.py"), root / "clues" / "copying.py"]
    )
    h = hashlib.sha256()
    for path in files:
        if path.is_file():
            h.update(path.name.encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


class GenCache:
    """Generations and memory outcomes, keyed by sha256; a JSONL file (``None``: this run only)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.entries: dict[str, dict[str, Any]] = {}
        if path is not None and path.is_file():
            with path.open(encoding="utf-8") as fh:
                for line in fh:
                    try:
                        row = json.loads(line)
                        self.entries[row["key"]] = row["value"]
                    except (json.JSONDecodeError, KeyError, TypeError):
                        continue  # a line cut short by an interrupted run

    def get(self, key: str) -> dict[str, Any] | None:
        return self.entries.get(key)

    def put(self, key: str, value: dict[str, Any]) -> None:
        self.entries[key] = value
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps({"key": key, "value": value}, ensure_ascii=False) + "\n")


@dataclass
class CallLog:
    """Every generation asked for during one method's run: (seconds, cached, tokens)."""

    calls: list[tuple[float, bool, int]] = field(default_factory=list)

    def mark(self) -> int:
        return len(self.calls)

    def since(self, mark: int) -> tuple[float, int, bool]:
        """(seconds, completion tokens, all from the cache) of the calls after ``mark``; a run
        with no calls is not "cached"."""
        part = self.calls[mark:]
        return (
            sum(c[0] for c in part),
            sum(c[2] for c in part),
            bool(part) and all(c[1] for c in part),
        )


class CachedGenerator:
    """A ``TextGenerator`` that answers from the cache, else from ``source()`` (built lazily)."""

    def __init__(
        self,
        identity: str,
        cache: GenCache,
        source: Callable[[], Any],
        log: CallLog,
        *,
        stop_ids: Callable[[], set[int]] | None = None,
        copies: bool = True,
    ) -> None:
        self.identity = identity
        self.stop_ids = stop_ids or (lambda: source().end_ids)
        self.cache = cache
        self.source = source
        self.log = log
        self.supports_copying = copies  # the source decodes under a constraint

    def generate(
        self,
        prompt: str,
        *,
        history: Sequence[ChatTurn] = (),
        max_new_tokens: int = 256,
        stop: Sequence[str] = (),
        temperature: float = 0.0,
    ) -> Generation:
        turns = [[t.role, t.content] for t in history]
        key = _sha("gen", self.identity, prompt, turns, max_new_tokens, list(stop), temperature)
        return self._cached(
            key,
            lambda g: g.generate(
                prompt,
                history=history,
                max_new_tokens=max_new_tokens,
                stop=stop,
                temperature=temperature,
            ),
        )

    def _cached(self, key: str, produce: Callable[[Any], Generation]) -> Generation:
        """The cached generation under ``key``, else ``produce(source())`` timed and stored."""
        hit = self.cache.get(key)
        cached = hit is not None
        if hit is None:
            generator = self.source()
            started = time.perf_counter()
            out = produce(generator)
            hit = {
                "text": out.text,
                "prompt_tokens": out.prompt_tokens,
                "completion_tokens": out.completion_tokens,
                "finish_reason": out.finish_reason,
                "seconds": time.perf_counter() - started,
            }
            self.cache.put(key, hit)
        self.log.calls.append((float(hit["seconds"]), cached, int(hit["completion_tokens"])))
        return Generation(
            text=hit["text"],
            prompt_tokens=hit["prompt_tokens"],
            completion_tokens=hit["completion_tokens"],
            finish_reason=hit["finish_reason"],
        )

    def stream(self, prompt: str, **kw: Any) -> Any:
        yield self.generate(prompt, **kw).text

    @property
    def end_ids(self) -> set[int]:
        """The model's end-of-reply ids, without building the source (a cache hit needs none)."""
        return self.stop_ids()

    def generate_constrained(
        self,
        prompt: str,
        constraint: Any,
        *,
        history: Sequence[ChatTurn] = (),
        max_new_tokens: int = 256,
    ) -> Generation:
        """``generate`` under a ``SpanCopier``, cached by the copier's source and settings."""
        turns = [[t.role, t.content] for t in history]
        src = constraint.source
        shape = [constraint.max_spans, constraint.min_tokens, constraint.max_tokens]
        fingerprint = hashlib.sha256(src.ids.tobytes() + src.starts.tobytes()).hexdigest()
        key = _sha("copy", self.identity, prompt, turns, max_new_tokens, shape, fingerprint)
        return self._cached(
            key,
            lambda g: g.generate_constrained(
                prompt, constraint, history=history, max_new_tokens=max_new_tokens
            ),
        )
