"""Multi-turn LlamaIndex chat over a MemoRAG memory, with pronoun follow-ups.

``CondensePlusContextChatEngine`` rewrites each follow-up ("Where was he born?") into a
standalone question, retrieves with ``MemoRAGRetriever`` and answers with ``MemoryLLM``, which
passes the whole dialogue (context, earlier turns, the new question) to the engine. The memory
reads the 20 paragraphs of a three-hop MuSiQue question, asked here one hop per turn.

Runs offline on the embedded default models: ``python examples/llamaindex_chat.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

from llama_index.core.chat_engine import CondensePlusContextChatEngine

from llamaindex_memorag import MemoRAGRetriever, MemoryLLM
from shared_core import MemoRAG

DATA = Path(__file__).parent / "data" / "musique_sample.jsonl"
ROW_ID = "3hop1__287390_555629_70752"  # director -> birthplace -> airport
TURNS = [
    "Who directed the film The Girl Who Kicked the Hornets' Nest?",
    "Where was he born?",
    "What is the main international airport there?",
]


def main() -> None:
    rows = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines()]
    row = next(r for r in rows if r["id"] == ROW_ID)
    engine = MemoRAG()  # embedded default models, offline
    engine.memorize([{"text": p["text"], "doc_id": p["doc_id"]} for p in row["paragraphs"]])
    chat = CondensePlusContextChatEngine.from_defaults(
        MemoRAGRetriever(engine, similarity_top_k=3),
        llm=MemoryLLM(engine=engine, num_output=48),  # never the OpenAI default
        system_prompt="Answer briefly from what you have read.",
    )
    for question in TURNS:
        print(f"user: {question}\nmemory: ", end="", flush=True)
        response = chat.stream_chat(question)
        for piece in response.response_gen:  # streamed, token by token
            print(piece, end="", flush=True)
        sources = [n.node.ref_doc_id or n.node.node_id for n in response.source_nodes]
        print(f"\n   sources: {sources}\n")
    print("gold answers:", " -> ".join(d["answer"] for d in row["evidence"]["decomposition"]))


if __name__ == "__main__":
    main()
