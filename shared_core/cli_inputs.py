"""What the ``memorag`` command line reads from the user's files: texts, earlier turns, and
the saved stats (from the manifest alone, so ``stats`` loads no model)."""

from __future__ import annotations

import codecs
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from shared_core.errors import InputError
from shared_core.inputs import check_text, describe_decode_error
from shared_core.persistence.files import read_capped
from shared_core.types import ChatTurn, Document

_ROLES = ("user", "assistant", "system")
_MAX_HISTORY_BYTES = 16 * 1024 * 1024
#: The most bytes one text file may hold: the memories' 4,000,000-character cap at up to 4
#: bytes a character (the character cap itself is checked after decoding).
MAX_TEXT_BYTES = 16_000_000


def read_text_file(path: Path, encoding: str = "utf-8") -> str:
    """A file's text, or an ``InputError`` saying why it cannot be memorized (for a wrong
    encoding: the byte offset and how to read or convert it)."""
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise InputError(f"--encoding {encoding!r} is not an encoding Python knows") from None
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path} is a directory, not a text file")
    # Reliability: a FIFO or device (/dev/zero) is refused and a file over the cap is refused
    # from its size, before it is read.
    data = read_capped(path, MAX_TEXT_BYTES, error=InputError, follow=True)
    utf8 = codecs.lookup(encoding).name == "utf-8"
    try:
        text = data.decode("utf-8-sig" if utf8 else encoding)
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{path} is not {encoding} text ({describe_decode_error(exc)}); if it is Latin-1 or "
            "Windows-1252 text, pass --encoding latin-1 (or cp1252), or convert it first: "
            f"iconv -f latin1 -t utf-8 {path} > {path.name}.utf8.txt"
        ) from None
    return check_text(text, what=str(path))


def documents_from_files(paths: Sequence[str], encoding: str = "utf-8") -> list[Document]:
    """One document per file, id = file name (the path where names repeat)."""
    files = [Path(p) for p in paths]
    texts = [read_text_file(f, encoding) for f in files]
    names = [f.name for f in files]
    docs = []
    for file, text in zip(files, texts, strict=True):
        doc_id = file.name if names.count(file.name) == 1 else str(file)
        docs.append(Document(text, doc_id=doc_id, metadata={"source": str(file)}))
    if len({d.doc_id for d in docs}) != len(docs):
        raise InputError("the same file is given more than once")
    return docs


def _turn(role: object, content: object, where: str) -> ChatTurn:
    if role not in _ROLES:
        raise InputError(f"{where}: role must be one of {', '.join(_ROLES)}, got {role!r}")
    if not isinstance(content, str) or not content.strip():
        raise InputError(f"{where}: the turn's text is empty")
    return ChatTurn(role=role, content=content)  # type: ignore[arg-type]


def read_turns(history_file: str | None, turns: Sequence[str]) -> list[ChatTurn]:
    """Earlier turns from ``--history FILE.json`` (a list of ``{"role", "content"}``), then
    each ``--turn ROLE:TEXT`` in order."""
    history: list[ChatTurn] = []
    if history_file is not None:
        path = Path(history_file)
        data = read_capped(
            path, _MAX_HISTORY_BYTES, error=InputError, label="--history ", follow=True
        )
        try:
            items = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise InputError(f"--history {path} is not valid UTF-8 JSON ({exc})") from None
        if not isinstance(items, list):
            raise InputError(f"--history {path} must hold a JSON list of turns")
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise InputError(f"--history {path}: turn {i} is not an object")
            history.append(_turn(item.get("role"), item.get("content"), f"--history turn {i}"))
    for text in turns:
        role, sep, content = text.partition(":")
        if not sep:
            raise InputError(f"--turn {text!r} must look like ROLE:TEXT, e.g. 'user:Who is it?'")
        history.append(_turn(role.strip().lower(), content.strip(), f"--turn {text[:40]!r}"))
    return history


#: Manifest fields of a memory section -> the names ``MemoryStats`` uses.
_STATS = {
    "backend": "backend",
    "model": "model",
    "text_tokens": "tokens_read",
    "windows": "windows",
    "entries": "kv_entries",
    "beacon_ratio": "beacon_ratio",
    "window": "window",
    "position_mode": "position_mode",
    "dtype": "dtype",
    "seconds": "seconds",
}


def stats_from_manifest(section: Mapping[str, Any]) -> dict[str, Any]:
    """What ``memorag stats`` shows of a memory, read from its manifest section only."""
    stats = {name: section[key] for key, name in _STATS.items() if key in section}
    documents = section.get("documents")
    stats["documents"] = len(documents) if isinstance(documents, list) else None
    return stats
