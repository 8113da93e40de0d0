"""A LangGraph ReAct agent (``create_react_agent``) whose model is ``MemoryLLM``: the memory
model decides whether to call the tool (``tool_choice="auto"``), writes the call under the
tool's JSON schema, reads the result and answers in text.

``python examples/recipes/langgraph_agent.py`` (embedded models, offline; needs ``langgraph``).
"""

from __future__ import annotations

import json
from typing import Any

from langchain_core.messages import AIMessage
from langchain_core.tools import tool
from langgraph.prebuilt import create_react_agent

from langchain_memorag import MemoryLLM
from shared_core import MemoRAG

TEXTS = [
    "The school in Marlow was founded in 1820 by John Smith.",
    "Mary Shelley left her library to the school in 1851.",
]
QUESTION = "How many years passed between 1820 and 1851? Use the tool."


def run(engine: Any) -> dict[str, Any]:
    """Run the agent once; return the tool calls it made and its answer."""

    @tool
    def years_between(start: int, end: int) -> int:
        """The number of years from year start to year end."""
        return end - start

    agent = create_react_agent(MemoryLLM(engine=engine, max_tokens=40), [years_between])
    state = agent.invoke({"messages": [("user", QUESTION)]}, {"recursion_limit": 8})
    ai = [m for m in state["messages"] if isinstance(m, AIMessage)]
    calls = [c["args"] for m in ai for c in m.tool_calls]
    return {"tool_calls": calls, "answer": ai[-1].text if ai else ""}


def main() -> None:
    engine = MemoRAG()
    engine.memorize(TEXTS)
    print(json.dumps(run(engine), indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
