"""A LlamaIndex ``FunctionAgent`` whose LLM is ``MemoryLLM``: the memory model decides whether
to call the tool, writes the call under the tool's JSON schema (valid by construction), reads
the result and answers in text.

``python examples/recipes/function_agent.py`` (embedded models, offline).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.tools import FunctionTool

from llamaindex_memorag import MemoryLLM
from shared_core import MemoRAG

TEXTS = [
    "The school in Marlow was founded in 1820 by John Smith.",
    "Mary Shelley left her library to the school in 1851.",
]
QUESTION = "How many years passed between 1820 and 1851? Use the tool."


def run(engine: Any) -> dict[str, Any]:
    """Run the agent once; return the tool calls it made and its answer."""
    calls: list[dict[str, int]] = []

    def years_between(start: int, end: int) -> int:
        """The number of years from year start to year end."""
        calls.append({"start": start, "end": end})
        return end - start

    agent = FunctionAgent(
        tools=[FunctionTool.from_defaults(years_between)],
        llm=MemoryLLM(engine=engine, num_output=40),
        streaming=False,
    )

    async def ask() -> Any:
        return await agent.run(QUESTION)

    answer = asyncio.run(ask())
    return {"tool_calls": calls, "answer": str(answer)}


def main() -> None:
    engine = MemoRAG()
    engine.memorize(TEXTS)
    print(json.dumps(run(engine), indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
