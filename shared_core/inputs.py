"""Validation of what users feed the engine: texts, documents, queries, ``k``.

Every refusal is an ``InputError`` (or ``LimitError``) that names the problem, so nothing
already memorized or saved is touched by a bad call.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from shared_core.errors import InputError, LimitError
from shared_core.types import ChatTurn, Document

ContextInput = str | bytes | Document | Mapping[str, Any] | Sequence[Any]

#: Share of control characters (other than tab/newline/CR/FF) above which a text is binary.
_MAX_CONTROL_SHARE = 0.01


def check_text(text: object, *, what: str = "text") -> str:
    """Return ``text`` if it is usable prose; raise ``InputError`` naming the problem if not."""
    if isinstance(text, (bytes, bytearray, memoryview)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(
                f"{what} is bytes that are not UTF-8 text ({describe_decode_error(exc)}); "
                "decode it first, e.g. data.decode('latin-1')"
            ) from None
    if not isinstance(text, str):
        raise InputError(f"{what} must be a str, got {type(text).__name__}")
    if not text.strip():
        raise InputError(f"{what} is empty or whitespace only; there is nothing to memorize")
    check_unicode(text, what)
    _check_controls(text, what)
    return text


def check_unicode(text: str, what: str) -> None:
    """Refuse a lone surrogate (U+D800..U+DFFF): not text, and no tokenizer or JSON file takes
    it. One from U+DC80..U+DCFF is an undecodable byte (a command-line argument or file name
    that is not UTF-8), named as that byte."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        code = ord(text[exc.start])
        if 0xDC80 <= code <= 0xDCFF:
            detail = f"an invalid UTF-8 byte 0x{code - 0xDC00:02x}"
        else:
            detail = f"a lone surrogate U+{code:04X}"
        raise InputError(
            f"{what} holds {detail} at character {exc.start}: not valid Unicode text; "
            "decode it with the right encoding first"
        ) from None


def check_metadata(metadata: Mapping[str, Any], what: str) -> None:
    """Metadata must be JSON (it is saved with the index): str keys, and values that are str,
    int, float (finite), bool, None, lists and mappings of them. Checked before anything is
    read, so a document that could not be saved never enters the memory."""
    for key, value in metadata.items():
        if not isinstance(key, str):
            raise InputError(f"{what}: metadata key {key!r} must be a str (metadata is JSON)")
        check_unicode(key, f"{what}: metadata key")
        try:
            encoded = json.dumps(value, allow_nan=False, ensure_ascii=False)
            encoded.encode("utf-8")
            json.loads(encoded)
        except (TypeError, ValueError, RecursionError) as exc:  # UnicodeError is a ValueError
            raise InputError(
                f"{what}: metadata[{key!r}] is not JSON ({type(value).__name__}: {exc}); pass "
                "str, int, float, bool, None, lists or dicts of them (e.g. a date as "
                "date.isoformat())"
            ) from None


def describe_decode_error(exc: UnicodeDecodeError) -> str:
    """``invalid byte 0xe9 at offset 17`` for a failed UTF-8 decode."""
    bad = exc.object[exc.start : exc.start + 1]
    return f"invalid byte 0x{bad.hex()} at byte offset {exc.start}: {exc.reason}"


def _check_controls(text: str, what: str) -> None:
    """Refuse NUL bytes and texts made mostly of control characters (binary, not text)."""
    if "\x00" in text:
        raise InputError(f"{what} contains NUL bytes: it looks like a binary file, not text")
    controls = sum(1 for ch in text if ord(ch) < 32 and ch not in "\t\n\r\f")
    if controls > max(2, _MAX_CONTROL_SHARE * len(text)):
        raise InputError(
            f"{what} has {controls} control characters in {len(text)}: it looks binary, not text"
        )
    if not any(ch.isprintable() and not ch.isspace() for ch in text):
        raise InputError(f"{what} holds only control characters and spaces: there is no text")


def as_documents(
    context: ContextInput,
    *,
    id_prefix: str = "doc",
    start_index: int = 0,
    max_documents: int | None = None,
    max_chars: int | None = None,
) -> list[Document]:
    """Normalise a string, a ``Document``, a mapping or a list of them into checked ``Document``s.

    Documents without an id get ``f"{id_prefix}-{i}"``; ids must be unique.
    """
    items: list[Any]
    if isinstance(context, (str, bytes, bytearray, Document, Mapping)):
        items = [context]
    elif isinstance(context, Sequence):
        items = list(context)
    else:
        raise InputError(
            f"context must be a str, a Document or a list of them, got {type(context).__name__}"
        )
    if not items:
        raise InputError("context is an empty list: there is nothing to memorize")
    if max_documents is not None and len(items) > max_documents:
        _too_many(len(items), max_documents)
    docs: list[Document] = []
    for offset, item in enumerate(items):
        index = start_index + offset
        label = f"document {offset}" if len(items) > 1 else "context"
        if isinstance(item, Document):
            doc = replace(item, text=check_text(item.text, what=label))
        elif isinstance(item, Mapping):
            if "text" not in item:
                raise InputError(f"{label} is a mapping without a 'text' key")
            metadata = item.get("metadata") or {}
            if not isinstance(metadata, Mapping):
                raise InputError(f"{label}: metadata must be a mapping")
            doc = Document(
                text=check_text(item["text"], what=label),
                doc_id=item.get("doc_id") or item.get("id"),
                metadata=dict(metadata),
            )
        else:
            doc = Document(text=check_text(item, what=label))
        if doc.doc_id is None:
            doc = replace(doc, doc_id=f"{id_prefix}-{index}")
        elif not isinstance(doc.doc_id, str) or not doc.doc_id.strip():
            raise InputError(f"{label}: doc_id must be a non-empty string")
        # Reliability: what a save could not write is refused here, before anything changes.
        check_unicode(doc.doc_id, f"{label}: doc_id")
        if not isinstance(doc.metadata, Mapping):
            raise InputError(f"{label} ({doc.doc_id!r}): metadata must be a mapping")
        check_metadata(doc.metadata, f"{label} ({doc.doc_id!r})")
        docs.append(doc)
    seen: set[str] = set()
    for doc in docs:
        if doc.doc_id in seen:
            raise InputError(f"duplicate doc_id {doc.doc_id!r}: document ids must be unique")
        seen.add(doc.doc_id)  # type: ignore[arg-type]
    check_caps(docs, max_chars=max_chars)
    return docs


def _too_many(count: int, limit: int) -> None:
    raise LimitError(
        f"{count} documents in one call is over the limit of {limit} "
        "(raise max_documents or send them in several add() calls)"
    )


def check_caps(
    docs: Sequence[Document], *, max_documents: int | None = None, max_chars: int | None = None
) -> None:
    """Refuse one call's documents over a memory's caps, before any work on them."""
    if max_documents is not None and len(docs) > max_documents:
        _too_many(len(docs), max_documents)
    total = sum(len(d.text) for d in docs)
    if max_chars is not None and total > max_chars:
        raise LimitError(
            f"context has {total:,} characters, over the limit of {max_chars:,} "
            "(raise max_chars, or memorize it in parts with add())"
        )


def check_query(query: object) -> str:
    """A query must be a non-empty string of text (the same control-character rules as
    ``check_text``: NUL bytes or only control characters are refused)."""
    if not isinstance(query, str):
        raise InputError(f"query must be a str, got {type(query).__name__}")
    if not query.strip():
        raise InputError("query is empty")
    check_unicode(query, "query")
    _check_controls(query, "query")
    return query


def check_extra_queries(value: object) -> tuple[str, ...]:
    """``extra_queries`` must be a list (or tuple) of query strings: a single string would be
    searched letter by letter."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise InputError(
            f"extra_queries must be a list of strings, got {type(value).__name__} {value!r:.60}"
            " (wrap a single query in a list)"
        )
    return tuple(check_query(q) for q in value)


_ROLES = ("user", "assistant", "system")


def check_history(value: object) -> tuple[ChatTurn, ...]:
    """``history`` must be a list of ``ChatTurn(role, content)`` (roles user/assistant/system)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise InputError(f"history must be a list of ChatTurn, got {type(value).__name__}")
    for i, turn in enumerate(value):
        if not isinstance(turn, ChatTurn):
            raise InputError(
                f"history[{i}] is a {type(turn).__name__} ({turn!r:.40}), not a ChatTurn: pass "
                "ChatTurn(role='user', content='...')"
            )
        if turn.role not in _ROLES or not isinstance(turn.content, str):
            raise InputError(f"history[{i}]: role must be one of {_ROLES} and content a str")
        check_unicode(turn.content, f"history[{i}]")
    return tuple(value)


def check_k(k: object, *, name: str = "k") -> int:
    """``k`` must be a positive int (bools are refused)."""
    if isinstance(k, bool) or not isinstance(k, int):
        raise InputError(f"{name} must be a positive int, got {k!r}")
    if k <= 0:
        raise InputError(f"{name} must be positive, got {k}")
    return k


def check_max_new_tokens(value: object, cap: int | None = None) -> int:
    """``max_new_tokens`` must be an int in ``1..cap``: every entry point (``answer``,
    ``__call__``, ``chat``, the memories and generators) checks it here."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"max_new_tokens must be an int >= 1, got {value!r}")
    if value < 1 or (cap is not None and value > cap):
        top = f"{cap}" if cap is not None else "any"
        raise LimitError(
            f"max_new_tokens={value} is outside 1..{top} (nothing would be generated below 1"
            + (f"; raise max_new_tokens_cap above {cap}" if cap is not None else "")
            + ")"
        )
    return value
