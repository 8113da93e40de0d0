"""Deterministic stand-ins for the model parts of ``MemoRAG``, for pipeline tests.

``ScriptedMemory`` is a real ``Memory``: it memorizes, adds, saves and loads (one JSON file),
but its ``generate``/``stream`` answer from a table of rules keyed by substrings of the prompt,
so a clue prompt gets scripted clue lines. ``ScriptedGenerator`` is a ``TextGenerator`` with a
fixed (or computed) reply. Both record every prompt and history they receive, so a test can
check what reached each step. Use them with the real embedder::

    pipe = MemoRAG(memory=ScriptedMemory({"Copy the sentences": "..."}),
                   embedder=Embedder.load(), generator=ScriptedGenerator("ok"))
"""

from __future__ import annotations

import functools
import json
import re
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shared_core.errors import IncompatibleMemoryError, InputError, NoMemoryError, PersistenceError
from shared_core.inputs import ContextInput, as_documents, check_query
from shared_core.memory.base import Memory, MemoryStats
from shared_core.models.decoding import RunRequest
from shared_core.models.json_grammar import vocabulary
from shared_core.persistence import read_json
from shared_core.prompts import get_prompts
from shared_core.retrieval.embeddings import Embedder
from shared_core.types import ChatTurn, Document, Generation


def marker(template: str) -> str:
    """The longest fixed piece of a prompt template: a substring every prompt it renders holds.

    Rules keyed by markers follow the engine's wording wherever it changes.
    """
    pieces = re.split(r"\{[a-z_]+\}", template)
    return max((p.strip() for p in pieces), key=len)


_EN = get_prompts("en")
#: Substrings of the engine's English prompts, to key rules by prompt kind.
SPAN = marker(_EN.span)
SURROGATE = marker(_EN.surrogate)
DRAFT = marker(_EN.draft_answer)
KEY_POINTS = marker(_EN.key_points)
PREFERENCES = marker(_EN.preferences)
FOLLOWUP = marker(_EN.resolve_followup)

_FILE = "scripted_memory.json"

Key = str | tuple[str, ...]
Rules = Mapping[Key, str] | Sequence[tuple[Key, str]]


@dataclass(frozen=True)
class Call:
    """One prompt a scripted model received."""

    prompt: str
    history: tuple[ChatTurn, ...]
    max_new_tokens: int
    stop: tuple[str, ...]


def _cut(text: str, max_new_tokens: int, stop: Sequence[str]) -> tuple[str, str]:
    """Apply ``stop`` sequences and a word budget; return ``(text, finish_reason)``."""
    reason = "stop"
    for s in stop:
        if s and s in text:
            text = text[: text.index(s)]
    words = text.split(" ")
    if len(words) > max_new_tokens:
        text, reason = " ".join(words[:max_new_tokens]), "length"
    return text, reason


def _pieces(text: str) -> Iterator[str]:
    """Stream ``text`` word by word, spaces kept, so the pieces join back exactly."""
    words = text.split(" ")
    for i, word in enumerate(words):
        yield word if i == 0 else " " + word


class _Recorder:
    """Thread-safe recording of calls."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self._calls_lock = threading.Lock()

    def _record(
        self, prompt: str, history: Sequence[ChatTurn], max_new_tokens: int, stop: Sequence[str]
    ) -> None:
        with self._calls_lock:
            self.calls.append(Call(prompt, tuple(history), max_new_tokens, tuple(stop)))

    @property
    def prompts(self) -> list[str]:
        return [c.prompt for c in self.calls]

    def calls_with(self, needle: str) -> list[Call]:
        """The calls whose prompt contains ``needle``."""
        return [c for c in self.calls if needle in c.prompt]


class _Run:
    """A scripted ``GenerationRun``: word pieces, then the generation."""

    def __init__(self, text: str, prompt: str, reason: str) -> None:
        self.text, self.prompt, self.reason = text, prompt, reason

    def __iter__(self) -> Iterator[str]:
        yield from _pieces(self.text)

    @property
    def generation(self) -> Generation:
        return Generation(
            text=self.text,
            prompt_tokens=len(self.prompt.split()),
            completion_tokens=len(self.text.split()),
            finish_reason=self.reason,
        )  # type: ignore[arg-type]


class ScriptedMemory(_Recorder, Memory):
    """A memory that answers prompts from a rule table instead of a model.

    ``rules`` maps a key (a substring of the prompt, or a tuple of substrings that must all
    occur) to the reply; the first matching rule wins, else ``default``. The reply is cut at
    ``stop`` sequences and at ``max_new_tokens`` words, like a real decoder.
    """

    backend = "scripted"

    def __init__(
        self, rules: Rules | None = None, *, default: str = "", name: str = "scripted"
    ) -> None:
        _Recorder.__init__(self)
        items = rules.items() if isinstance(rules, Mapping) else (rules or ())
        self.rules: list[tuple[tuple[str, ...], str]] = [
            ((key,) if isinstance(key, str) else tuple(key), reply) for key, reply in items
        ]
        self.default = default
        self.name = name
        self._docs: list[Document] = []
        self._lineage = uuid.uuid4().hex
        self.memorize_calls = 0

    # -- reading ----------------------------------------------------------------------------
    def memorize(self, context: ContextInput, *, show_progress: bool | None = None) -> MemoryStats:
        self._docs = as_documents(context)
        self._lineage = uuid.uuid4().hex
        self.memorize_calls += 1
        return self.stats()

    def add(self, context: ContextInput, *, show_progress: bool | None = None) -> MemoryStats:
        if not self._docs:
            return self.memorize(context, show_progress=show_progress)
        docs = as_documents(context, start_index=len(self._docs))
        known = {d.doc_id for d in self._docs}
        for doc in docs:
            if doc.doc_id in known:
                raise InputError(f"document {doc.doc_id!r} is already in the memory")
        self._docs.extend(docs)
        return self.stats()

    @property
    def is_empty(self) -> bool:
        return not self._docs

    @property
    def documents(self) -> tuple[dict[str, Any], ...]:
        return tuple(
            {"doc_id": d.doc_id, "chars": len(d.text), "metadata_keys": sorted(d.metadata)}
            for d in self._docs
        )

    @property
    def texts(self) -> list[str]:
        return [d.text for d in self._docs]

    @property
    def lineage(self) -> str:
        return self._lineage

    def stats(self) -> MemoryStats:
        words = sum(len(d.text.split()) for d in self._docs)
        return MemoryStats(
            backend=self.backend,
            tokens_read=words,
            documents=len(self._docs),
            windows=len(self._docs),
            kv_entries=words,
            extra={"model": self.name},
        )

    # -- prompting --------------------------------------------------------------------------
    def reply_for(self, prompt: str) -> str:
        """The scripted reply to ``prompt`` (first matching rule, else the default)."""
        for keys, reply in self.rules:
            if all(k in prompt for k in keys):
                return reply
        return self.default

    def _open_run(self, request: RunRequest) -> _Run:
        if self.is_empty:
            raise NoMemoryError("this memory is empty: call memorize(text) first")
        prompt, history, options = check_query(request.prompt), request.history, request.options
        self._record(prompt, history, options.max_new_tokens, options.stop)
        text, reason = _cut(self.reply_for(prompt), options.max_new_tokens, options.stop)
        return _Run(text, prompt, reason)

    # -- persistence ------------------------------------------------------------------------
    def write_files(self, folder: Path) -> dict[str, Any]:
        if self.is_empty:
            raise NoMemoryError("nothing to save: this memory is empty")
        docs = [
            {"doc_id": d.doc_id, "text": d.text, "metadata": dict(d.metadata)} for d in self._docs
        ]
        (folder / _FILE).write_text(json.dumps({"documents": docs}), "utf-8")
        return {
            "backend": self.backend,
            "name": self.name,
            "lineage": self._lineage,
            "documents": list(self.documents),
        }

    def read_files(self, folder: Path, section: Mapping[str, Any]) -> None:
        where = folder / "manifest.json"
        if section.get("backend") != self.backend:
            raise IncompatibleMemoryError(
                f"{where}: the memory was written by back-end {section.get('backend')!r}, "
                f"not {self.backend!r}"
            )
        data = read_json(folder / _FILE)
        if not isinstance(data, dict) or not isinstance(data.get("documents"), list):
            raise PersistenceError(f"{folder / _FILE}: 'documents' must be a list")
        self._docs = as_documents(data["documents"])
        self._lineage = str(section.get("lineage") or uuid.uuid4().hex)


class ConstrainedScriptedMemory(ScriptedMemory):
    """A ``ScriptedMemory`` that also decodes under a ``TokenConstraint``, as a model would
    whose preferred reply is the scripted one: at each step it takes, among the tokens the
    constraint allows, the longest that continues that reply; where none does, the first
    allowed one (an end token once the reply is used up). Tokens are bytes (a byte-level
    tokenizer), so the real grammar constraint runs unchanged.
    """

    supports_copying = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        from tiny_models import tiny_tokenizer

        self.tokenizer = tiny_tokenizer(chat_template=False)
        self._end = {int(self.tokenizer.eos_token_id)}

    @property
    def end_ids(self) -> set[int]:
        return set(self._end)

    def generate_constrained(
        self,
        prompt: str,
        constraint: Any,
        *,
        history: Sequence[ChatTurn] = (),
        max_new_tokens: int = 256,
    ) -> Generation:
        if self.is_empty:
            raise NoMemoryError("this memory is empty: call memorize(text) first")
        self._record(prompt, history, max_new_tokens, ())
        target, done, tokens = self.reply_for(prompt).encode(), b"", 0
        vocab = vocabulary(self.tokenizer)
        pieces = [vocab.texts[i].encode() or vocab.raw.get(i, b"") for i in range(len(vocab.texts))]
        for _ in range(max_new_tokens):
            allowed = list(constraint.allowed() or range(len(pieces)))
            rest = target[len(done) :] if target.startswith(done) else b""
            fits = [t for t in allowed if pieces[t] and rest.startswith(pieces[t])]
            ends = [t for t in allowed if t in self._end]
            if fits:
                token = max(fits, key=lambda t: len(pieces[t]))
            elif ends and not rest:
                token = ends[0]
            else:
                token = next((t for t in allowed if t not in self._end), ends[0] if ends else 0)
            constraint.advance(token)
            if token in self._end:
                break
            done, tokens = done + pieces[token], tokens + 1
        text = done.decode("utf-8", errors="replace")
        return Generation(text=text, prompt_tokens=len(prompt.split()), completion_tokens=tokens)


class CachingEmbedder(Embedder):
    """The real embedder with a memo of every text's vector (tests embed the same texts often)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._memo: dict[str, np.ndarray] = {}

    def _encode(self, texts: Sequence[str], *, prefix: str, show_progress: bool) -> np.ndarray:
        if isinstance(texts, str):
            return super()._encode(texts, prefix=prefix, show_progress=show_progress)
        keys = [f"{prefix}\x00{t}" if isinstance(t, str) else None for t in texts]
        missing = [i for i, key in enumerate(keys) if key is None or key not in self._memo]
        if missing:
            fresh = super()._encode(
                [texts[i] for i in missing], prefix=prefix, show_progress=show_progress
            )
            for i, vector in zip(missing, fresh, strict=True):
                self._memo[keys[i]] = vector  # type: ignore[index]
        if not keys:
            return super()._encode([], prefix=prefix, show_progress=False)
        return np.stack([self._memo[key] for key in keys])  # type: ignore[index]


@functools.lru_cache(maxsize=1)
def shared_embedder() -> Embedder:
    """The embedded MiniLM embedder, loaded once per test session (offline), with a memo."""
    embedder = CachingEmbedder.load(device="cpu")
    _ = embedder.dim  # load now, not inside a timed test
    return embedder


class ScriptedGenerator(_Recorder):
    """A ``TextGenerator`` whose reply is fixed, or computed from the prompt by ``reply``."""

    def __init__(self, reply: str | Callable[[str], str] = "Scripted answer.") -> None:
        super().__init__()
        self.reply = reply
        self.name = "scripted-generator"

    def _text(
        self, prompt: str, history: Sequence[ChatTurn], max_new_tokens: int, stop: Sequence[str]
    ) -> tuple[str, str]:
        check_query(prompt)
        self._record(prompt, history, max_new_tokens, stop)
        reply = self.reply(prompt) if callable(self.reply) else self.reply
        return _cut(reply, max_new_tokens, stop)

    def generate(
        self,
        prompt: str,
        *,
        history: Sequence[ChatTurn] = (),
        max_new_tokens: int = 256,
        stop: Sequence[str] = (),
        temperature: float = 0.0,
    ) -> Generation:
        text, reason = self._text(prompt, history, max_new_tokens, stop)
        return _Run(text, prompt, reason).generation

    def stream(
        self,
        prompt: str,
        *,
        history: Sequence[ChatTurn] = (),
        max_new_tokens: int = 256,
        stop: Sequence[str] = (),
        temperature: float = 0.0,
    ) -> Iterator[str]:
        text, _ = self._text(prompt, history, max_new_tokens, stop)
        yield from _pieces(text)


__all__ = [
    "DRAFT",
    "FOLLOWUP",
    "KEY_POINTS",
    "PREFERENCES",
    "SPAN",
    "SURROGATE",
    "CachingEmbedder",
    "Call",
    "ConstrainedScriptedMemory",
    "ScriptedGenerator",
    "ScriptedMemory",
    "marker",
    "shared_embedder",
]
