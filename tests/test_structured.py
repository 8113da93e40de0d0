"""Structured output and tool calls by constrained decoding, and the memory chat's answers to
framework helper prompts (no canned acknowledgement, YES/NO answered as asked).

A random-weight tiny model writes garbage when free; under the schema's grammar every reply
must still parse and fit the schema: that is what these tests check, on the real decoder.
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from fakes import ScriptedEngine, WordHashEmbedder
from scripted import ScriptedGenerator
from tiny_models import tiny_tokenizer

from shared_core import MemoRAG
from shared_core.errors import InputError
from shared_core.memory.compressed_kv import CompressedKVMemory
from shared_core.memory_chat import closed_choices
from shared_core.models.json_grammar import (
    GrammarConstraint,
    compile_schema,
    json_constraint,
    tools_grammar,
    vocabulary,
)
from shared_core.prompts import get_prompts
from shared_core.structured import ToolSpec
from shared_core.types import ChatTurn

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ACK = get_prompts("en").memory_ack
TEXTS = [
    "Mary Shelley left her house to her sister Ann.",
    "Mary Shelley left her library to the village school in Marlow.",
]

SCHEMAS: list[dict[str, Any]] = [
    {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12}}},
    {
        "type": "object",
        "properties": {
            "age": {"type": "integer"},
            "height": {"type": "number"},
            "alive": {"type": "boolean"},
            "colour": {"enum": ["red", "green"]},
        },
    },
    {
        "type": "object",
        "properties": {
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 5}, "maxItems": 3},
            "pair": {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 2},
        },
    },
    {
        "$defs": {"Point": {"type": "object", "properties": {"x": {"type": "integer"}}}},
        "type": "object",
        "properties": {
            "where": {"$ref": "#/$defs/Point"},
            "note": {"anyOf": [{"type": "string", "maxLength": 8}, {"type": "null"}]},
            "empty": {"type": "object", "properties": {}},
        },
    },
]


def _fits(value: Any, schema: dict[str, Any], root: dict[str, Any]) -> bool:
    """A small schema check for the keywords the grammar supports."""
    if "$ref" in schema:
        return _fits(value, root["$defs"][schema["$ref"].split("/")[-1]], root)
    if "enum" in schema:
        return value in schema["enum"]
    if "anyOf" in schema:
        return any(_fits(value, s, root) for s in schema["anyOf"])
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties", {})
        return (
            isinstance(value, dict)
            and list(value) == list(props)
            and all(_fits(value[k], s, root) for k, s in props.items())
        )
    if kind == "array":
        ok = isinstance(value, list) and all(_fits(v, schema["items"], root) for v in value)
        low, high = schema.get("minItems", 0), schema.get("maxItems", 4)
        return ok and low <= len(value) <= high
    if kind == "string":
        return isinstance(value, str) and 1 <= len(value) <= schema.get("maxLength", 160)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "boolean":
        return isinstance(value, bool)
    return value is None if kind == "null" else False


@pytest.mark.parametrize("schema", SCHEMAS)
def test_any_token_path_the_constraint_allows_is_valid_json(schema):
    tok = tiny_tokenizer()
    end = int(tok.eos_token_id)
    rng = random.Random(7)
    for _ in range(25):
        constraint = json_constraint(schema, tok, {end})
        for _ in range(compile_schema(schema).longest() + 2):
            token = rng.choice(list(constraint.allowed()))
            constraint.advance(token)
            if token == end:
                break
        assert constraint.done, constraint.text
        assert _fits(json.loads(constraint.text), schema, schema), constraint.text


def test_strings_may_hold_multibyte_characters():
    tok = tiny_tokenizer()
    schema = {"type": "object", "properties": {"name": {"type": "string"}}}
    constraint = json_constraint(schema, tok, {int(tok.eos_token_id)})
    for token in tok('{"name":"你好"}', add_special_tokens=False)["input_ids"]:
        assert token in constraint.allowed()
        constraint.advance(token)
    assert constraint.done and json.loads(constraint.text) == {"name": "你好"}


@pytest.mark.parametrize(
    ("schema", "named"),
    [
        ({"type": "object", "properties": {"f": {"type": "bytes"}}}, "bytes"),
        ({"type": "object", "properties": {"f": {"$ref": "#/$defs/Nope"}}}, "Nope"),
        ({"type": "array", "minItems": 3, "maxItems": 1}, "minItems"),
        ({"enum": []}, "enum"),
    ],
)
def test_unsupported_schemas_are_refused_by_name(schema, named):
    with pytest.raises(InputError, match=named):
        compile_schema(schema)


@pytest.fixture(scope="module")
def tiny_engine(llama):
    memory = CompressedKVMemory(
        llama, tiny_tokenizer(), beacon_ratio=1, window=64, reserve_tokens=64, show_progress=False
    )
    engine = MemoRAG(memory=memory, embedder=WordHashEmbedder(), clue_strategy="span")
    return engine.memorize(TEXTS)


@pytest.mark.parametrize("schema", SCHEMAS[:3])
def test_a_random_tiny_model_writes_valid_json_through_the_engine(tiny_engine, schema):
    reply = tiny_engine.chat_json([ChatTurn("user", "Describe the text.")], schema)
    assert _fits(reply.value, schema, schema)
    assert json.loads(reply.text) == reply.value
    assert reply.generation.completion_tokens > 0


def test_a_random_tiny_model_writes_valid_tool_calls(tiny_engine):
    tools = [
        ToolSpec("add", "Add two numbers.", SCHEMAS[1]),
        ToolSpec("lookup", "Find a name.", SCHEMAS[0]),
    ]
    for choice in ("required", "lookup"):
        reply = tiny_engine.chat_tools([ChatTurn("user", "Use a tool.")], tools, choice)
        assert reply is not None and len(reply.tool_calls) == 1
        call = reply.tool_calls[0]
        spec = next(t for t in tools if t.name == call.name)
        assert _fits(call.arguments, dict(spec.parameters), dict(spec.parameters))
        if choice == "lookup":
            assert call.name == "lookup"
    auto = tiny_engine.chat_tools([ChatTurn("user", "Hi")], tools, "auto", after_tool_result=True)
    assert auto is None  # after a tool's result, "auto" answers in text
    with pytest.raises(InputError, match="nope"):
        tiny_engine.chat_tools([ChatTurn("user", "x")], tools, "nope")


def test_tool_grammar_only_takes_bound_names():
    tok = tiny_tokenizer()
    grammar = tools_grammar({"a": {"type": "object", "properties": {}}})
    constraint = GrammarConstraint(grammar, vocabulary(tok), {int(tok.eos_token_id)})
    for ch in '{"name":"':
        constraint.advance(tok.convert_tokens_to_ids(ch))
    allowed = {tok.decode([t]) for t in constraint.allowed()}
    assert allowed == {"a"}


# -- the memory chat and framework helper prompts ----------------------------------------------
def test_closed_choices_reads_the_prompts_own_spelling():
    assert closed_choices("Is it relevant?\n> Relevant (YES / NO):") == ("YES", "NO")
    assert closed_choices("Answer yes or no.") == ("yes", "no")
    assert closed_choices("Who wrote it? No idea is fine.") is None


def _acking_engine(**kw: Any) -> ScriptedEngine:
    return ScriptedEngine(TEXTS, reply=ACK, generator=ScriptedGenerator("Plain reply."), **kw)


def test_a_reply_that_is_the_acknowledgement_is_answered_again_without_the_memory():
    engine = _acking_engine()
    turns = [ChatTurn("user", "Given the conversation, rephrase the question.")]
    assert engine.chat(turns).text == "Plain reply."
    pieces = list(engine.stream_chat(turns))
    assert "".join(pieces) == "Plain reply." and ACK not in "".join(pieces)
    assert engine.generator.prompts == [turns[0].content] * 2


def test_a_reply_opening_with_the_acknowledgement_loses_it():
    engine = ScriptedEngine(TEXTS, reply=f"{ACK} Ann got the house.")
    turns = [ChatTurn("user", "Who got the house?")]
    assert engine.chat(turns).text == "Ann got the house."
    assert "".join(engine.stream_chat(turns)) == "Ann got the house."


def test_a_yes_no_prompt_gets_one_of_its_words():
    engine = ScriptedEngine(TEXTS, reply="The context is relevant to the question.")
    prompt = "Question: who?\nContext: Ann.\nReturn YES if relevant and NO if not.\n> (YES / NO):"
    assert engine.chat([ChatTurn("user", prompt)]).text in ("YES", "NO")
    engine = ScriptedEngine(TEXTS, reply="x", rules=[("who?", "NO")])
    assert engine.chat([ChatTurn("user", prompt)]).text == "NO"
