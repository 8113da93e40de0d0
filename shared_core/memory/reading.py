"""What every memory back-end does the same way when it reads documents: the documents an
``add`` brings, the text it reads, one record per document, the digest of everything read, and
the progress bar."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from tqdm.auto import tqdm

from shared_core.errors import InputError
from shared_core.inputs import ContextInput, as_documents
from shared_core.models.decoding import PROGRESS_DELAY_S
from shared_core.types import Document


def new_documents(
    context: ContextInput,
    held: Sequence[Mapping[str, Any]],
    *,
    max_documents: int | None,
    max_chars: int | None,
) -> list[Document]:
    """``context`` as documents numbered after the ``held`` records; a held id is refused."""
    docs = as_documents(
        context, start_index=len(held), max_documents=max_documents, max_chars=max_chars
    )
    known = {d["doc_id"] for d in held}
    for doc in docs:
        if doc.doc_id in known:
            raise InputError(f"document {doc.doc_id!r} is already in the memory")
    return docs


#: What a memory's text holds between two documents (and before an add's first one).
DOC_SEPARATOR = "\n\n"


def joined_text(docs: Sequence[Document], *, continuing: bool) -> str:
    """The documents' text as one string, after a separator when it continues a text."""
    joined = DOC_SEPARATOR.join(d.text for d in docs)
    return DOC_SEPARATOR + joined if continuing else joined


def document_spans(docs: Sequence[Document], *, continuing: bool) -> list[tuple[int, int]]:
    """Where each document lies in ``joined_text(docs, continuing=...)``: ``(start, end)``
    character offsets."""
    spans, at = [], len(DOC_SEPARATOR) if continuing else 0
    for doc in docs:
        spans.append((at, at + len(doc.text)))
        at += len(doc.text) + len(DOC_SEPARATOR)
    return spans


def document_records(docs: Sequence[Document]) -> tuple[dict[str, Any], ...]:
    """What a memory keeps (and saves) about each document it read."""
    return tuple(
        {"doc_id": d.doc_id, "chars": len(d.text), "metadata_keys": sorted(d.metadata)}
        for d in docs
    )


def text_digest(before: str | None, joined: str) -> str:
    """The sha256 of all text read: the digest ``before`` (hex, if any) continued by ``joined``."""
    digest = hashlib.sha256(bytes.fromhex(before) if before else b"")
    digest.update(joined.encode("utf-8"))
    return digest.hexdigest()


def memorize_bar(tokens: int, windows: int, show: bool | None) -> Any:
    """The ``memorize`` progress bar over ``tokens`` (``show=None``: shown from 8 windows on).

    Asked for (``show=True``, e.g. ``print_stats``), the finished bar stays on its own line, so
    text printed after it starts on a new one; shown on its own it clears itself.
    """
    return tqdm(
        total=tokens,
        unit="tok",
        desc="memorize",
        disable=not (show if show is not None else windows >= 8),
        leave=show is True,
    )


def wait_bar(total: int, desc: str, unit: str, show: bool | None) -> Any:
    """A bar for a wait of ``total`` steps: asked for (``True``), shown at once and left on
    its own line; ``None``, shown only once the wait passes ``PROGRESS_DELAY_S``; ``False``,
    never."""
    return tqdm(
        total=total,
        unit=unit,
        desc=desc,
        disable=show is False,
        delay=0.0 if show else PROGRESS_DELAY_S,
        leave=show is True,
    )
