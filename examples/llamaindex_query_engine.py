"""A LlamaIndex query engine before and after swapping in ``MemoRAGRetriever``.

The question is a two-hop MuSiQue question: one paragraph says which country the Bubye River
is in, another names that country's waterfall. A plain vector retriever searches with the
question's words only; ``MemoRAGRetriever.from_defaults(index=...)`` searches the *same* index
once for the question and once per clue the memory writes after reading every paragraph, then
fuses the hits. The script prints the passages each retriever finds (gold evidence marked with
``*``, with the clues that found them) and the query engine's answer with each.

The embedded 135M memory model writes weak clues for multi-hop questions (on this question it
can guess the wrong country), so the two retrievers may tie; pass a larger memory model as the
first argument (a hub id or folder) to see the clues pay off.

Runs offline on the embedded default models: ``python examples/llamaindex_query_engine.py``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from llama_index.core import VectorStoreIndex
from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import TextNode

from llamaindex_memorag import MemoRAGEmbedding, MemoRAGRetriever, MemoryLLM, memorag_query_engine

DATA = Path(__file__).parent / "data" / "musique_sample.jsonl"
ROW_ID = "2hop__205146_62031"  # "What is the name of the waterfall in the country where ..."
K = 3


def load_row(row_id: str) -> dict:
    rows = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines()]
    return next(r for r in rows if r["id"] == row_id)


def show(label: str, retriever: BaseRetriever, llm: MemoryLLM, row: dict) -> None:
    gold = set(row["evidence"]["doc_ids"])
    response = memorag_query_engine(retriever, llm).query(row["question"])
    found = {n.node.node_id for n in response.source_nodes} & gold
    print(f"\n== {label}: {len(found)}/{len(gold)} gold paragraphs in the top {K}")
    for nws in response.source_nodes:
        mark = "*" if nws.node.node_id in gold else " "
        clues = nws.node.metadata.get("memorag_clues")
        why = f"   <- {clues}" if clues else ""
        print(f" {mark} {nws.score:.4f}  {nws.node.metadata['title']}{why}")
    print("answer:", str(response).strip())


def main() -> None:
    row = load_row(ROW_ID)
    print("question:", row["question"], "| gold answer:", row["answers"][0])
    nodes = [
        TextNode(id_=p["doc_id"], text=p["text"], metadata={"title": p["title"]})
        for p in row["paragraphs"]
    ]
    index = VectorStoreIndex(nodes, embed_model=MemoRAGEmbedding())  # never the OpenAI default

    # Memorizes the index's nodes with MemoRAG(mem_model_name_or_path=model); the memory's
    # heads re-rank what the index returns.
    model = sys.argv[1] if len(sys.argv) > 1 else None  # None: the embedded default
    memorag = MemoRAGRetriever.from_defaults(
        index=index, similarity_top_k=K, mem_model_name_or_path=model, query_metadata=True
    )
    llm = MemoryLLM(engine=memorag.engine, num_output=32)

    show("before: plain vector retriever", index.as_retriever(similarity_top_k=K), llm, row)
    show("after: MemoRAGRetriever over the same index", memorag, llm, row)


if __name__ == "__main__":
    main()
