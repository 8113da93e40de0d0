"""Engines and adapters behave as framework objects: pickling, deep copies, unknown keywords.

A pickle refers to the engine's save directory (never holds its memory) and the engine reads
the save again on first use; what cannot be pickled fails with ``NotPicklableError`` saying
what to do; a deep copy of an adapter shares its engine. Real (tiny) models: the engine must be
one a save can rebuild, so nothing is injected.
"""

from __future__ import annotations

import asyncio
import copy
import pickle
import shutil
import warnings
from pathlib import Path
from typing import Any

import pytest
from fakes import ScriptedEngine
from langchain_core.documents import Document as LCDocument
from llama_index.core.schema import TextNode

import langchain_memorag as lc
import llamaindex_memorag as li
from shared_core import MemoRAG, NotPicklableError
from shared_core.errors import InputError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TEXTS = [
    "Marie Curie was born in Warsaw in 1867.",
    "Radium glows faintly in the dark.",
    "Pierre studied crystals and magnetism in Paris.",
]
QUERY = "Where was Marie Curie born?"


def build(model_dir: Path, **options: Any) -> MemoRAG:
    # The clue path with no clue writer: retrieval is the query's dense search, deterministic.
    return MemoRAG(
        str(model_dir), device="cpu", window=64, retrieval="clues", clue_strategy="none", **options
    )


@pytest.fixture(scope="module")
def saved(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[MemoRAG, Path]:
    folder = tmp_path_factory.mktemp("saved") / "memory"
    engine = build(tiny_llama_dir)
    engine.memorize(TEXTS, save_dir=folder)
    return engine, folder


def ids(result: Any) -> list[str]:
    return [p.passage.id for p in result.passages]


# -- the engine ----------------------------------------------------------------------------


def test_a_saved_engine_pickles_as_a_reference_and_reads_its_save_on_first_use(saved):
    engine, folder = saved
    blob = pickle.dumps(engine)
    assert len(blob) < 4096  # settings and a path: no tensors, no index
    again = pickle.loads(blob)
    assert again is not engine
    assert again._parts is None and again._index is None  # lazily: nothing read yet
    assert ids(again.retrieve(QUERY, k=2)) == ids(engine.retrieve(QUERY, k=2))
    assert again.corpus_size == engine.corpus_size
    # Pickled again before or after use, it is the same reference.
    assert pickle.loads(pickle.dumps(again)).reference().save_dir == folder.resolve()


def test_a_deep_copy_of_an_engine_is_an_independent_engine_on_the_same_save(saved):
    engine, _ = saved
    twin = copy.deepcopy(engine)
    assert twin is not engine
    assert ids(twin.retrieve(QUERY, k=1)) == ids(engine.retrieve(QUERY, k=1))
    assert twin.memory is not engine.memory


def test_an_unsaved_memory_refuses_to_pickle_and_says_to_save_first(tiny_llama_dir, tmp_path):
    engine = build(tiny_llama_dir)
    assert pickle.loads(pickle.dumps(engine)).corpus_size == 0  # nothing memorized: settings
    engine.memorize(TEXTS)
    with pytest.raises(NotPicklableError, match=r"engine\.save\(dir\)"):
        pickle.dumps(engine)
    with pytest.raises(NotPicklableError, match="from_dir"):
        copy.deepcopy(engine)
    engine.save(tmp_path / "m")
    pickle.dumps(engine)
    engine.add(["Polonium is named after Poland."])  # changed since the save
    with pytest.raises(NotPicklableError, match="changed"):
        pickle.dumps(engine)
    engine.save(tmp_path / "m")
    assert pickle.loads(pickle.dumps(engine)).corpus_size == 4


def test_an_engine_built_around_caller_objects_refuses_to_pickle_naming_them():
    engine = ScriptedEngine(TEXTS)
    with pytest.raises(NotPicklableError, match=r"memory=, embedder="):
        pickle.dumps(engine)
    assert isinstance(NotPicklableError("x"), pickle.PicklingError)


def test_a_pickle_holds_no_hub_token(saved, tiny_llama_dir):
    _, folder = saved
    engine = build(tiny_llama_dir, access_token="hf_secret_token").load(folder)
    blob = pickle.dumps(engine)
    assert b"hf_secret_token" not in blob
    assert pickle.loads(blob).config.access_token is None


def test_a_save_replaced_after_pickling_is_loaded_with_a_warning(tiny_llama_dir, tmp_path):
    engine = build(tiny_llama_dir)
    engine.memorize(TEXTS[:2], save_dir=tmp_path / "m")
    blob = pickle.dumps(engine)
    engine.add(TEXTS[2:], save_dir=tmp_path / "m")
    with pytest.warns(UserWarning, match="saved again since this engine was pickled"):
        assert pickle.loads(blob).corpus_size == 3


def test_a_pickle_whose_save_is_gone_fails_on_first_use_naming_it(tiny_llama_dir, tmp_path):
    engine = build(tiny_llama_dir)
    engine.memorize(TEXTS, save_dir=tmp_path / "m")
    again = pickle.loads(pickle.dumps(engine))
    shutil.rmtree(tmp_path / "m")
    with pytest.raises(Exception, match="does not exist"):
        again.retrieve(QUERY, k=1)


# -- the adapters --------------------------------------------------------------------------


def adapters(engine: MemoRAG) -> list[Any]:
    return [
        lc.MemoRAGRetriever(engine=engine, k=2),
        lc.MemoryLLM(engine=engine, max_tokens=3),
        li.MemoRAGRetriever(engine, similarity_top_k=2),
        li.MemoryLLM(engine=engine, num_output=3),
    ]


def engine_of(obj: Any) -> Any:
    return obj._engine if isinstance(obj, li.MemoryLLM) else obj.engine


def test_every_adapter_pickles_with_its_engine_and_works_after(saved):
    engine, _ = saved
    want = ids(engine.retrieve(QUERY, k=2))
    for obj in adapters(engine):
        again = pickle.loads(pickle.dumps(obj))
        assert isinstance(engine_of(again), MemoRAG), type(obj)  # never silently dropped
    lc_docs = pickle.loads(pickle.dumps(adapters(engine)[0])).invoke(QUERY)
    assert [d.id for d in lc_docs] == want
    li_nodes = pickle.loads(pickle.dumps(adapters(engine)[2])).retrieve(QUERY)
    assert [n.node.node_id for n in li_nodes] == want
    assert pickle.loads(pickle.dumps(adapters(engine)[1])).invoke("Hello").usage_metadata
    assert pickle.loads(pickle.dumps(adapters(engine)[3])).complete("Hello").raw["usage"]


def test_a_retriever_and_llm_pickled_together_share_one_engine_after(saved):
    engine, _ = saved
    retriever, llm = pickle.loads(pickle.dumps((adapters(engine)[0], adapters(engine)[1])))
    assert retriever.engine is llm.engine


def test_a_deep_copy_of_an_adapter_shares_its_engine(saved):
    engine, _ = saved
    for obj in adapters(engine):
        twin = copy.deepcopy(obj)
        assert twin is not obj
        assert engine_of(twin) is engine, type(obj)
    assert lc.MemoRAGRetriever(engine=engine).model_copy(deep=True).engine is engine


def test_an_adapter_over_an_unpicklable_engine_fails_with_our_error():
    engine = ScriptedEngine(TEXTS)
    for obj in adapters(engine):
        with pytest.raises(NotPicklableError, match="memory="):
            pickle.dumps(obj)
        assert engine_of(copy.deepcopy(obj)) is engine  # a copy still shares it


def test_the_llamaindex_llm_does_not_drop_a_foreign_engine_silently():
    class Foreign:  # a duck-typed engine holding something unpicklable
        def __init__(self) -> None:
            self.handle = lambda: None

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(NotPicklableError, match=r"MemoryLLM's engine \(Foreign\)"):
            pickle.dumps(li.MemoryLLM(engine=Foreign()))


# -- unknown keywords ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def scripted() -> ScriptedEngine:
    return ScriptedEngine(TEXTS)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"top_k": 1}, r"top_k= \(k= is the number of documents returned\)"),
        ({"serch_k": 2}, r"serch_k= \(did you mean search_k=\?\)"),
        ({"vectorstore": object()}, r"base_retriever=vectorstore.as_retriever\(\)"),
        ({"search_kwargs": {"k": 1, "filter": {"a": 1}}}, r"\['filter'\] are not supported"),
        ({"search_kwargs": {"k": 1}, "k": 2}, "disagree"),
    ],
)
def test_the_langchain_retriever_refuses_unknown_keywords_by_name(scripted, kwargs, message):
    with pytest.raises(InputError, match=message):
        lc.MemoRAGRetriever(engine=scripted, **kwargs)


def test_langchain_search_kwargs_k_is_the_number_of_documents(scripted):
    retriever = lc.MemoRAGRetriever(engine=scripted, search_kwargs={"k": 1})
    assert retriever.k == 1
    assert len(retriever.invoke("Where was Curie born?")) == 1


def test_langchain_calls_and_builders_refuse_unknown_keywords(scripted):
    retriever = lc.MemoRAGRetriever(engine=scripted)
    with pytest.raises(InputError, match=r"MemoRAGRetriever\.invoke got unknown keyword.*top_k="):
        retriever.invoke("Where was Curie born?", top_k=1)
    with pytest.raises(InputError, match=r"ainvoke.*kk="):
        asyncio.run(retriever.ainvoke("Where was Curie born?", kk=1))
    with pytest.raises(InputError, match=r"from_texts got unknown keyword argument top_k="):
        lc.MemoRAGRetriever.from_texts(["a text"], top_k=1)
    with pytest.raises(InputError, match=r"beacon_ration= \(did you mean beacon_ratio=\?\)"):
        lc.MemoRAGRetriever.from_documents([LCDocument(page_content="a")], beacon_ration=4)
    with pytest.raises(InputError, match="load got unknown"):
        lc.MemoRAGRetriever.load("anywhere", search_kwargs={"k": 1})


def test_llamaindex_constructors_refuse_unknown_keywords_by_name(scripted):
    with pytest.raises(InputError, match=r"top_k= \(similarity_top_k="):
        li.MemoRAGRetriever(scripted, top_k=1)
    with pytest.raises(InputError, match=r"similarity_topk= \(did you mean similarity_top_k=\?\)"):
        li.MemoRAGRetriever(scripted, similarity_topk=1)
    nodes = [TextNode(text="a text")]
    with pytest.raises(InputError, match=r"from_defaults got unknown keyword argument top_k="):
        li.MemoRAGRetriever.from_defaults(nodes=nodes, top_k=2)
    with pytest.raises(InputError, match=r"embed_model= \(the engine embeds with"):
        li.MemoRAGRetriever.from_defaults(nodes=nodes, embed_model="local")
    with pytest.raises(InputError, match="from_persist_dir got unknown"):
        li.MemoRAGRetriever.from_persist_dir("anywhere", filters=[])
    with pytest.raises(InputError, match=r"max_tokens= \(num_output="):
        li.MemoryLLM(engine=scripted, max_tokens=5)
    with pytest.raises(InputError, match=r"temprature= \(did you mean temperature=\?\)"):
        li.MemoryLLM(engine=scripted, temprature=0.5)
    assert li.MemoryLLM(engine=scripted, num_output=5, system_prompt="Be brief.").num_output == 5


def test_an_unpickled_engine_that_memorizes_first_never_reads_its_old_save(saved, monkeypatch):
    engine, _ = saved
    again = pickle.loads(pickle.dumps(engine))
    monkeypatch.setattr(type(again), "load", lambda *a, **k: pytest.fail("read the old save"))
    again.memorize(["Polonium is named after Poland."])
    assert again.corpus_size == 1


def test_the_embeddings_adapters_embed_with_the_engines_own_model(scripted):
    want = scripted.embedder.embed_queries(["Where was Curie born?"])[0].tolist()
    lc_embeddings = lc.MemoRAGEmbeddings.from_engine(scripted)
    assert lc_embeddings.embed_query("Where was Curie born?") == pytest.approx(want)
    assert len(lc_embeddings.embed_documents(TEXTS)) == len(TEXTS)
    li_embedding = li.MemoRAGEmbedding.from_engine(scripted)
    assert li_embedding.get_query_embedding("Where was Curie born?") == pytest.approx(want)
    assert li_embedding.model_name == scripted.embedder.name
