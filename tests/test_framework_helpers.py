"""The frameworks' own helper prompts, run through ``MemoryLLM`` by the frameworks themselves.

The scripted memory answers every free prompt with the memory frame's acknowledgement (what
the 135M model did with these prompts), so each test fails if that reply leaks into the
framework; the engine's plain generator then answers. Structured steps (YES/NO filters, tool
calls, sub-questions, structured predict) are decoded under the real grammar constraint.
"""

from __future__ import annotations

from typing import TypedDict

import pytest
from fakes import ScriptedEngine
from langchain_classic.chains import create_history_aware_retriever
from langchain_classic.retrievers.document_compressors import LLMChainFilter
from langchain_classic.retrievers.multi_query import MultiQueryRetriever
from langchain_core.documents import Document
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.chat_engine import CondensePlusContextChatEngine
from llama_index.core.llms import ChatMessage
from llama_index.core.prompts import PromptTemplate
from llama_index.core.query_engine import RouterQueryEngine, SubQuestionQueryEngine
from llama_index.core.tools import FunctionTool, QueryEngineTool
from pydantic import BaseModel
from scripted import ScriptedGenerator

import langchain_memorag as lcm
import llamaindex_memorag as lim
from shared_core.errors import InputError
from shared_core.prompts import get_prompts

ACK = get_prompts("en").memory_ack
TEXTS = [
    "Mary Shelley left her house to her sister Ann. Ann lived in Bath.",
    "Mary Shelley left her library to the village school in Marlow.",
    "The school in Marlow was founded in 1820 by John Smith.",
]
STANDALONE = "What did Mary Shelley leave to the school in Marlow?"


def _engine(rules=(), reply: str = ACK) -> ScriptedEngine:
    generator = ScriptedGenerator(lambda prompt: STANDALONE)
    return ScriptedEngine(TEXTS, reply=reply, generator=generator, rules=list(rules))


def _queries(engine: ScriptedEngine) -> list[str]:
    return [query for query, _ in engine.calls]


def test_condense_plus_context_gets_a_question_not_the_acknowledgement():
    engine = _engine()
    chat = CondensePlusContextChatEngine.from_defaults(
        lim.MemoRAGRetriever(engine, similarity_top_k=1), llm=lim.MemoryLLM(engine=engine)
    )
    history = [
        ChatMessage(role="user", content="Who did Mary Shelley leave her house to?"),
        ChatMessage(role="assistant", content="Her sister Ann."),
    ]
    response = chat.chat("What did she leave to the school?", chat_history=history)
    assert STANDALONE in _queries(engine) and ACK not in _queries(engine)
    assert ACK not in response.response


def test_history_aware_retriever_searches_with_a_question():
    engine = _engine()
    llm = lcm.MemoryLLM(engine=engine)
    prompt = ChatPromptTemplate.from_messages(
        [
            MessagesPlaceholder("chat_history"),
            ("user", "{input}"),
            ("user", "Write a search query for the conversation above."),
        ]
    )
    retriever = create_history_aware_retriever(
        llm, lcm.MemoRAGRetriever.from_engine(engine, k=1), prompt
    )
    history = [HumanMessage("Who got Mary Shelley's house?"), AIMessage("Her sister Ann.")]
    docs = retriever.invoke({"input": "What did she leave the school?", "chat_history": history})
    assert len(docs) == 1 and STANDALONE in _queries(engine)


def test_multi_query_retriever_gets_queries_not_the_acknowledgement():
    engine = _engine()
    retriever = MultiQueryRetriever.from_llm(
        lcm.MemoRAGRetriever.from_engine(engine, k=1), lcm.MemoryLLM(engine=engine)
    )
    docs = retriever.invoke("What did Mary Shelley leave to the school?")
    assert docs and ACK not in _queries(engine) and STANDALONE in _queries(engine)


def test_llm_chain_filter_gets_yes_or_no():
    engine = _engine(rules=[("Marlow", "YES"), ("Relevant", "NO")], reply="The context is")
    filt = LLMChainFilter.from_llm(lcm.MemoryLLM(engine=engine))
    docs = [Document(page_content=t) for t in TEXTS]
    kept = filt.compress_documents(docs, "Which school got the library?")
    assert [d.page_content for d in kept] == TEXTS[1:]


class Person(BaseModel):
    name: str
    age: int


class PersonDict(TypedDict):
    name: str
    age: int


PERSON = '{"name":"Ann","age":30}'


@pytest.mark.parametrize(
    ("schema", "name"),
    [(Person, "Person"), (PersonDict, "PersonDict"), (Person.model_json_schema(), "Person")],
)
def test_langchain_structured_output_with_raw(schema, name):
    engine = _engine(rules=[("Who is she", f'{{"name":"{name}","arguments":{PERSON}}}')])
    out = lcm.MemoryLLM(engine=engine).with_structured_output(schema, include_raw=True)
    result = out.invoke("Who is she? Give her age.")
    parsed = result["parsed"]
    assert result["parsing_error"] is None and result["raw"].tool_calls
    got = parsed.model_dump() if isinstance(parsed, BaseModel) else parsed
    assert dict(got) == {"name": "Ann", "age": 30}


def test_langchain_tool_choice_is_checked():
    llm = lcm.MemoryLLM(engine=_engine())
    with pytest.raises(InputError, match="nope"):
        llm.bind_tools([Person], tool_choice="nope")


def test_langchain_auto_tool_choice_may_answer_in_text():
    engine = _engine(rules=[("Which tool should be called", "none")], reply="Ann.")
    reply = lcm.MemoryLLM(engine=engine).bind_tools([Person]).invoke("Hello?")
    assert reply.tool_calls == [] and reply.content == "Ann."


def test_llamaindex_structured_predict_and_structured_llm():
    engine = _engine(rules=[("Who is she", f'{{"name":"Person","arguments":{PERSON}}}')])
    llm = lim.MemoryLLM(engine=engine)
    person = llm.structured_predict(Person, PromptTemplate("Who is she? {hint}"), hint="age?")
    assert person == Person(name="Ann", age=30)
    sllm = llm.as_structured_llm(Person)
    reply = sllm.chat([ChatMessage(role="user", content="Who is she?")])
    assert Person.model_validate_json(reply.message.content) == Person(name="Ann", age=30)


async def test_function_agent_calls_the_tool_then_answers():
    seen: list[tuple[int, int]] = []

    def add(a: int, b: int) -> int:
        """Add two integers."""
        seen.append((a, b))
        return a + b

    rules = [
        ("Which tool should be called", "add"),
        ("Reply with the tool call", '{"name":"add","arguments":{"a":2,"b":3}}'),
        ("returned: 5", "The sum is 5."),
    ]
    engine = _engine(rules=rules, reply="The sum is 5.")
    agent = FunctionAgent(tools=[FunctionTool.from_defaults(add)], llm=lim.MemoryLLM(engine=engine))
    result = await agent.run("What is 2 + 3?")
    assert seen == [(2, 3)] and "5" in str(result)


def test_sub_question_engine_asks_only_its_own_tools():
    sub = '{"items":[{"sub_question":"What did Ann get?","tool_name":"wills"}]}'
    engine = _engine(rules=[("Split the question", sub)], reply="The house.")
    llm = lim.MemoryLLM(engine=engine)
    tool = QueryEngineTool.from_defaults(
        lim.memorag_query_engine(lim.MemoRAGRetriever(engine, similarity_top_k=1), llm=llm),
        name="wills",
        description="Who got what.",
    )
    qe = SubQuestionQueryEngine.from_defaults(
        [tool], llm=llm, question_gen=lim.MemoryQuestionGenerator(engine), use_async=False
    )
    response = qe.query("What did Ann and the school get?")
    assert "What did Ann get?" in _queries(engine) and str(response)


def test_router_default_pydantic_selector_runs_through_function_calling():
    pick = '{"name":"SingleSelection","arguments":{"index":2,"reason":"facts"}}'
    engine = _engine(rules=[("Reply with the tool call", pick)], reply="John Smith.")
    llm = lim.MemoryLLM(engine=engine)
    tools = [
        QueryEngineTool.from_defaults(
            lim.memorag_query_engine(lim.MemoRAGRetriever(engine, similarity_top_k=1), llm=llm),
            name=name,
            description=name,
        )
        for name in ("summary", "facts")
    ]
    router = RouterQueryEngine.from_defaults(tools, llm=llm)
    response = router.query("Who founded the school?")
    assert response.metadata["selector_result"].ind == 1
