"""MemoRAG as a LlamaIndex agent tool: a function-calling model asks the memory, then answers.

A ``QueryEngineTool`` wraps a query engine built from ``MemoRAGRetriever`` and ``MemoryLLM``.
The agent's own model is ``MockFunctionCallingLLM`` driven by a two-step script (call the
``memorag`` tool with the question, then answer with what the tool returned), so the example
is offline and deterministic; any real function-calling LLM can take its place.

Runs offline on the embedded default models: ``python examples/llamaindex_agent_tool.py``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llama_index.core.agent.workflow import FunctionAgent, ToolCall, ToolCallResult
from llama_index.core.base.llms.types import ChatMessage, MessageRole, ToolCallBlock
from llama_index.core.llms.mock import MockFunctionCallingLLM

from llamaindex_memorag import (
    MemoRAGRetriever,
    MemoryLLM,
    memorag_query_engine,
    memorag_query_engine_tool,
)
from shared_core import MemoRAG

DATA = Path(__file__).parent / "data" / "musique_sample.jsonl"
ROW_ID = "4hop1__709382_146811_31223_91015"  # "How many Publix stores are in the state ..."


def load_row(row_id: str) -> dict:
    rows = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines()]
    return next(r for r in rows if r["id"] == row_id)


def script(messages: Sequence[ChatMessage], **kwargs: Any) -> ChatMessage:
    """The agent model: first call the memorag tool, then report its answer."""
    results = [m for m in messages if m.role == MessageRole.TOOL]
    if results:
        return ChatMessage(role="assistant", content=f"The memory answers: {results[-1].content}")
    question = next(m.content for m in reversed(messages) if m.role == MessageRole.USER)
    call = ToolCallBlock(
        tool_call_id="call-1", tool_name="memorag", tool_kwargs={"input": question}
    )
    return ChatMessage(role="assistant", blocks=[call])


async def run(question: str, agent: FunctionAgent) -> None:
    handler = agent.run(user_msg=question)
    async for event in handler.stream_events():
        if isinstance(event, ToolCallResult):
            print(f"[tool] {event.tool_name} -> {str(event.tool_output.content).strip()}")
            for nws in event.tool_output.raw_output.source_nodes:
                print(f"         source: {nws.node.ref_doc_id or nws.node.node_id}")
        elif isinstance(event, ToolCall):
            print(f"[agent] calls {event.tool_name}({event.tool_kwargs})")
    output = await handler
    print(f"[agent] {output.response.content}")


def main() -> None:
    row = load_row(ROW_ID)
    print("question:", row["question"], "| gold answer:", row["answers"][0])
    engine = MemoRAG()  # embedded default models, offline
    engine.memorize([{"text": p["text"], "doc_id": p["doc_id"]} for p in row["paragraphs"]])
    query_engine = memorag_query_engine(
        MemoRAGRetriever(engine, similarity_top_k=3), MemoryLLM(engine=engine, num_output=32)
    )
    agent = FunctionAgent(
        tools=[memorag_query_engine_tool(query_engine)],
        llm=MockFunctionCallingLLM(response_generator=script),
        system_prompt="Use the memorag tool for questions about the documents.",
    )
    asyncio.run(run(row["question"], agent))


if __name__ == "__main__":
    main()
