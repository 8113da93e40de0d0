"""Bring-your-own LLM against a real OpenAI-compatible server (``transformers serve`` over the
embedded SmolLM2, offline, on 127.0.0.1): the ``openai`` client, LangChain ``ChatOpenAI`` and
LlamaIndex ``OpenAILike`` write the gist memory, the clues and a streamed answer; a server
that is down, too slow, answers an error or dies mid-memorize gives a ``GeneratorError``
naming the endpoint and leaves the previous save intact. Replies are capped at a few tokens.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from openai_server import Server, free_port, start_server

from shared_core.errors import GeneratorError
from shared_core.llm_roles import memorag_with_llm
from shared_core.models.openai_generator import OpenAIGenerator
from shared_core.retrieval.embeddings import Embedder
from shared_core.types import Answer, ChatTurn, Document

pytestmark = [pytest.mark.slow, pytest.mark.real_model]

TEXTS = [
    "The lighthouse of Varna was built in 1861 by French engineers. Its lamp burned whale oil "
    "until 1902, when the harbour board paid for a kerosene burner.",
    "Mira Olsen, the keeper from 1930 to 1958, kept a logbook of every ship that passed. The "
    "logbook is now in the maritime museum of Bergen.",
    "In 1967 the lighthouse was automated and the keeper's cottage became a small cafe that "
    "sells cardamom buns to hikers.",
]
QUESTION = "Who kept a logbook of the ships?"
#: Tiny replies keep every request well under a second on CPU.
GIST_TOKENS = 12
ANSWER_TOKENS = 12


@pytest.fixture(scope="module")
def model_dir() -> Path:
    from shared_core.models.loading import default_lm_path

    return default_lm_path()


@pytest.fixture(scope="module")
def server(model_dir: Path):
    served = start_server(model_dir)
    yield served
    served.stop()


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder.load(None)


#: Generous: six engineers share two CPU cores, and a 12-token reply has taken 30 s here.
TIMEOUT_S = 300.0


def _generator(server: Server, *, timeout: float = TIMEOUT_S) -> OpenAIGenerator:
    return OpenAIGenerator(server.model, base_url=server.base_url, max_retries=0, timeout=timeout)


def _requests(server: Server) -> int:
    """Chat completions the server has answered so far (from its access log)."""
    return server.log.read_text(errors="replace").count("POST /v1/chat/completions")


def _engine(llm, embedder: Embedder):
    return memorag_with_llm(
        llm, embedder=embedder, gist_tokens=GIST_TOKENS, clue_strategy="surrogate", ret_hit=2
    )


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# -- the openai client -------------------------------------------------------------------------


def test_generate_stream_and_stops_through_the_server(server: Server) -> None:
    gen = _generator(server)
    full = gen.generate("Name three colours.", max_new_tokens=ANSWER_TOKENS)
    assert full.text.strip()
    assert 0 < full.completion_tokens <= ANSWER_TOKENS
    pieces = list(gen.stream("Name three colours.", max_new_tokens=ANSWER_TOKENS))
    assert len(pieces) > 1
    assert "".join(pieces) == full.text  # greedy: the stream spells the same reply
    # A stop string inside the reply cuts it there, in both paths (the 5th is client-side).
    words = full.text.split()
    assert len(words) >= 3, full.text
    stop = f" {words[2]}"
    cut = full.text[: full.text.index(stop)]
    stops = ["@@1", "@@2", "@@3", "@@4", stop]
    assert gen.generate("Name three colours.", max_new_tokens=ANSWER_TOKENS, stop=stops).text == cut
    streamed = gen.stream("Name three colours.", max_new_tokens=ANSWER_TOKENS, stop=stops)
    assert "".join(streamed) == cut


def test_history_reaches_the_server(server: Server) -> None:
    gen = _generator(server)
    history = [ChatTurn("user", "My name is Ada."), ChatTurn("assistant", "Hello Ada.")]
    plain = gen.generate("What is my name?", max_new_tokens=1)
    with_history = gen.generate("What is my name?", history=history, max_new_tokens=1)
    assert with_history.prompt_tokens > plain.prompt_tokens


def test_gist_memory_clues_and_streamed_answer_through_the_server(
    server: Server, embedder: Embedder, tmp_path: Path
) -> None:
    gen = _generator(server)
    engine = _engine(gen, embedder)
    before = _requests(server)
    engine.memorize([Document(text=t, doc_id=f"d{i}") for i, t in enumerate(TEXTS)])
    gists = engine.memory.gists
    assert len(gists) == len(TEXTS) and all(g.strip() for g in gists)
    assert _requests(server) - before == len(TEXTS)  # one gist request per chunk

    before = _requests(server)
    clues = engine.clues(QUESTION)
    assert _requests(server) - before == 1  # the surrogate writer asked the server once
    assert all(c.kind == "surrogate" for c in clues)

    before = _requests(server)
    out = list(engine.stream_answer(QUESTION, max_new_tokens=ANSWER_TOKENS))
    *pieces, answer = out
    assert isinstance(answer, Answer) and pieces and all(isinstance(p, str) for p in pieces)
    assert "".join(pieces) == answer.text
    assert len(answer.passages) == 2
    assert _requests(server) - before == 2  # clues + the streamed answer

    engine.save(tmp_path / "save")
    again = _engine(gen, embedder).load(tmp_path / "save")
    assert again.memory.gists == gists
    assert again.corpus_size == engine.corpus_size


# -- framework LLMs pointed at the server ------------------------------------------------------


def test_langchain_chat_openai_as_the_memory_and_clue_writer(
    server: Server, embedder: Embedder
) -> None:
    langchain_openai = pytest.importorskip("langchain_openai")
    from langchain_memorag import MemoRAGRetriever
    from langchain_memorag.llm_bridge import ChatModelGenerator

    chat = langchain_openai.ChatOpenAI(
        model=server.model,
        base_url=server.base_url,
        api_key="EMPTY",
        temperature=0,
        max_retries=0,
        timeout=TIMEOUT_S,
    )
    before = _requests(server)
    retriever = MemoRAGRetriever.from_texts(
        TEXTS, llm=chat, k=2, embedder=embedder, gist_tokens=GIST_TOKENS, clue_strategy="surrogate"
    )
    assert len(retriever.engine.memory.gists) == len(TEXTS)
    docs = retriever.invoke(QUESTION)
    assert len(docs) == 2
    assert _requests(server) - before == len(TEXTS) + 1
    pieces = list(ChatModelGenerator(chat).stream("Name three colours.", max_new_tokens=8))
    assert len(pieces) > 1 and "".join(pieces).strip()


def test_llamaindex_openai_like_as_the_memory_and_clue_writer(
    server: Server, embedder: Embedder
) -> None:
    openai_like = pytest.importorskip("llama_index.llms.openai_like")
    from llama_index.core import Document as LIDocument

    from llamaindex_memorag import MemoRAGRetriever
    from llamaindex_memorag.llm_bridge import LLMGenerator

    llm = openai_like.OpenAILike(
        model=server.model,
        api_base=server.base_url,
        api_key="EMPTY",
        is_chat_model=True,
        temperature=0,
        max_retries=0,
        timeout=TIMEOUT_S,
        context_window=8192,
    )
    before = _requests(server)
    retriever = MemoRAGRetriever.from_defaults(
        documents=[LIDocument(text=t) for t in TEXTS],
        llm=llm,
        similarity_top_k=2,
        embedder=embedder,
        gist_tokens=GIST_TOKENS,
        clue_strategy="surrogate",
    )
    nodes = retriever.retrieve(QUESTION)
    assert len(nodes) == 2
    assert _requests(server) - before == len(TEXTS) + 1
    pieces = list(LLMGenerator(llm).stream("Name three colours.", max_new_tokens=8))
    assert len(pieces) > 1 and "".join(pieces).strip()


# -- failures ----------------------------------------------------------------------------------


def test_a_server_that_is_down_is_named(embedder: Embedder) -> None:
    port = free_port()  # nothing listens there
    url = f"http://127.0.0.1:{port}/v1"
    gen = OpenAIGenerator("some-model", base_url=url, max_retries=0, timeout=5)
    with pytest.raises(GeneratorError, match=rf"127\.0\.0\.1:{port}.*cannot be reached"):
        gen.generate("hello", max_new_tokens=4)
    with pytest.raises(GeneratorError, match=rf"127\.0\.0\.1:{port}"):
        list(gen.stream("hello", max_new_tokens=4))
    engine = _engine(gen, embedder)
    with pytest.raises(GeneratorError, match=rf"127\.0\.0\.1:{port}"):
        engine.memorize(TEXTS)
    assert engine.corpus_size == 0 and engine.memory.is_empty


def test_a_framework_llm_whose_server_is_down_is_named() -> None:
    langchain_openai = pytest.importorskip("langchain_openai")
    from langchain_memorag.llm_bridge import ChatModelGenerator

    port = free_port()
    chat = langchain_openai.ChatOpenAI(
        model="m", base_url=f"http://127.0.0.1:{port}/v1", api_key="EMPTY", max_retries=0
    )
    with pytest.raises(GeneratorError, match=rf"ChatOpenAI at http://127\.0\.0\.1:{port}/v1"):
        ChatModelGenerator(chat).generate("hello", max_new_tokens=4)


def test_an_error_answer_and_a_slow_answer_are_named(server: Server) -> None:
    wrong = OpenAIGenerator("no-such/model", base_url=server.base_url, max_retries=0)
    with pytest.raises(GeneratorError, match=r"127\.0\.0\.1.*HTTP 400"):
        wrong.generate("hello", max_new_tokens=4)
    slow = _generator(server, timeout=0.05)  # 200 tokens on CPU take far longer
    with pytest.raises(GeneratorError, match=r"127\.0\.0\.1.*did not answer within 0\.05 s"):
        slow.generate("Write a long story about the sea.", max_new_tokens=200)


def test_server_killed_mid_memorize_leaves_the_save_intact(
    model_dir: Path, embedder: Embedder, tmp_path: Path
) -> None:
    own = start_server(model_dir)  # its own server: this test kills it
    try:

        class DiesAfterOneRequest(OpenAIGenerator):
            """The real client; the server is killed once it has answered one more request."""

            armed = False

            def generate(self, prompt, **kwargs):
                out = super().generate(prompt, **kwargs)
                if self.armed:
                    own.stop()
                return out

        gen = DiesAfterOneRequest(
            own.model, base_url=own.base_url, max_retries=0, timeout=TIMEOUT_S
        )
        engine = _engine(gen, embedder)
        save = tmp_path / "save"
        engine.memorize(TEXTS[:2], save_dir=save)
        saved, gists = _digest(save), engine.memory.gists

        gen.armed = True
        with pytest.raises(GeneratorError, match=rf"127\.0\.0\.1:{own.port}"):
            engine.add([TEXTS[2], "A second new text about the harbour."], save_dir=save)
        assert engine.memory.gists == gists and engine.corpus_size == 2
        with pytest.raises(GeneratorError, match=rf"127\.0\.0\.1:{own.port}"):
            engine.memorize(TEXTS, save_dir=save, overwrite=True)
        assert engine.memory.gists == gists and engine.corpus_size == 2
        assert _digest(save) == saved  # nothing half-written reached the save
        assert _engine(gen, embedder).load(save).memory.gists == gists
    finally:
        own.stop()
