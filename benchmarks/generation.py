"""Generation behaviour of the embedded model: structured output and greedy loops.

``structured``: valid JSON and valid tool calls from the memory model, with and without
constrained decoding. Five schemas (four objects and one two-tool call) x five prompts over a
small memorized text. Free: the memory answers the same schema prompt
(``structured.schema_prompt`` / ``tools_prompt``) with ordinary decoding and the first JSON value
in the reply is checked. Constrained: ``MemoRAG.chat_json`` / ``chat_tools``. A reply counts as
valid when it parses, has exactly the schema's fields with the right types (and, for a tool
call, names a bound tool with valid arguments). ``--recipes`` also runs every
``examples/recipes`` script::

    OMP_NUM_THREADS=1 nice -n 10 python -m benchmarks reproduce structured

``loop-check``: greedy loops with and without the decoder's loop stop, through a LlamaIndex
query engine, on the README's LlamaIndex documents (``--corpus readme``, top 2) or the demo
novel's opening (``--corpus book``: its first 12,000 characters, top 4), at LlamaIndex's default
256 output tokens: each question is answered with the loop stop
(``shared_core.models.decoding.looping``) and with it turned off::

    OMP_NUM_THREADS=1 python -m benchmarks reproduce loop-check-book   # or loop-check-readme
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.registry import REPO, Experiment, Number, Step, command, experiment

TEXTS = [
    "Ada Lovelace, born in London in 1815, wrote the first published algorithm.",
    "Charles Babbage designed the Analytical Engine in 1837 in London.",
    "Mary Shelley wrote the novel Frankenstein in 1818; it tells of Victor Frankenstein.",
    "The weather in Paris was rainy, while Rome was sunny and warm.",
    "Grace Hopper, born in New York in 1906, developed one of the first compilers.",
]

_STR = {"type": "string", "maxLength": 60}
SCHEMAS: dict[str, dict[str, Any]] = {
    "person": {
        "type": "object",
        "properties": {"name": _STR, "born": {"type": "integer"}, "city": _STR},
    },
    "book": {
        "type": "object",
        "properties": {
            "title": _STR,
            "author": _STR,
            "characters": {"type": "array", "items": _STR, "maxItems": 3},
        },
    },
    "answer": {
        "type": "object",
        "properties": {"answer": _STR, "confident": {"type": "boolean"}},
    },
    "weather": {
        "type": "object",
        "properties": {"city": _STR, "sky": {"enum": ["sunny", "rainy", "cloudy"]}},
    },
}
TOOLS: list[dict[str, Any]] = [
    {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": _STR}},
    },
    {
        "name": "years_between",
        "description": "Years from one year to another.",
        "parameters": {
            "type": "object",
            "properties": {"start": {"type": "integer"}, "end": {"type": "integer"}},
        },
    },
]
PROMPTS: dict[str, list[str]] = {
    "person": [
        "Who wrote the first published algorithm?",
        "Tell me about Grace Hopper.",
        "Who designed the Analytical Engine?",
        "Describe Ada Lovelace.",
        "Who developed one of the first compilers?",
    ],
    "book": [
        "What novel did Mary Shelley write?",
        "Describe Frankenstein.",
        "Which book is mentioned in the text?",
        "Tell me about the novel from 1818.",
        "What is Frankenstein about?",
    ],
    "answer": [
        "When was Ada Lovelace born?",
        "Where was Babbage's engine designed?",
        "Who is Victor Frankenstein?",
        "What was the weather in Rome?",
        "Where was Grace Hopper born?",
    ],
    "weather": [
        "What was the weather in Paris?",
        "What was the weather in Rome?",
        "Describe the weather in the text.",
        "Was it raining in Paris?",
        "Was Rome sunny?",
    ],
    "tool_call": [
        "What is the weather in Paris?",
        "How many years passed between 1815 and 1837?",
        "Is it sunny in Rome?",
        "How many years from 1818 to 1906?",
        "Check the weather in London.",
    ],
}


def fits(value: Any, schema: dict[str, Any]) -> bool:
    """Whether ``value`` has exactly ``schema``'s fields with the right types."""
    if "enum" in schema:
        return value in schema["enum"]
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties", {})
        return (
            isinstance(value, dict)
            and set(value) == set(props)
            and all(fits(value[k], s) for k, s in props.items())
        )
    if kind == "array":
        return isinstance(value, list) and all(fits(v, schema["items"]) for v in value)
    if kind == "string":
        return isinstance(value, str)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "boolean":
        return isinstance(value, bool)
    return False


def valid_call(value: Any) -> bool:
    """A tool call naming a bound tool with valid arguments."""
    if not isinstance(value, dict) or set(value) != {"name", "arguments"}:
        return False
    tool = next((t for t in TOOLS if t["name"] == value["name"]), None)
    return tool is not None and fits(value["arguments"], tool["parameters"])


def first_json(text: str) -> Any:
    """The first JSON object in ``text`` (``None`` when there is none)."""
    decoder = json.JSONDecoder()
    for start, ch in enumerate(text):
        if ch == "{":
            try:
                return decoder.raw_decode(text[start:])[0]
            except json.JSONDecodeError:
                continue
    return None


def _free(engine: Any, prompt: str, max_tokens: int) -> str:
    from shared_core.types import ChatTurn

    return engine.chat([ChatTurn("user", prompt)], max_new_tokens=max_tokens).text


def measure(engine: Any, max_tokens: int = 120) -> list[dict[str, Any]]:
    """One row per (schema, prompt, mode): whether the reply was valid, and its seconds."""
    from shared_core.structured import ToolSpec, schema_prompt, tools_prompt
    from shared_core.types import ChatTurn

    specs = [ToolSpec(t["name"], t["description"], t["parameters"]) for t in TOOLS]
    rows: list[dict[str, Any]] = []
    for name, prompts in PROMPTS.items():
        for prompt in prompts:
            for mode in ("free", "constrained"):
                started = time.perf_counter()
                if name == "tool_call":
                    if mode == "free":
                        text = _free(
                            engine,
                            tools_prompt(prompt, specs) + "\n\nReply with the tool call in JSON.",
                            max_tokens,
                        )
                        value = first_json(text)
                    else:
                        reply = engine.chat_tools([ChatTurn("user", prompt)], specs, "required")
                        text, value = reply.text, reply.value
                    ok = valid_call(value)
                else:
                    schema = SCHEMAS[name]
                    if mode == "free":
                        text = _free(engine, schema_prompt(prompt, schema), max_tokens)
                        value = first_json(text)
                    else:
                        reply = engine.chat_json([ChatTurn("user", prompt)], schema)
                        text, value = reply.text, reply.value
                    ok = fits(value, schema)
                rows.append(
                    {
                        "schema": name,
                        "prompt": prompt,
                        "mode": mode,
                        "valid": ok,
                        "seconds": round(time.perf_counter() - started, 2),
                        "reply": text[:300],
                    }
                )
                print(f"{name:10s} {mode:11s} {ok!s:5s} {text[:80]!r}", flush=True)
    return rows


def table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown: valid replies per schema and mode, and mean seconds per reply."""
    lines = [
        "| schema | free: valid | constrained: valid | free s/reply | constrained s/reply |",
        "|---|---|---|---|---|",
    ]
    for name in [*PROMPTS, "all"]:
        cells = []
        for key in ("valid", "seconds"):
            for mode in ("free", "constrained"):
                some = [r for r in rows if r["mode"] == mode and name in (r["schema"], "all")]
                if key == "valid":
                    cells.append(f"{sum(r['valid'] for r in some)}/{len(some)}")
                else:
                    cells.append(f"{sum(r['seconds'] for r in some) / max(len(some), 1):.1f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_recipes() -> list[dict[str, Any]]:
    """Run every ``examples/recipes`` script's ``run`` on the embedded models."""
    from shared_core import MemoRAG

    folder = Path(__file__).resolve().parents[1] / "examples" / "recipes"
    results = []
    for path in sorted(folder.glob("*.py")):
        spec = importlib.util.spec_from_file_location(f"recipe_{path.stem}", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        engine = MemoRAG()
        engine.memorize(list(module.TEXTS))
        started = time.perf_counter()
        try:
            out, error = module.run(engine), None
        except Exception as exc:  # a recipe that fails is a result too
            out, error = None, f"{type(exc).__name__}: {exc}"
        seconds = round(time.perf_counter() - started, 1)
        results.append({"recipe": path.stem, "seconds": seconds, "result": out, "error": error})
        print(json.dumps(results[-1], ensure_ascii=False)[:400], flush=True)
    return results


def recipes_table(results: Sequence[dict[str, Any]]) -> str:
    """Markdown: each recipe, its seconds on the embedded model and what it returned."""
    lines = ["| recipe | seconds | result (embedded SmolLM2-135M) |", "|---|---|---|"]
    for r in results:
        said = r["error"] or json.dumps(r["result"], ensure_ascii=False)
        said = said if len(said) <= 240 else said[:237] + "..."
        lines.append(f"| {r['recipe']} | {r['seconds']} | {said.replace('|', '/')} |")
    return "\n".join(lines)


def summarize(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Valid replies and mean seconds per mode, over all schemas and for tool calls."""
    out: dict[str, Any] = {}
    for mode in ("free", "constrained"):
        some = [r for r in rows if r["mode"] == mode]
        calls = [r for r in some if r["schema"] == "tool_call"]
        out[mode] = {
            "valid": sum(r["valid"] for r in some),
            "replies": len(some),
            "valid_tool_calls": sum(r["valid"] for r in calls),
            "tool_calls": len(calls),
            "seconds_per_reply": sum(r["seconds"] for r in some) / max(len(some), 1),
        }
    return out


@command("structured", "valid JSON / tool calls with and without constrained decoding")
def structured_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/structured"))
    parser.add_argument("--recipes", action="store_true", help="also run examples/recipes")
    parser.add_argument("--skip-schemas", action="store_true", help="only the recipes")
    args = parser.parse_args(argv)
    import torch

    from shared_core import MemoRAG

    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.skip_schemas:
        engine = MemoRAG()
        engine.memorize(TEXTS)
        rows = measure(engine)
        (args.out / "structured.json").write_text(json.dumps(rows, indent=1), "utf-8")
        summary = json.dumps(summarize(rows), indent=1)
        (args.out / "structured_summary.json").write_text(summary, "utf-8")
        (args.out / "structured.md").write_text(table(rows) + "\n", "utf-8")
        print(table(rows))
    if args.recipes:
        results = run_recipes()
        (args.out / "recipes.json").write_text(
            json.dumps(results, indent=1, ensure_ascii=False), "utf-8"
        )
        (args.out / "recipes.md").write_text(recipes_table(results) + "\n", "utf-8")
    return 0


BOOK = REPO / "examples" / "data" / "frankenstein.txt"
BOOK_QUESTIONS = ("Why does he travel north?", "Who is the narrator writing to?")
QUESTIONS = (
    "Why does Walton sail north?",
    "Who does Walton write to?",
    "What does Walton do at Archangel?",
)
TEXTS = (
    "Walton writes to his sister Margaret from St. Petersburgh.",
    "He sails north to find a passage near the pole and the secret of the magnet.",
    "He hires a ship at Archangel and gathers a crew of sailors.",
)


def run_loops(corpus: str, max_tokens: int = 256) -> list[dict[str, Any]]:
    from llama_index.core import Document
    from llama_index.core.query_engine import RetrieverQueryEngine

    from llamaindex_memorag import MemoRAGRetriever, MemoryLLM
    from shared_core.models import decoding

    if corpus == "book":
        texts, top, questions = [BOOK.read_text(encoding="utf-8")[:12000]], 4, BOOK_QUESTIONS
    else:
        texts, top, questions = list(TEXTS), 2, QUESTIONS
    retriever = MemoRAGRetriever.from_defaults(
        documents=[Document(text=t) for t in texts], similarity_top_k=top
    )
    engine = retriever.engine
    seen: list[Any] = []
    chat = engine.chat

    def recording_chat(messages: Any, **options: Any) -> Any:
        generation = chat(messages, **options)
        seen.append(generation)
        return generation

    engine.chat = recording_chat  # type: ignore[method-assign]
    llm = MemoryLLM(engine=engine, num_output=max_tokens)
    query_engine = RetrieverQueryEngine.from_args(retriever, llm=llm)
    real = decoding.looping
    rows = []
    for question in questions:
        for stop in (True, False):
            decoding.looping = real if stop else (lambda tokens: False)  # type: ignore[assignment]
            seen.clear()
            started = time.perf_counter()
            text = str(query_engine.query(question))
            seconds = time.perf_counter() - started
            gen = seen[-1]
            rows.append(
                {
                    "question": question,
                    "loop_stop": stop,
                    "completion_tokens": gen.completion_tokens,
                    "finish_reason": gen.finish_reason,
                    "seconds": round(seconds, 2),
                    "reply": text,
                }
            )
            print(json.dumps(rows[-1])[:300], flush=True)
    decoding.looping = real  # type: ignore[assignment]
    return rows


def loops_table(rows: list[dict[str, Any]], corpus: str) -> str:
    lines = [
        f"# Loop stop through a LlamaIndex query engine, corpus {corpus!r} (SmolLM2-135M, greedy,"
        " 256 tokens)",
        "",
        f"`OMP_NUM_THREADS=1 python -m benchmarks loop-check --corpus {corpus}` (1 torch thread, "
        "shared 2-core CPU)",
        "",
        "| question | loop stop | reply tokens | finish | seconds |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['question']} | {'on' if r['loop_stop'] else 'off'} | "
            f"{r['completion_tokens']} | {r['finish_reason']} | {r['seconds']} |"
        )
    return "\n".join(lines) + "\n"


@command("loop-check", "greedy loops with and without the decoder's loop stop")
def loop_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="greedy loops with and without the loop stop")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/loop-check-book"))
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--corpus", choices=("readme", "book"), default="book")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    rows = run_loops(args.corpus, args.max_tokens)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"loop_check_{args.corpus}"
    (args.out / f"{stem}.json").write_text(json.dumps(rows, indent=2), encoding="utf-8")
    (args.out / f"{stem}.md").write_text(loops_table(rows, args.corpus), encoding="utf-8")
    return 0


experiment(
    Experiment(
        id="structured",
        about="valid JSON / tool calls from the embedded model, free vs constrained decoding",
        steps=(Step("structured --recipes --out {out}"),),
        result="structured_summary.json",
        files=("structured.json", "structured.md", "recipes.json", "recipes.md"),
        numbers=(
            Number("free: valid replies", "free.valid", "{}"),
            Number("constrained: valid replies", "constrained.valid", "{}"),
            Number("free: valid tool calls", "free.valid_tool_calls", "{}"),
            Number("constrained: valid tool calls", "constrained.valid_tool_calls", "{}"),
            Number("free: s/reply", "free.seconds_per_reply", "{:.1f}"),
            Number("constrained: s/reply", "constrained.seconds_per_reply", "{:.1f}"),
        ),
        minutes=25,
    )
)
for _corpus in ("book", "readme"):
    experiment(
        Experiment(
            id=f"loop-check-{_corpus}",
            about=f"greedy loops with and without the loop stop ({_corpus} corpus)",
            steps=(Step(f"loop-check --corpus {_corpus} --out {{out}}"),),
            result=f"loop_check_{_corpus}.json",
            numbers=(
                Number("loop stop on: reply tokens", "0.completion_tokens", "{}"),
                Number("loop stop on: seconds", "0.seconds", "{:.1f}"),
                Number("loop stop off: reply tokens", "1.completion_tokens", "{}"),
                Number("loop stop off: seconds", "1.seconds", "{:.1f}"),
            ),
            minutes=8 if _corpus == "book" else 4,
        )
    )
