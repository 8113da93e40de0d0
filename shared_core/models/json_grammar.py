"""JSON by construction: a JSON schema compiled into a character automaton, and a
``TokenConstraint`` that lets a decoder emit only tokens the automaton accepts.

The schema's fixed skeleton (braces, keys, quotes, commas) is the only text allowed where it
stands, so the decoder writes it; the model chooses only inside values: string characters up
to a closing quote (with a length cap), digits for numbers, one of the allowed spellings for
booleans, enums and constants, and whether an array takes another item (up to a bound). The
output is compact JSON (no whitespace outside strings) that ``json.loads`` always accepts.

Supported schema keywords: ``type`` (object, array, string, integer, number, boolean, null),
``properties`` (every property is written, in order), ``items``, ``minItems`` / ``maxItems``,
``enum``, ``const``, ``maxLength`` / ``minLength``, ``anyOf`` / ``oneOf`` (the first non-null
branch, or a choice between constants), ``$ref`` into ``$defs``. Anything else is refused with
an ``InputError`` naming it.
"""

from __future__ import annotations

import functools
import json
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from shared_core.errors import InputError

#: Caps used where the schema sets none.
STRING_CHARS = 160
ARRAY_ITEMS = 4
INTEGER_DIGITS = 9
FRACTION_DIGITS = 4
MAX_DEPTH = 8

_DIGITS = frozenset("0123456789")


# -- the automaton ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Lit:
    """Fixed text, then node ``next``."""

    text: str
    next: int


@dataclass(frozen=True)
class Str:
    """The inside of a JSON string (the opening quote is already written) up to its closing
    quote; no escapes, no control characters; ``min_chars``..``max_chars`` characters."""

    min_chars: int
    max_chars: int
    next: int


@dataclass(frozen=True)
class Num:
    """A JSON number (an integer when ``integer``); ends at the first character the next node
    takes."""

    integer: bool
    next: int


@dataclass(frozen=True)
class Choice:
    """One of several texts, each with its own next node (a prefix of one option may be
    another option: the next character decides)."""

    options: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class End:
    """The whole value is written: only an end-of-reply token may follow."""


Node = Lit | Str | Num | Choice | End
#: ``(node index, progress inside it)``: an offset, a character count or the text so far.
State = tuple[int, Any]


class Grammar:
    """Nodes of one compiled schema; node 0 is the start."""

    def __init__(self) -> None:
        self.nodes: list[Node] = []
        self.start_index = 0

    def add(self, node: Node) -> int:
        self.nodes.append(node)
        return len(self.nodes) - 1

    def enter(self, index: int) -> State:
        node = self.nodes[index]
        if isinstance(node, (Lit, Str)):
            return (index, 0)
        if isinstance(node, End):
            return (index, None)
        return (index, "")

    @property
    def start(self) -> State:
        return self.enter(self.start_index)

    def longest(self) -> int:
        """The most tokens an accepted text can take: its most UTF-8 bytes (a token is at least
        one byte; nodes only point to earlier ones)."""
        most: list[int] = []
        for node in self.nodes:
            if isinstance(node, Lit):
                most.append(len(node.text) + most[node.next])
            elif isinstance(node, Str):
                most.append(4 * node.max_chars + 1 + most[node.next])
            elif isinstance(node, Num):
                most.append(INTEGER_DIGITS + FRACTION_DIGITS + 2 + most[node.next])
            elif isinstance(node, Choice):
                most.append(max(len(text) + most[after] for text, after in node.options))
            else:
                most.append(0)
        return most[self.start_index]

    def feed(self, state: State, ch: str) -> State | None:
        """The state after ``ch``, or ``None`` when ``ch`` is not allowed there."""
        index, progress = state
        node = self.nodes[index]
        if isinstance(node, Lit):
            if node.text[progress] != ch:
                return None
            progress += 1
            return self.enter(node.next) if progress == len(node.text) else (index, progress)
        if isinstance(node, Str):
            if ch == '"':
                return self.enter(node.next) if progress >= node.min_chars else None
            if ch == "\\" or ord(ch) < 0x20 or progress >= node.max_chars:
                return None
            return (index, progress + 1)
        if isinstance(node, Num):
            grown = progress + ch
            if _number_prefix(grown, node.integer):
                return (index, grown)
            if not _number_done(progress):
                return None
            return self.feed(self.enter(node.next), ch)
        if isinstance(node, Choice):
            grown = progress + ch
            if any(text.startswith(grown) for text, _ in node.options):
                return self._settle(index, node, grown)
            for text, after in node.options:
                if text == progress:
                    return self.feed(self.enter(after), ch)
            return None
        return None

    def _settle(self, index: int, node: Choice, typed: str) -> State:
        """Leave the choice once ``typed`` is an option no other option extends."""
        longer = any(text != typed and text.startswith(typed) for text, _ in node.options)
        for text, after in node.options:
            if text == typed and not longer:
                return self.enter(after)
        return (index, typed)

    def feed_text(self, state: State, text: str) -> State | None:
        for ch in text:
            next_state = self.feed(state, ch)
            if next_state is None:
                return None
            state = next_state
        return state

    def can_end(self, state: State) -> bool:
        """Whether the value may stop here (an end-of-reply token is allowed)."""
        index, progress = state
        node = self.nodes[index]
        if isinstance(node, End):
            return True
        if isinstance(node, Choice):
            return any(
                text == progress and isinstance(self.nodes[after], End)
                for text, after in node.options
            )
        if isinstance(node, Num):
            return _number_done(progress) and isinstance(self.nodes[node.next], End)
        return False

    def first_chars(self, state: State) -> set[str] | None:
        """Characters that may come next (``None``: too many to list, e.g. inside a string)."""
        index, progress = state
        node = self.nodes[index]
        if isinstance(node, Lit):
            return {node.text[progress]}
        if isinstance(node, Choice):
            chars = {text[len(progress)] for text, _ in node.options if len(text) > len(progress)}
            for text, after in node.options:
                if text == progress:
                    more = self.first_chars(self.enter(after))
                    if more is None:
                        return None
                    chars |= more
            return chars
        if isinstance(node, Num):
            chars = set(_DIGITS) | {"-", "."}
            if _number_done(progress):
                more = self.first_chars(self.enter(node.next))
                if more is None:
                    return None
                chars |= more
            return chars
        if isinstance(node, End):
            return set()
        return None


def _number_prefix(text: str, integer: bool) -> bool:
    """Whether ``text`` can still grow into a JSON number (within the digit caps)."""
    body = text[1:] if text.startswith("-") else text
    if not body:
        return text == "-"
    whole, dot, fraction = body.partition(".")
    if not whole or not whole.isdigit() or len(whole) > INTEGER_DIGITS:
        return False
    if len(whole) > 1 and whole[0] == "0":
        return False
    if not dot:
        return True
    if integer or "." in fraction:
        return False
    return (not fraction or fraction.isdigit()) and len(fraction) <= FRACTION_DIGITS


def _number_done(text: str) -> bool:
    return bool(text) and text[-1].isdigit()


# -- schema -> grammar ---------------------------------------------------------------------------
class _Compiler:
    def __init__(self, root: Mapping[str, Any]) -> None:
        self.root = root
        self.grammar = Grammar()

    def resolve(self, schema: Mapping[str, Any], depth: int) -> Mapping[str, Any]:
        if depth > MAX_DEPTH:
            raise InputError(f"the schema nests deeper than {MAX_DEPTH} levels")
        ref = schema.get("$ref")
        if ref is None:
            return schema
        if not isinstance(ref, str) or not ref.startswith("#/"):
            raise InputError(f"schema $ref {ref!r} must point inside the schema ('#/$defs/...')")
        target: Any = self.root
        for part in ref[2:].split("/"):
            if not isinstance(target, Mapping) or part not in target:
                raise InputError(f"schema $ref {ref!r} points to nothing")
            target = target[part]
        return self.resolve(target, depth + 1)

    def value(self, schema: Any, after: int, depth: int = 0) -> int:
        """The start node of a value of ``schema`` followed by node ``after``."""
        if schema is True or schema == {}:
            schema = {"type": "string"}
        if not isinstance(schema, Mapping):
            raise InputError(f"a schema must be a JSON object (dict), got {schema!r}")
        schema = self.resolve(schema, depth)
        add = self.grammar.add
        if "const" in schema:
            return add(Choice(((json.dumps(schema["const"]), after),)))
        if "enum" in schema:
            options = [json.dumps(v) for v in schema["enum"]]
            if not options:
                raise InputError("schema 'enum' is empty")
            return add(Choice(tuple((text, after) for text in dict.fromkeys(options))))
        for key in ("anyOf", "oneOf"):
            if key in schema:
                return self.value(self._branch(schema[key], key), after, depth + 1)
        kind = schema.get("type")
        if isinstance(kind, list):
            kinds = [k for k in kind if k != "null"] or ["null"]
            kind = kinds[0]
        if kind is None:
            kind = "object" if "properties" in schema else "string"
        if kind == "object":
            return self._object(schema, after, depth)
        if kind == "array":
            return self._array(schema, after, depth)
        if kind == "string":
            cap = int(schema.get("maxLength", STRING_CHARS))
            low = min(int(schema.get("minLength", 1)), cap)
            return add(Lit('"', add(Str(low, cap, after))))
        if kind in ("integer", "number"):
            return add(Num(kind == "integer", after))
        if kind == "boolean":
            return add(Choice((("true", after), ("false", after))))
        if kind == "null":
            return add(Lit("null", after))
        raise InputError(f"schema type {kind!r} is not supported for constrained decoding")

    def _branch(self, branches: Any, key: str) -> Mapping[str, Any]:
        if not isinstance(branches, list) or not branches:
            raise InputError(f"schema '{key}' must be a non-empty list")
        real = [b for b in branches if not (isinstance(b, Mapping) and b.get("type") == "null")]
        if real and all(isinstance(b, Mapping) and "const" in b for b in real):
            return {"enum": [b["const"] for b in real]}
        return real[0] if real else branches[0]

    def _object(self, schema: Mapping[str, Any], after: int, depth: int) -> int:
        properties = schema.get("properties") or {}
        if not isinstance(properties, Mapping):
            raise InputError("schema 'properties' must be an object")
        add = self.grammar.add
        if not properties:
            return add(Lit("{}", after))
        nxt = add(Lit("}", after))
        names = list(properties)
        for position in range(len(names) - 1, -1, -1):
            name = names[position]
            start = self.value(properties[name], nxt, depth + 1)
            opener = "{" if position == 0 else ","
            nxt = add(Lit(f"{opener}{json.dumps(name)}:", start))
        return nxt

    def _array(self, schema: Mapping[str, Any], after: int, depth: int) -> int:
        items = schema.get("items", {"type": "string"})
        low = int(schema.get("minItems", 0))
        high = int(schema.get("maxItems", max(ARRAY_ITEMS, low)))
        if high < low or high < 0:
            raise InputError(f"schema minItems {low} is above maxItems {high}")
        add = self.grammar.add
        close = add(Lit("]", after))
        follow = close
        for position in range(high - 1, -1, -1):
            start = self.value(items, follow, depth + 1)
            if position == 0:
                if low == 0:
                    return add(Choice((("[]", after), ("[", start))))
                return add(Lit("[", start))
            if position < low:
                follow = add(Lit(",", start))
            else:
                follow = add(Choice(((",", start), ("]", after))))
        return add(Lit("[]", after))


def compile_schema(schema: Mapping[str, Any]) -> Grammar:
    """A ``Grammar`` whose accepted texts are compact JSON values of ``schema``."""
    compiler = _Compiler(schema)
    end = compiler.grammar.add(End())
    compiler.grammar.start_index = compiler.value(schema, end)
    return compiler.grammar


def tools_grammar(tools: Mapping[str, Mapping[str, Any]]) -> Grammar:
    """A ``Grammar`` for one tool call ``{"name":<a tool>,"arguments":<its parameters>}``,
    ``tools`` mapping each name to its parameters' JSON schema."""
    if not tools:
        raise InputError("a tool call needs at least one tool")
    compiler = _Compiler({})
    add = compiler.grammar.add
    end = add(End())
    close = add(Lit("}", end))
    branches = []
    for name, parameters in tools.items():
        compiler.root = parameters
        arguments = compiler.value({"type": "object", **parameters}, close)
        branches.append((json.dumps(name), add(Lit(',"arguments":', arguments))))
    compiler.grammar.start_index = add(Lit('{"name":', add(Choice(tuple(branches)))))
    return compiler.grammar


def choice_grammar(options: Sequence[str]) -> Grammar:
    """A ``Grammar`` accepting exactly one of ``options`` (plain text, not JSON)."""
    if not options or any(not o for o in options):
        raise InputError("a choice needs at least one non-empty option")
    grammar = Grammar()
    end = grammar.add(End())
    grammar.start_index = grammar.add(Choice(tuple((o, end) for o in dict.fromkeys(options))))
    return grammar


# -- the vocabulary, as text ---------------------------------------------------------------------
def _byte_level_table() -> dict[str, int]:
    """The byte-level BPE alphabet (GPT-2 style) as ``{character: byte}``: printable bytes map
    to themselves, the other bytes to the code points from 256 on, in order."""
    kept = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table = {chr(b): b for b in kept}
    extra = 0
    for b in range(256):
        if b not in kept:
            table[chr(256 + extra)] = b
            extra += 1
    return table


def _utf8_state(data: bytes) -> str:
    """``"done"``, ``"partial"`` (a character still incomplete) or ``"bad"`` for ``data``."""
    try:
        data.decode("utf-8")
        return "done"
    except UnicodeDecodeError as exc:
        return "partial" if exc.reason == "unexpected end of data" else "bad"


class Vocabulary:
    """Every usable token of a tokenizer as text, indexed for the constraint.

    Tokens that are pieces of a multi-byte character (a byte-level tokenizer writes Chinese or
    accented letters that way) are kept as raw bytes, usable inside strings.
    """

    def __init__(self, tokenizer: Any) -> None:
        special = set(tokenizer.all_special_ids)
        size = len(tokenizer)
        table = _byte_level_table()
        texts: list[str] = [""] * size
        raw: dict[int, bytes] = {}
        for tid in range(size):
            if tid in special:
                continue
            text = tokenizer.decode(
                [tid], skip_special_tokens=False, clean_up_tokenization_spaces=False
            )
            if text and "\ufffd" not in text:
                texts[tid] = text
                continue
            piece = tokenizer.convert_ids_to_tokens(tid)
            if isinstance(piece, str) and piece and all(ch in table for ch in piece):
                data = bytes(table[ch] for ch in piece)
                if all(b >= 0x80 for b in data):
                    raw[tid] = data
        self.texts = texts
        self.raw = raw
        plain = [
            tid
            for tid, t in enumerate(texts)
            if t and '"' not in t and "\\" not in t and all(ord(c) >= 0x20 for c in t)
        ]
        self.plain_ids = np.asarray(plain, dtype=np.int64)
        self.plain_lens = np.asarray([len(texts[t]) for t in plain], dtype=np.int64)
        self.quoted_ids = [tid for tid, t in enumerate(texts) if '"' in t]
        by_first: dict[str, list[int]] = {}
        for tid, t in enumerate(texts):
            if t:
                by_first.setdefault(t[0], []).append(tid)
        self.by_first = by_first


_VOCABS: weakref.WeakKeyDictionary[Any, Vocabulary] = weakref.WeakKeyDictionary()


def vocabulary(tokenizer: Any) -> Vocabulary:
    """The ``Vocabulary`` of ``tokenizer``, built once per tokenizer (about a second)."""
    vocab = _VOCABS.get(tokenizer)
    if vocab is None:
        vocab = _VOCABS[tokenizer] = Vocabulary(tokenizer)
    return vocab


# -- the constraint ------------------------------------------------------------------------------
class GrammarConstraint:
    """A ``TokenConstraint``: only tokens whose whole text the grammar accepts, then an end
    token once the value is complete. ``text`` is the value written so far."""

    def __init__(self, grammar: Grammar, vocab: Vocabulary, end_ids: set[int]) -> None:
        if not end_ids:
            raise InputError("constrained decoding needs the model's end-of-reply token ids")
        self.grammar = grammar
        self.vocab = vocab
        self.end_ids = sorted(end_ids)
        self.state: State | None = grammar.start
        self.text = ""
        self.ended = False
        #: Bytes of a multi-byte character begun inside a string and not yet complete.
        self.pending = b""

    @property
    def done(self) -> bool:
        """Whether the value is complete (an end token was taken, or may be now)."""
        return self.ended or (self.state is not None and self.grammar.can_end(self.state))

    def _accepts(self, tid: int) -> bool:
        text = self.vocab.texts[tid]
        return bool(text) and self.grammar.feed_text(self.state, text) is not None  # type: ignore[arg-type]

    def allowed(self) -> Sequence[int] | None:
        state = self.state
        if state is None:
            return self.end_ids
        grammar = self.grammar
        ends = self.end_ids if grammar.can_end(state) else []
        node = grammar.nodes[state[0]]
        if isinstance(node, End):
            return self.end_ids
        if isinstance(node, Str):
            room = node.max_chars - state[1]
            raw = [
                t
                for t, data in self.vocab.raw.items()
                if room > 0 and _utf8_state(self.pending + data) != "bad"
            ]
            if self.pending:
                return raw or self.end_ids
            bulk = self.vocab.plain_ids[self.vocab.plain_lens <= room].tolist()
            quoted = [t for t in self.vocab.quoted_ids if self._accepts(t)]
            return [*bulk, *quoted, *raw, *ends]
        chars = grammar.first_chars(state) or set()
        candidates = [t for ch in chars for t in self.vocab.by_first.get(ch, ())]
        picked = [t for t in candidates if self._accepts(t)]
        return [*picked, *ends] or self.end_ids

    def advance(self, token: int) -> None:
        if self.state is None:
            return
        if token in self.end_ids:
            self.ended = self.grammar.can_end(self.state)
            self.state = None
            return
        data = self.vocab.raw.get(token)
        if data is not None:
            self.pending += data
            if _utf8_state(self.pending) != "done":
                return
            text, self.pending = self.pending.decode("utf-8"), b""
        else:
            text = self.vocab.texts[token]
        self.state = self.grammar.feed_text(self.state, text) if text else None
        self.text += text


@functools.lru_cache(maxsize=64)
def _compiled(schema_json: str) -> Grammar:
    return compile_schema(json.loads(schema_json))


def json_constraint(
    schema: Mapping[str, Any], tokenizer: Any, end_ids: set[int]
) -> GrammarConstraint:
    """A fresh constraint for one reply that must be a JSON value of ``schema``."""
    key = json.dumps(schema, default=str)
    return GrammarConstraint(_compiled(key), vocabulary(tokenizer), end_ids)


def choice_constraint(
    options: Sequence[str], tokenizer: Any, end_ids: set[int]
) -> GrammarConstraint:
    """A fresh constraint for one reply that must be exactly one of ``options``."""
    return GrammarConstraint(choice_grammar(options), vocabulary(tokenizer), end_ids)


__all__ = [
    "Grammar",
    "GrammarConstraint",
    "Vocabulary",
    "choice_constraint",
    "compile_schema",
    "json_constraint",
    "tools_grammar",
    "vocabulary",
]
