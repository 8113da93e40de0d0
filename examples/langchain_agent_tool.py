"""MemoRAG as an agent tool: a tool-calling step asks the memory, then ``MemoryLLM`` answers.

``MemoryLLM`` writes text but cannot emit tool calls, so the decision to call the tool comes
from a tiny scripted model (deterministic and offline, standing in for any tool-calling chat
model); once the tool result is in the conversation, it hands over to ``MemoryLLM``. With
``langchain`` installed (``pip install langchain``) the loop runs in
``langchain.agents.create_agent``; without it, the same steps run by hand. Either way the
transcript is Human -> AI (tool call) -> Tool (passages with source ids) -> AI (answer).

Runs offline on the embedded default models: ``python examples/langchain_agent_tool.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from langchain_memorag import MemoRAGRetriever, MemoryLLM, create_memorag_tool
from shared_core import MemoRAG

DATA = Path(__file__).parent / "data" / "hotpotqa_sample.jsonl"
ROW_ID = "hotpot-dev-079"  # "In which year was the King who made the 1925 Birthday Honours born?"


class ScriptedToolCaller(BaseChatModel):
    """Calls ``tool_name`` with the user's question once, then lets ``answerer`` reply."""

    tool_name: str
    answerer: MemoryLLM

    @property
    def _llm_type(self) -> str:
        return "scripted-tool-caller"

    def bind_tools(self, tools: Any, **kwargs: Any) -> ScriptedToolCaller:
        return self

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        if any(isinstance(m, ToolMessage) for m in messages):
            reply: BaseMessage = self.answerer.invoke(messages)
        else:
            call = {"name": self.tool_name, "args": {"query": messages[-1].text}, "id": "call-1"}
            reply = AIMessage("", tool_calls=[call])
        return ChatResult(generations=[ChatGeneration(message=reply)])


def print_transcript(messages: list[BaseMessage]) -> None:
    for m in messages:
        calls = getattr(m, "tool_calls", None)
        text = f"calls {calls[0]['name']}({calls[0]['args']})" if calls else m.text[:300]
        print(f"[{m.type}] {text}")


def main() -> None:
    rows = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines()]
    row = next(r for r in rows if r["id"] == ROW_ID)
    print("question:", row["question"], "| gold answer:", row["answers"][0])
    engine = MemoRAG()  # embedded default models, offline
    engine.memorize([{"text": p["text"], "doc_id": p["doc_id"]} for p in row["paragraphs"]])
    tool = create_memorag_tool(MemoRAGRetriever(engine=engine, k=3))
    model = ScriptedToolCaller(
        tool_name=tool.name, answerer=MemoryLLM(engine=engine, max_tokens=32)
    )
    question = HumanMessage(row["question"])

    try:
        from langchain.agents import create_agent
    except ImportError:
        print("(`langchain` is not installed: running the agent loop by hand)\n")
        call = model.invoke([question])
        result = tool.invoke(call.tool_calls[0])  # a ToolMessage; .artifact holds the Documents
        print_transcript([question, call, result, model.invoke([question, call, result])])
        return

    agent = create_agent(model, tools=[tool], system_prompt="Use memorag_search to answer.")
    print_transcript(agent.invoke({"messages": [question]})["messages"])


if __name__ == "__main__":
    main()
