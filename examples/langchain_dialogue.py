"""Multi-turn chat with ``MemoryLLM``: a pronoun follow-up resolved by memory and history.

The memory reads ten HotpotQA paragraphs about films and film-makers. Each turn,
``MemoRAGRetriever`` gets the earlier messages (``invoke(q, history=...)``), so the memory can
turn "Did he also direct Doctor Strange?" into a standalone search before writing clues; the
passages it finds go into the system message, and ``MemoryLLM`` answers with the whole
dialogue as history, streaming token by token.

Runs offline on the embedded default models: ``python examples/langchain_dialogue.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from langchain_memorag import MemoRAGRetriever, MemoryLLM
from shared_core import MemoRAG

DATA = Path(__file__).parent / "data" / "hotpotqa_sample.jsonl"
ROW_ID = "hotpot-dev-000"  # paragraphs on Scott Derrickson, Ed Wood, Sinister, Doctor Strange...
TURNS = [
    "Who directed the 2012 horror film Sinister?",
    "Did he also direct Doctor Strange?",
    "Which country is he from?",
]


def main() -> None:
    rows = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines()]
    row = next(r for r in rows if r["id"] == ROW_ID)
    engine = MemoRAG()  # embedded default models, offline
    engine.memorize([{"text": p["text"], "doc_id": p["doc_id"]} for p in row["paragraphs"]])
    retriever = MemoRAGRetriever(engine=engine, k=3, query_metadata=True)
    llm = MemoryLLM(engine=engine, max_tokens=48)

    history: list[BaseMessage] = []
    for question in TURNS:
        docs = retriever.invoke(question, history=history)
        meta = [d.metadata for d in docs]
        pairs = [
            p for m in meta for p in zip(m["memorag_clues"], m["memorag_clue_kinds"], strict=True)
        ]
        rewrites = {clue for clue, kind in pairs if kind == "history"}
        context = "\n\n".join(d.page_content for d in docs)
        system = SystemMessage(f"Answer in one sentence from these passages.\n\n{context}")
        print(f"user: {question}")
        if rewrites:
            print(f"  (resolved with the history as: {sorted(rewrites)[0]!r})")
        print(f"  (passages: {[d.metadata['doc_id'] for d in docs]})")
        print("memory: ", end="", flush=True)
        reply = ""
        for chunk in llm.stream([system, *history, HumanMessage(question)]):
            print(chunk.text, end="", flush=True)
            reply += chunk.text
        print("\n")
        history += [HumanMessage(question), AIMessage(reply.strip())]


if __name__ == "__main__":
    main()
