"""LlamaIndex ``CondensePlusContextChatEngine`` on ``MemoryLLM``: the framework's own
condense-question prompt is answered with a question (not the memory's acknowledgement), and
that question is what the retriever searches.

``python examples/recipes/condense_chat.py`` (embedded models, offline).
"""

from __future__ import annotations

import json
from typing import Any

from llama_index.core.chat_engine import CondensePlusContextChatEngine
from llama_index.core.llms import ChatMessage

from llamaindex_memorag import MemoRAGRetriever, MemoryLLM
from shared_core import MemoRAG

TEXTS = [
    "Mary Shelley left her house in Bath to her sister Ann.",
    "Mary Shelley left her library to the village school in Marlow.",
    "The school in Marlow was founded in 1820 by John Smith.",
]
HISTORY = [
    ChatMessage(role="user", content="Who did Mary Shelley leave her house to?"),
    ChatMessage(role="assistant", content="Her sister Ann."),
]
FOLLOW_UP = "What did she leave to the school?"


def run(engine: Any) -> dict[str, Any]:
    """Ask the follow-up; return the condensed question, the sources and the answer."""
    llm = MemoryLLM(engine=engine, num_output=40)
    condensed: list[str] = []
    retriever = MemoRAGRetriever(engine, similarity_top_k=1)
    search = retriever._retrieve

    def spy(query_bundle):  # record what the chat engine searches for
        condensed.append(query_bundle.query_str)
        return search(query_bundle)

    retriever._retrieve = spy  # type: ignore[method-assign]
    chat = CondensePlusContextChatEngine.from_defaults(retriever, llm=llm)
    response = chat.chat(FOLLOW_UP, chat_history=list(HISTORY))
    return {
        "condensed": condensed,
        "sources": [n.node.get_content() for n in response.source_nodes],
        "answer": response.response,
    }


def main() -> None:
    engine = MemoRAG()
    engine.memorize(TEXTS)
    print(json.dumps(run(engine), indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
