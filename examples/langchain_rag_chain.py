"""A classic LangChain RAG chain, before and after swapping in ``MemoRAGRetriever``.

The question is a two-hop HotpotQA "bridge" question: the film paragraph names the director,
and only the director's own paragraph says where she lives. A plain dense retriever searches
with the question's words; ``MemoRAGRetriever`` wraps that same retriever and also searches
with the clues the memory writes after reading all the paragraphs. The script prints the
passages each retriever finds (gold evidence marked) and the chain's answer with each.

Runs offline on the embedded default models: ``python examples/langchain_rag_chain.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

from langchain_core.documents import Document
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnablePassthrough
from langchain_core.vectorstores import InMemoryVectorStore

from langchain_memorag import MemoRAGEmbeddings, MemoRAGRetriever, MemoryLLM
from shared_core import MemoRAG

DATA = Path(__file__).parent / "data" / "hotpotqa_sample.jsonl"
ROW_ID = "hotpot-dev-004"  # "The director of ... "Big Stone Gap" is based in what New York city?"
K = 3


def load_row(row_id: str) -> dict:
    rows = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines()]
    return next(r for r in rows if r["id"] == row_id)


def format_docs(docs: list[Document]) -> str:
    return "\n\n".join(f"{d.metadata['title']}: {d.page_content}" for d in docs)


def build_chain(retriever: BaseRetriever, llm: MemoryLLM):
    prompt = ChatPromptTemplate.from_messages(
        [
            ("system", "Answer in a few words, using only this context.\n\n{context}"),
            ("human", "{question}"),
        ]
    )
    return (
        {"context": retriever | format_docs, "question": RunnablePassthrough()}
        | prompt
        | llm
        | StrOutputParser()
    )


def show(label: str, retriever: BaseRetriever, llm: MemoryLLM, row: dict) -> None:
    gold = set(row["evidence"]["doc_ids"])
    docs = retriever.invoke(row["question"])
    found = {d.metadata["title"] for d in docs} & gold
    print(f"\n== {label}: {len(found)}/{len(gold)} gold paragraphs in the top {K}")
    for doc in docs:
        mark = "*" if doc.metadata["title"] in gold else " "
        kinds = doc.metadata.get("memorag_clue_kinds")
        clues = [
            c
            for c, kind in zip(doc.metadata.get("memorag_clues", []), kinds or [], strict=True)
            if kind != "query"
        ]
        why = f"   <- found by memory clues {clues}" if clues else ""
        print(f" {mark} {doc.metadata['title']}{why}")
    if "memorag_clues" in docs[0].metadata and not any(
        kind != "query" for d in docs for kind in d.metadata["memorag_clue_kinds"]
    ):
        print("   (no memory clue reached the top k: these are the question's own hits)")
    print("answer:", build_chain(retriever, llm).invoke(row["question"]).strip())


def main() -> None:
    row = load_row(ROW_ID)
    docs = [
        Document(page_content=p["text"], id=p["doc_id"], metadata={"title": p["title"]})
        for p in row["paragraphs"]
    ]
    print("question:", row["question"], "| gold answer:", row["answers"][0])

    store = InMemoryVectorStore(MemoRAGEmbeddings())  # the embedded MiniLM
    store.add_documents(docs)
    dense = store.as_retriever(search_kwargs={"k": K})

    engine = MemoRAG()  # embedded default models, offline
    engine.memorize([{"text": d.page_content, "doc_id": d.id} for d in docs])
    llm = MemoryLLM(engine=engine, max_tokens=32)

    show("before: plain dense retriever", dense, llm, row)
    show(
        "after: MemoRAGRetriever over it",
        MemoRAGRetriever(engine=engine, base_retriever=dense, k=K, query_metadata=True),
        llm,
        row,
    )


if __name__ == "__main__":
    main()
