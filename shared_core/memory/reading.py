"""What every memory back-end does the same way when it reads documents: the text it reads,
one record per document, the digest of everything read, and the progress bar."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from tqdm.auto import tqdm

from shared_core.types import Document


def joined_text(docs: Sequence[Document], *, continuing: bool) -> str:
    """The documents' text as one string, after a blank line when it continues a text."""
    joined = "\n\n".join(d.text for d in docs)
    return "\n\n" + joined if continuing else joined


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
    """The ``memorize`` progress bar over ``tokens`` (``show=None``: shown from 8 windows on)."""
    return tqdm(
        total=tokens,
        unit="tok",
        desc="memorize",
        disable=not (show if show is not None else windows >= 8),
        leave=False,
    )
