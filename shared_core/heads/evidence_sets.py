"""Read a folder of questions with gold evidence (the ``shared/data/<set>`` paragraph layout).

``corpus.jsonl`` rows ``{"doc_id", "title", "text" | "sentences"}`` and ``questions.jsonl``
rows ``{"id", "question", "context_doc_ids", "evidence": {"doc_ids": [...]}}``. Each paragraph
becomes one ``Document`` whose text is ``title + "\\n" + text`` (as the benchmarks read it).
Used by head calibration; the benchmarks' own loader (``benchmarks/datasets.py``) reads the
other layouts too.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared_core.errors import InputError
from shared_core.types import Document


@dataclass(frozen=True)
class EvidenceQuestion:
    """A question, the paragraphs it is asked over, and which of them are gold."""

    id: str
    question: str
    documents: tuple[Document, ...]
    gold: frozenset[str]


def _rows(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        for n, line in enumerate(handle, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except ValueError as exc:
                    raise InputError(f"{path}:{n}: not JSON ({exc})") from None


def load_evidence_set(folder: str | Path, limit: int | None = None) -> list[EvidenceQuestion]:
    """The first ``limit`` questions (all when ``None``) of a paragraph-layout folder."""
    root = Path(folder)
    corpus, questions = root / "corpus.jsonl", root / "questions.jsonl"
    if not corpus.is_file() or not questions.is_file():
        raise InputError(
            f"{root}: calibration reads the paragraph layout (corpus.jsonl + questions.jsonl "
            "with context_doc_ids and evidence.doc_ids)"
        )
    docs: dict[str, Document] = {}
    for row in _rows(corpus):
        title = str(row.get("title", ""))
        body = row["text"] if "text" in row else "".join(row["sentences"])
        doc_id = str(row["doc_id"])
        docs[doc_id] = Document(f"{title}\n{body}" if title else body, doc_id, {"title": title})
    out = []
    for row in _rows(questions):
        scope = [str(d) for d in row.get("context_doc_ids") or ()]
        gold = frozenset(str(d) for d in (row.get("evidence") or {}).get("doc_ids", ()))
        missing = [d for d in [*scope, *gold] if d not in docs]
        if missing or not scope or not gold:
            raise InputError(f"{root}: question {row.get('id')!r} lacks scope/gold {missing[:2]}")
        out.append(
            EvidenceQuestion(str(row["id"]), row["question"], tuple(docs[d] for d in scope), gold)
        )
        if limit is not None and len(out) >= limit:
            break
    return out
