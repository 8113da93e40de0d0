"""Structured replies and tool calls from the memory model, valid by construction.

The reply is decoded on the memory (so it can use what was memorized) under a
``GrammarConstraint`` compiled from a JSON schema: the decoder writes the schema's skeleton,
the model fills the values. A tool call is ``{"name": <one of the tools>, "arguments": <that
tool's parameters>}``; whether to call a tool at all (``tool_choice="auto"``) is a constrained
choice between the tool names and ``none``.

The framework adapters translate their schemas and tools into the plain JSON-schema dicts
taken here and the ``ToolCall``s returned back into their own types.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from shared_core.errors import InputError
from shared_core.memory.base import Memory
from shared_core.memory_chat import can_constrain
from shared_core.models.decoding import CopyingGenerator
from shared_core.models.json_grammar import (
    GrammarConstraint,
    choice_constraint,
    compile_schema,
    tools_grammar,
    vocabulary,
)
from shared_core.types import ChatTurn, Generation

#: ``tool_choice`` values: ``"auto"`` (the model decides), ``"required"`` / ``"any"`` (some
#: tool), ``"none"`` (no tool) or a tool's name.
ToolChoice = Literal["auto", "required", "none"] | str
_NO_TOOL = "none"
#: Characters a description line may take in the prompt.
_DESCRIPTION_CHARS = 200


@dataclass(frozen=True)
class ToolSpec:
    """A tool as the engine sees it: a name, what it does, its parameters' JSON schema."""

    name: str
    description: str = ""
    parameters: Mapping[str, Any] = field(default_factory=lambda: {"type": "object"})

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise InputError(f"a tool needs a non-empty name, got {self.name!r}")
        if not isinstance(self.parameters, Mapping):
            raise InputError(f"tool {self.name!r}: parameters must be a JSON schema dict")


@dataclass(frozen=True)
class ToolCall:
    """One tool call the model made."""

    name: str
    arguments: dict[str, Any]
    id: str = field(default_factory=lambda: f"call_{uuid.uuid4().hex[:16]}")


@dataclass(frozen=True)
class StructuredReply:
    """A reply decoded under a schema: ``value`` (parsed JSON), ``text`` (the JSON text)."""

    value: Any
    text: str
    generation: Generation
    tool_calls: tuple[ToolCall, ...] = ()


def _speaker(memory: Memory) -> CopyingGenerator:
    if not can_constrain(memory):
        raise InputError(
            f"the {memory.backend!r} memory cannot decode under a constraint, so it cannot "
            "write structured output or tool calls; use a memory with a local model "
            "(the default MemoRAG())"
        )
    assert isinstance(memory, CopyingGenerator)
    return memory


def _short(text: str) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= _DESCRIPTION_CHARS else line[: _DESCRIPTION_CHARS - 3] + "..."


def _type_name(schema: Any) -> str:
    if not isinstance(schema, Mapping):
        return "value"
    if "enum" in schema:
        return "one of " + ", ".join(json.dumps(v) for v in schema["enum"])
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return " or ".join(_type_name(b) for b in schema[key] if isinstance(b, Mapping))
    kind = schema.get("type", "object" if "properties" in schema else "value")
    return "/".join(kind) if isinstance(kind, list) else str(kind)


def describe_fields(schema: Mapping[str, Any]) -> str:
    """One line per top-level field: ``- name (type): description``."""
    properties = schema.get("properties") or {}
    lines = []
    for name, sub in properties.items():
        about = sub.get("description", "") if isinstance(sub, Mapping) else ""
        lines.append(f"- {name} ({_type_name(sub)})" + (f": {_short(about)}" if about else ""))
    return "\n".join(lines)


def schema_prompt(prompt: str, schema: Mapping[str, Any]) -> str:
    """``prompt`` with the instruction to reply as JSON with the schema's fields."""
    fields_text = describe_fields(schema)
    if not fields_text:
        return f"{prompt}\n\nReply in JSON."
    return f"{prompt}\n\nReply in JSON with these fields:\n{fields_text}"


def tools_prompt(prompt: str, tools: Sequence[ToolSpec]) -> str:
    """``prompt`` with the list of tools the reply may call."""
    lines = []
    for tool in tools:
        args = describe_fields(tool.parameters).replace("\n", "; ").replace("- ", "")
        head = f"- {tool.name}" + (f": {_short(tool.description)}" if tool.description else "")
        lines.append(head + (f" Arguments: {args}" if args else " No arguments."))
    return f"{prompt}\n\nTools you can call:\n" + "\n".join(lines)


def _decode(
    memory: CopyingGenerator,
    prompt: str,
    history: Sequence[ChatTurn],
    constraint: GrammarConstraint,
    longest: int,
) -> tuple[str, Generation]:
    gen = memory.generate_constrained(
        prompt, constraint, history=tuple(history), max_new_tokens=longest + 2
    )
    if not constraint.done:
        raise InputError(
            f"the structured reply did not finish within {longest + 2} tokens: "
            "lower the schema's string or array caps"
        )
    return constraint.text, gen


def chat_json(
    memory: Memory, messages: Sequence[ChatTurn], schema: Mapping[str, Any]
) -> StructuredReply:
    """Answer ``messages[-1]`` against ``memory`` as a JSON value of ``schema``."""
    if not messages:
        raise InputError("messages is empty")
    speaker = _speaker(memory)
    *history, last = messages
    grammar = compile_schema(schema)
    constraint = GrammarConstraint(grammar, vocabulary(memory.tokenizer), speaker.end_ids)
    text, gen = _decode(
        speaker, schema_prompt(last.content, schema), history, constraint, grammar.longest()
    )
    return StructuredReply(value=json.loads(text), text=text, generation=gen)


def _chosen(tools: Sequence[ToolSpec], tool_choice: ToolChoice) -> list[ToolSpec]:
    names = [t.name for t in tools]
    if len(set(names)) != len(names):
        raise InputError(f"tool names must be unique, got {names}")
    if tool_choice in ("auto", "required", "none"):
        return list(tools)
    if tool_choice not in names:
        raise InputError(f"tool_choice {tool_choice!r} names no bound tool; tools: {names}")
    return [t for t in tools if t.name == tool_choice]


def wants_tool(
    memory: Memory, messages: Sequence[ChatTurn], tools: Sequence[ToolSpec]
) -> str | None:
    """The tool the model picks for ``messages[-1]`` (``tool_choice="auto"``), or ``None``."""
    speaker = _speaker(memory)
    *history, last = messages
    options = [t.name for t in tools]
    no_tool = _NO_TOOL if _NO_TOOL not in options else "no tool"
    prompt = (
        tools_prompt(last.content, tools)
        + f"\n\nWhich tool should be called? Reply with its name, or {no_tool}."
    )
    constraint = choice_constraint([*options, no_tool], memory.tokenizer, speaker.end_ids)
    speaker.generate_constrained(prompt, constraint, history=tuple(history), max_new_tokens=64)
    return None if constraint.text == no_tool else constraint.text


def chat_tools(
    memory: Memory,
    messages: Sequence[ChatTurn],
    tools: Sequence[ToolSpec],
    tool_choice: ToolChoice = "auto",
    *,
    after_tool_result: bool = False,
) -> StructuredReply | None:
    """A tool call answering ``messages[-1]``, or ``None`` when no tool is to be called
    (``tool_choice="none"``, or ``"auto"`` and the model chose none: answer in text then).

    With ``"auto"`` and ``after_tool_result`` (the last message is a tool's result) the reply
    is text: a small model would otherwise call the same tool again and again.
    """
    if not messages:
        raise InputError("messages is empty")
    if not tools or tool_choice == "none" or (tool_choice == "auto" and after_tool_result):
        return None
    tool_choice = "required" if tool_choice == "any" else tool_choice
    chosen = _chosen(tools, tool_choice)
    if tool_choice == "auto":
        picked = wants_tool(memory, messages, chosen)
        if picked is None:
            return None
        chosen = [t for t in chosen if t.name == picked]
    speaker = _speaker(memory)
    *history, last = messages
    grammar = tools_grammar({t.name: t.parameters for t in chosen})
    constraint = GrammarConstraint(grammar, vocabulary(memory.tokenizer), speaker.end_ids)
    prompt = tools_prompt(last.content, chosen) + "\n\nReply with the tool call in JSON."
    text, gen = _decode(speaker, prompt, history, constraint, grammar.longest())
    value = json.loads(text)
    call = ToolCall(name=value["name"], arguments=dict(value["arguments"]))
    return StructuredReply(value=value, text=text, generation=gen, tool_calls=(call,))


def sub_questions(
    memory: Memory,
    question: str,
    tools: Sequence[ToolSpec],
    *,
    max_questions: int = 3,
    max_chars: int = 120,
) -> list[tuple[str, str]]:
    """``question`` split into 1..``max_questions`` simpler ``(sub_question, tool_name)`` pairs,
    each tool one of ``tools`` (by construction), decoded against the memory."""
    if not tools:
        raise InputError("sub_questions needs at least one tool")
    names = [t.name for t in tools]
    item = {
        "type": "object",
        "properties": {
            "sub_question": {"type": "string", "maxLength": max_chars},
            "tool_name": {"enum": names},
        },
    }
    schema = {
        "type": "object",
        "properties": {
            "items": {"type": "array", "items": item, "minItems": 1, "maxItems": max_questions}
        },
    }
    listing = "\n".join(f"- {t.name}: {_short(t.description)}" for t in tools)
    prompt = (
        f"Question: {question}\n"
        f"Split the question into simpler questions (1 to {max_questions}), each one answered "
        f"by one of these tools:\n{listing}"
    )
    reply = chat_json(memory, [ChatTurn("user", prompt)], schema)
    return [(i["sub_question"], i["tool_name"]) for i in reply.value["items"]]


def pick_choice(
    memory: Memory, question: str, choices: Sequence[str], *, reason_chars: int = 100
) -> tuple[int, str]:
    """``(index, reason)``: which of ``choices`` (descriptions) fits ``question`` best, the
    index (0-based) one of them by construction, decoded against the memory."""
    if not choices:
        raise InputError("pick_choice needs at least one choice")
    schema = {
        "type": "object",
        "properties": {
            "choice": {"enum": list(range(1, len(choices) + 1))},
            "reason": {"type": "string", "maxLength": reason_chars},
        },
    }
    listing = "\n".join(f"{i}. {_short(c)}" for i, c in enumerate(choices, 1))
    prompt = f"Question: {question}\nWhich of these choices fits the question best?\n{listing}"
    reply = chat_json(memory, [ChatTurn("user", prompt)], schema)
    return int(reply.value["choice"]) - 1, str(reply.value["reason"])


__all__ = [
    "StructuredReply",
    "ToolCall",
    "ToolChoice",
    "ToolSpec",
    "chat_json",
    "chat_tools",
    "describe_fields",
    "pick_choice",
    "schema_prompt",
    "sub_questions",
    "tools_prompt",
    "wants_tool",
]
