"""Plain data types and protocols shared by every step of the data flow.

memorize -> memory -> clues -> retrieval -> fusion -> generation. Each step speaks in these
types, so strategies (scorers, clue writers, search back-ends, generators) stay swappable and
the framework adapters only translate to and from them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, runtime_checkable

from shared_core.errors import InputError, LimitError

if TYPE_CHECKING:
    import torch

Role = Literal["system", "user", "assistant"]
ClueKind = Literal["query", "span", "surrogate", "answer", "history", "custom", "attention"]


class KeyKind:
    """What each search key is (``Clue.kind``), by name; plain strings, the values of
    ``ClueKind``, so saved and printed kinds read the same. Keys that are not the memory's
    clues: ``QUERY`` (the query itself), ``HISTORY`` (a follow-up's standalone rewrite),
    ``CUSTOM`` (a caller's extra query) and ``ATTENTION`` (the retrieval heads' ranking);
    the memory's clues: ``SPAN``, ``SURROGATE``, ``ANSWER``."""

    QUERY: Final = "query"
    HISTORY: Final = "history"
    CUSTOM: Final = "custom"
    ATTENTION: Final = "attention"
    SPAN: Final = "span"
    SURROGATE: Final = "surrogate"
    ANSWER: Final = "answer"


@dataclass(frozen=True)
class Document:
    """One input text with an id and free-form metadata."""

    text: str
    doc_id: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Chunk:
    """A retrieval unit cut from a document; ``text == document.text[start:end]``."""

    chunk_id: str
    doc_id: str
    text: str
    start: int
    end: int
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Passage:
    """Anything a search back-end returns. ``payload`` carries a framework object
    (a LangChain ``Document``, a LlamaIndex ``NodeWithScore``) back to its adapter untouched."""

    id: str
    text: str
    metadata: Mapping[str, Any] = field(default_factory=dict)
    payload: Any = None


@dataclass(frozen=True)
class Hit:
    """One search result: a passage, its back-end score and its 0-based rank."""

    passage: Passage
    score: float
    rank: int


@dataclass(frozen=True)
class Clue:
    """A retrieval key written by the memory (or the raw query itself)."""

    text: str
    kind: ClueKind
    weight: float = 1.0


@dataclass(frozen=True)
class ScoredPassage:
    """A fused result: the passage, its fused score, and which clues found it at which rank."""

    passage: Passage
    score: float
    found_by: tuple[Clue, ...] = ()
    ranks: tuple[int, ...] = ()


@dataclass(frozen=True)
class RetrievalResult:
    """What ``retrieve`` returns: the clues used and exactly ``min(k, corpus)`` passages."""

    query: str
    clues: tuple[Clue, ...]
    passages: tuple[ScoredPassage, ...]
    timings: Mapping[str, float] = field(default_factory=dict)
    #: How the passages were found: "heads" (the memory's attention + the query),
    #: "clues" (clue writing), "heads+clues"; notes say why a route was not available.
    route: str = ""
    #: What the caller should know about this result (e.g. the memory wrote no clues).
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class ChatTurn:
    """One message of a dialogue history."""

    role: Role
    content: str


@dataclass(frozen=True)
class Generation:
    """A finished generation with token accounting (for usage metadata)."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: Literal["stop", "length"] = "stop"


@dataclass(frozen=True)
class GenerationOptions:
    """How to decode one reply: the one value every generator and memory takes."""

    max_new_tokens: int = 256
    stop: tuple[str, ...] = ()
    temperature: float = 0.0

    def __post_init__(self) -> None:
        n = self.max_new_tokens
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise LimitError(f"max_new_tokens={n!r} is outside 0..(the model's cap)")
        if isinstance(self.stop, str) or not all(isinstance(s, str) for s in self.stop):
            raise InputError(f"stop must be a sequence of strings, got {self.stop!r}")
        object.__setattr__(self, "stop", tuple(self.stop))
        t = self.temperature
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 <= t <= 100:
            raise InputError(f"temperature must be a number in [0, 100], got {t!r}")

    def as_kwargs(self) -> dict[str, Any]:
        """The ``TextGenerator`` keyword arguments for these options."""
        return {
            "max_new_tokens": self.max_new_tokens,
            "stop": self.stop,
            "temperature": self.temperature,
        }


@runtime_checkable
class Scorer(Protocol):
    """Scores KV entries of one window; higher means keep (``memory/scorers.py``)."""

    name: str

    def score(self, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class GenerationRun(Protocol):
    """One reply being decoded: iterate it for text pieces; then ``generation`` holds the
    whole text and the real token counts."""

    def __iter__(self) -> Iterator[str]: ...

    @property
    def generation(self) -> Generation: ...


class ReplyStream(Protocol):
    """A reply being streamed (``models.streaming.TextStream``): ``for`` or ``async for`` its
    pieces; then ``generation`` holds the real token counts (``None`` where unknown)."""

    def __iter__(self) -> Iterator[str]: ...

    def __aiter__(self) -> AsyncIterator[str]: ...

    @property
    def generation(self) -> Generation | None: ...


@runtime_checkable
class SearchBackend(Protocol):
    """Anything that can rank passages for one query string."""

    def search(self, query: str, k: int) -> list[Hit]: ...


@runtime_checkable
class AsyncSearchBackend(Protocol):
    """A back-end with a native coroutine search (framework retrievers)."""

    async def asearch(self, query: str, k: int) -> list[Hit]: ...


@runtime_checkable
class TextGenerator(Protocol):
    """A model that answers a prompt, optionally after a dialogue history.

    Memories implement this (the prompt is answered *against the memory*); so do plain
    generators and API-backed models.
    """

    def generate(
        self, prompt: str, *, history: Sequence[ChatTurn] = (), **options: Any
    ) -> Generation:
        """The whole reply; ``options`` are ``GenerationOptions`` fields (``max_new_tokens``,
        ``stop``, ``temperature``)."""
        ...

    def stream(
        self, prompt: str, *, history: Sequence[ChatTurn] = (), **options: Any
    ) -> Iterator[str]:
        """Yield the reply's pieces (``options`` as for ``generate``); a generator may return
        the finished ``Generation``."""
        ...


class RetrievalEngine(Protocol):
    """What the framework adapters call. ``shared_core.MemoRAG`` implements it.

    ``search`` replaces the engine's own index for one call (a framework retriever wrapped as a
    ``SearchBackend``); ``extra_queries`` are caller-supplied retrieval keys (e.g. LlamaIndex
    ``custom_embedding_strs``) fused alongside the memory's clues.
    """

    def clues(self, query: str, *, history: Sequence[ChatTurn] = ()) -> list[Clue]: ...

    def retrieve(self, query: str, k: int, **options: Any) -> RetrievalResult:
        """Exactly ``min(k, corpus)`` passages; ``options``: ``search`` (a ``SearchBackend``),
        ``extra_queries``, ``history``, ``search_k`` (see ``MemoRAG.retrieve``)."""
        ...

    async def aretrieve(self, query: str, k: int, **options: Any) -> RetrievalResult:
        """``retrieve`` without blocking the event loop; ``search`` may also be an
        ``AsyncSearchBackend``."""
        ...

    def chat(self, messages: Sequence[ChatTurn], **options: Any) -> Generation:
        """Answer the last message (earlier ones: the history); ``options`` are
        ``GenerationOptions`` fields."""
        ...

    def stream_chat(self, messages: Sequence[ChatTurn], **options: Any) -> ReplyStream:
        """``chat``, streamed."""
        ...

    def astream_chat(self, messages: Sequence[ChatTurn], **options: Any) -> ReplyStream:
        """``chat``, streamed for ``async for``."""
        ...

    def save(self, save_dir: str, *, overwrite: bool = False) -> None: ...


@dataclass(frozen=True)
class Citation:
    """Where an answer came from: ``quote == passage.text[start:end]`` of the passage
    ``passage_id`` (document ``doc_id``); a yes/no answer cites its passages whole."""

    passage_id: str
    doc_id: str
    start: int
    end: int
    quote: str

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-able fields (what the framework adapters put in their metadata)."""
        return {
            "passage_id": self.passage_id,
            "doc_id": self.doc_id,
            "start": self.start,
            "end": self.end,
            "quote": self.quote,
        }


@dataclass(frozen=True)
class Answer:
    """A generated answer with the passages and clues behind it (the end of the data flow)."""

    text: str
    task_type: str
    passages: tuple[ScoredPassage, ...] = ()
    clues: tuple[Clue, ...] = ()
    timings: Mapping[str, float] = field(default_factory=dict)
    #: Notes of the retrieval behind the answer (e.g. the memory wrote no clues).
    notes: tuple[str, ...] = ()
    #: The passages a short answer was copied from (empty for free generation).
    citations: tuple[Citation, ...] = ()

    def __str__(self) -> str:
        return self.text

    @property
    def sources(self) -> list[str]:
        """The document id of each passage, in rank order."""
        return [str(p.passage.metadata.get("doc_id", p.passage.id)) for p in self.passages]
