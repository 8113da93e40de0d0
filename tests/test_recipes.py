"""Every script under ``examples/recipes/`` runs end to end, here on a random tiny model.

A random model's words mean nothing, so these check the mechanics the recipes rely on: each
framework step gets a reply it can use (a parsable tool call, YES/NO, a valid choice, valid
sub-questions) and the recipe finishes. What the embedded model answers is in
``benchmarks/results/structured/recipes.md``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
from fakes import ScriptedEngine, WordHashEmbedder
from tiny_models import tiny_tokenizer

from shared_core import MemoRAG
from shared_core.memory.compressed_kv import CompressedKVMemory

RECIPES = Path(__file__).resolve().parents[1] / "examples" / "recipes"
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _recipe(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", RECIPES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tiny_engine(llama, texts) -> MemoRAG:
    memory = CompressedKVMemory(
        llama, tiny_tokenizer(), beacon_ratio=1, window=64, reserve_tokens=64, show_progress=False
    )
    engine = MemoRAG(memory=memory, embedder=WordHashEmbedder(), clue_strategy="span")
    return engine.memorize(list(texts))


def test_every_recipe_is_tested():
    assert sorted(p.stem for p in RECIPES.glob("*.py")) == sorted(CHECKS)


def _condense(out, recipe):
    assert len(out["condensed"]) == 1 and len(out["sources"]) == 1


def _multi_query(out, recipe):
    assert out["documents"] and isinstance(out["queries"], list)


def _chain_filter(out, recipe):
    assert set(out["kept"]) <= set(recipe.TEXTS) and out["of"] == 4


def _sub_question(out, recipe):
    assert out["sub_questions"] and all(tool == "estate" for _, tool in out["sub_questions"])


def _router(out, recipe):
    assert [r["engine"] in ("summary", "facts") for r in out["routed"]] == [True, True]


def _function_agent(out, recipe):
    assert all(set(c) == {"start", "end"} for c in out["tool_calls"]) and "answer" in out


def _structured(out, recipe):
    assert out["error"] is None and set(out["parsed"]) == {"founder", "year"}


def _langgraph(out, recipe):
    assert all(set(c) == {"start", "end"} for c in out["tool_calls"]) and "answer" in out


CHECKS = {
    "langgraph_agent": _langgraph,
    "condense_chat": _condense,
    "multi_query": _multi_query,
    "chain_filter": _chain_filter,
    "sub_question": _sub_question,
    "router": _router,
    "function_agent": _function_agent,
    "structured_output": _structured,
}


#: Recipes whose framework searches the model's free text: a random model writes control bytes
#: (NUL) that the retriever rightly refuses as a query, so these run on the scripted memory.
SCRIPTED = {"multi_query": "Mary Shelley school\nMarlow school library"}


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_recipe_runs_on_a_tiny_model(name, llama):
    recipe = _recipe(name)
    if name in SCRIPTED:
        engine = ScriptedEngine(recipe.TEXTS, reply=SCRIPTED[name])
    else:
        engine = _tiny_engine(llama, recipe.TEXTS)
    CHECKS[name](recipe.run(engine), recipe)
