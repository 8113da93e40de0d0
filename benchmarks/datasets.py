"""Load an evaluation folder (the layout of ``shared/data/<set>/``) into one common form.

Three layouts are recognised from the folder's files and fields:

- ``paragraph_qa`` (HotpotQA, MuSiQue): ``corpus.jsonl`` + ``questions.jsonl``. Every corpus
  paragraph is one ``Document`` whose text is ``title + "\\n" + text`` (the title is part of
  the text: bridge questions often name the entity only the title gives). Gold evidence is
  each whole gold paragraph; ``scope`` is the question's ``context_doc_ids``.
- ``long_document`` (longbook_needles): ``documents.jsonl`` rows with a ``text``; gold is the
  character span of each planted needle (checked against the needle text).
- ``meeting`` (QMSum): ``documents.jsonl`` rows with ``turns``. Each meeting is one
  ``Document``, its turns rendered as ``"Speaker: content"`` lines joined with ``"\\n"``
  (one line per turn, so line i is turn i); ``turn_spans(document)`` maps turn index ->
  ``(start, end)``. Gold is the char span of each inclusive ``evidence.turn_spans`` range;
  general queries have no gold (ROUGE only). The map is derived from the text rather than
  stored in ``Document.metadata``, which chunkers copy into every chunk.

Token counts are estimates: whitespace words x 1.3, as in the data READMEs.
"""

from __future__ import annotations

import bisect
import json
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, Literal

from shared_core.types import Document

SetKind = Literal["paragraph_qa", "long_document", "meeting"]
GoldKind = Literal["paragraph", "needle", "turns", "sentence"]

#: Whitespace words -> estimated tokens, as in the data READMEs.
TOKENS_PER_WORD = 1.3


@dataclass(frozen=True)
class GoldItem:
    """One piece of gold evidence: ``document.text[start:end]`` of document ``doc_id``.

    ``kind`` decides how a retrieved chunk must cover it (see ``metrics.covers``): a
    ``needle`` must lie wholly inside the chunk; other kinds need a large enough overlap.
    """

    doc_id: str
    start: int
    end: int
    kind: GoldKind = "paragraph"
    label: str = ""


@dataclass(frozen=True)
class BenchQuestion:
    """A question with its accepted answers, gold evidence and search scope.

    ``scope`` lists the doc ids the question is asked over (``None``: the whole set).
    ``metadata`` keeps set-specific extras (HotpotQA ``supporting_sentences`` as sentence
    ``GoldItem``s, MuSiQue ``decomposition``, QMSum ``turn_spans``).
    """

    id: str
    question: str
    answers: list[str]
    type: str
    gold: list[GoldItem]
    scope: list[str] | None
    metadata: Mapping[str, Any] = field(default_factory=dict)


def _question(
    row: Mapping[str, Any],
    gold: list[GoldItem],
    scope: list[str] | None,
    metadata: Mapping[str, Any] | None = None,
) -> BenchQuestion:
    """A ``BenchQuestion`` from a ``questions.jsonl`` row's common fields."""
    return BenchQuestion(
        str(row["id"]),
        row["question"],
        list(row["answers"]),
        str(row.get("type", "")),
        gold,
        scope,
        dict(metadata or {}),
    )


@dataclass(frozen=True)
class BenchSet:
    """A loaded evaluation folder: its documents and (possibly sampled) questions."""

    name: str
    kind: SetKind
    documents: list[Document]
    questions: list[BenchQuestion]

    @cached_property
    def _by_id(self) -> dict[str, Document]:
        return {doc.doc_id or "": doc for doc in self.documents}

    def document(self, doc_id: str) -> Document:
        """The document with this id (``KeyError`` if absent)."""
        return self._by_id[doc_id]

    def scoped_documents(self, question: BenchQuestion) -> list[Document]:
        """The documents a question is asked over, in scope order (all if unscoped)."""
        if question.scope is None:
            return list(self.documents)
        return [self._by_id[doc_id] for doc_id in question.scope]


@dataclass(frozen=True)
class PooledCorpus:
    """All documents of a set joined into one long ``document`` (the long-context setting).

    ``offsets`` / ``lengths`` give where each source document's text starts in the pooled
    text and how long it is (source order).
    """

    document: Document
    offsets: Mapping[str, int]
    lengths: Mapping[str, int]
    separator: str

    @property
    def documents(self) -> list[Document]:
        """``[document]``, for code that memorizes a list of documents."""
        return [self.document]

    def to_pooled(self, gold: Sequence[GoldItem]) -> list[GoldItem]:
        """Gold items moved into the pooled document's coordinates."""
        pooled_id = self.document.doc_id or ""
        return [
            GoldItem(
                pooled_id,
                self.offsets[g.doc_id] + g.start,
                self.offsets[g.doc_id] + g.end,
                g.kind,
                g.label or g.doc_id,
            )
            for g in gold
        ]

    def to_source(self, start: int, end: int) -> list[tuple[str, int, int]]:
        """The ``(doc_id, start, end)`` pieces of source documents that a pooled span covers."""
        ids = list(self.offsets)
        starts = [self.offsets[i] for i in ids]
        pieces: list[tuple[str, int, int]] = []
        for i in range(max(bisect.bisect_right(starts, start) - 1, 0), len(ids)):
            doc_start = starts[i]
            if doc_start >= end:
                break
            lo, hi = max(start, doc_start), min(end, doc_start + self.lengths[ids[i]])
            if lo < hi:
                pieces.append((ids[i], lo - doc_start, hi - doc_start))
        return pieces


def tokens_est(text: str) -> int:
    """Estimated token count: whitespace words x 1.3."""
    return round(len(text.split()) * TOKENS_PER_WORD)


def _read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None


def detect_kind(path: str | Path) -> SetKind:
    """Tell the layout of a data folder from its files and the fields of its documents."""
    root = Path(path)
    if not (root / "questions.jsonl").is_file():
        raise FileNotFoundError(f"{root}: no questions.jsonl (not an evaluation data folder)")
    if (root / "corpus.jsonl").is_file():
        return "paragraph_qa"
    docs = root / "documents.jsonl"
    if docs.is_file():
        first = next(_read_jsonl(docs), None)
        if first is not None and "turns" in first:
            return "meeting"
        if first is not None and "text" in first:
            return "long_document"
    raise ValueError(
        f"{root}: unknown layout; expected corpus.jsonl (paragraph QA) or documents.jsonl "
        "whose rows have 'turns' (meetings) or 'text' (long documents)"
    )


def _load_paragraph_qa(root: Path) -> tuple[list[Document], list[BenchQuestion]]:
    docs: list[Document] = []
    title_len: dict[str, int] = {}
    sentences: dict[str, list[str]] = {}
    for row in _read_jsonl(root / "corpus.jsonl"):
        doc_id, title = str(row["doc_id"]), str(row.get("title", ""))
        prefix = f"{title}\n" if title else ""
        docs.append(Document(prefix + row["text"], doc_id, {"title": title}))
        title_len[doc_id] = len(prefix)
        if "sentences" in row:
            sentences[doc_id] = list(row["sentences"])
    lengths = {d.doc_id: len(d.text) for d in docs}
    questions = []
    for row in _read_jsonl(root / "questions.jsonl"):
        evidence = row.get("evidence") or {}
        scope = [str(d) for d in row["context_doc_ids"]] if "context_doc_ids" in row else None
        for doc_id in [*(scope or []), *evidence.get("doc_ids", [])]:
            if doc_id not in lengths:
                raise ValueError(f"{root}: question {row['id']} names unknown doc {doc_id!r}")
        gold = [GoldItem(d, 0, lengths[d], "paragraph", d) for d in evidence.get("doc_ids", [])]
        meta: dict[str, Any] = {
            k: row[k] for k in ("level", "source_split", "context_tokens_est") if k in row
        }
        if "decomposition" in evidence:
            meta["decomposition"] = list(evidence["decomposition"])
        if "sentences" in evidence:
            items = [
                _sentence_item(d, int(i), sentences, title_len) for d, i in evidence["sentences"]
            ]
            meta["supporting_sentences"] = [item for item in items if item is not None]
        questions.append(_question(row, gold, scope, meta))
    return docs, questions


def _sentence_item(
    doc_id: str, index: int, sentences: Mapping[str, list[str]], title_len: Mapping[str, int]
) -> GoldItem | None:
    """A supporting sentence as a span; ``None`` for an index past the paragraph's end
    (HotpotQA has a few such supporting facts)."""
    sents = sentences.get(doc_id, [])
    if not 0 <= index < len(sents):
        return None
    start = title_len[doc_id] + sum(len(s) for s in sents[:index])
    return GoldItem(doc_id, start, start + len(sents[index]), "sentence", f"{doc_id}#{index}")


def _load_long_document(root: Path) -> tuple[list[Document], list[BenchQuestion]]:
    docs = []
    for row in _read_jsonl(root / "documents.jsonl"):
        meta = {k: v for k, v in row.items() if k not in ("text", "doc_id")}
        docs.append(Document(row["text"], str(row["doc_id"]), meta))
    by_id = {d.doc_id: d for d in docs}
    questions = []
    for row in _read_jsonl(root / "questions.jsonl"):
        doc_id = str(row.get("doc_id") or docs[0].doc_id)
        if doc_id not in by_id:
            raise ValueError(f"{root}: question {row['id']} names unknown doc {doc_id!r}")
        text = by_id[doc_id].text
        gold = []
        for ev in row.get("evidence") or []:
            start, end = int(ev["char_start"]), int(ev["char_end"])
            if "text" in ev and text[start:end] != ev["text"]:
                raise ValueError(
                    f"{root}: question {row['id']}: evidence {ev.get('needle_id')} does not "
                    f"match the document text at [{start}:{end}]"
                )
            gold.append(GoldItem(doc_id, start, end, "needle", str(ev.get("needle_id", ""))))
        questions.append(_question(row, gold, [doc_id]))
    return docs, questions


def render_meeting(turns: Sequence[Mapping[str, str]]) -> str:
    """Render turns as ``"Speaker: content"`` lines (``"Speaker:"`` for an empty turn),
    joined with ``"\\n"``; newlines inside a turn become spaces so line i is turn i."""
    lines = []
    for turn in turns:
        speaker = " ".join(str(turn.get("speaker", "")).splitlines())
        content = " ".join(str(turn.get("content", "")).splitlines())
        lines.append(f"{speaker}: {content}" if content else f"{speaker}:")
    return "\n".join(lines)


@lru_cache(maxsize=64)
def _line_spans(text: str) -> tuple[tuple[int, int], ...]:
    spans, pos = [], 0
    for line in text.split("\n"):
        spans.append((pos, pos + len(line)))
        pos += len(line) + 1
    return tuple(spans)


def turn_spans(document: Document | str) -> tuple[tuple[int, int], ...]:
    """Char span ``(start, end)`` of each turn (= line) of a rendered meeting."""
    return _line_spans(document if isinstance(document, str) else document.text)


def turns_in_span(document: Document | str, start: int, end: int) -> list[int]:
    """Indices of the meeting turns that a char span ``[start, end)`` overlaps."""
    spans = turn_spans(document)
    first = bisect.bisect_right([s[1] for s in spans], start)
    out = []
    for i in range(first, len(spans)):
        if spans[i][0] >= end:
            break
        if spans[i][1] > start:
            out.append(i)
    return out


def _load_meeting(root: Path) -> tuple[list[Document], list[BenchQuestion]]:
    docs = []
    for row in _read_jsonl(root / "documents.jsonl"):
        meta = {k: v for k, v in row.items() if k not in ("turns", "doc_id")}
        docs.append(Document(render_meeting(row["turns"]), str(row["doc_id"]), meta))
    by_id = {d.doc_id: d for d in docs}
    questions = []
    for row in _read_jsonl(root / "questions.jsonl"):
        doc_id = str(row["doc_id"])
        if doc_id not in by_id:
            raise ValueError(f"{root}: question {row['id']} names unknown doc {doc_id!r}")
        spans = turn_spans(by_id[doc_id])
        evidence = row.get("evidence") or {}
        ranges = [(int(a), int(b)) for a, b in evidence.get("turn_spans", [])]
        gold = []
        for a, b in ranges:
            if not 0 <= a <= b < len(spans):
                raise ValueError(f"{root}: question {row['id']}: turn span {[a, b]} out of range")
            gold.append(GoldItem(doc_id, spans[a][0], spans[b][1], "turns", f"turns {a}-{b}"))
        questions.append(_question(row, gold, [doc_id], {"turn_spans": ranges}))
    return docs, questions


_LOADERS = {
    "paragraph_qa": _load_paragraph_qa,
    "long_document": _load_long_document,
    "meeting": _load_meeting,
}


def sample_indices(n: int, limit: int | None, seed: int = 0) -> list[int]:
    """All of ``range(n)`` if ``limit`` is None, else the first ``limit`` of a seeded shuffle.

    The same seed gives the same order, so a smaller limit is a prefix of a larger one.
    """
    if limit is None:
        return list(range(n))
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ValueError(f"limit must be a non-negative int or None, got {limit!r}")
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return order[:limit]


def load_set(path: str | Path, limit: int | None = None, seed: int = 0) -> BenchSet:
    """Load a data folder; with ``limit``, keep the first ``limit`` questions of a shuffle
    seeded by ``seed`` (in that order). Every document is kept whatever the limit."""
    root = Path(path)
    kind = detect_kind(root)
    docs, questions = _LOADERS[kind](root)
    ids = [d.doc_id for d in docs]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{root}: duplicate doc ids")
    picked = [questions[i] for i in sample_indices(len(questions), limit, seed)]
    return BenchSet(root.resolve().name, kind, docs, picked)


def pooled_documents(bench_set: BenchSet, separator: str = "\n\n") -> PooledCorpus:
    """Join every document of the set (in order) into one long document.

    Use ``PooledCorpus.to_pooled`` to move gold evidence into its coordinates and
    ``to_source`` to map a retrieved span back to the source documents.
    """
    parts, offsets, lengths, pos = [], {}, {}, 0
    for doc in bench_set.documents:
        doc_id = doc.doc_id or f"doc-{len(parts)}"
        if parts:
            pos += len(separator)
        offsets[doc_id] = pos
        lengths[doc_id] = len(doc.text)
        parts.append(doc.text)
        pos += len(doc.text)
    text = separator.join(parts)
    doc = Document(text, f"{bench_set.name}-pooled", {"source_set": bench_set.name})
    return PooledCorpus(doc, offsets, lengths, separator)


def describe(bench_set: BenchSet) -> dict[str, Any]:
    """Sizes of a set: documents, questions by type, estimated tokens (total and pooled)."""
    types: dict[str, int] = {}
    for q in bench_set.questions:
        types[q.type] = types.get(q.type, 0) + 1
    doc_tokens = [tokens_est(d.text) for d in bench_set.documents]
    return {
        "name": bench_set.name,
        "kind": bench_set.kind,
        "documents": len(bench_set.documents),
        "questions": len(bench_set.questions),
        "question_types": types,
        "tokens_per_document_mean": round(sum(doc_tokens) / max(len(doc_tokens), 1)),
        "tokens_pooled": tokens_est(pooled_documents(bench_set).document.text),
    }
