"""Short answers copied from the passages (``shared_core/short_answers.py``): mechanics on a
tiny random-weight model. Quality is measured in ``benchmarks/answers.py``, never here."""

from __future__ import annotations

import pytest
import torch
from scripted import ScriptedGenerator, ScriptedMemory, shared_embedder

from shared_core.config import MemoRAGConfig
from shared_core.errors import InputError
from shared_core.memory.compressed_kv import CompressedKVMemory
from shared_core.models.generation import LocalGenerator, format_passages
from shared_core.models.span_scoring import PromptScorer
from shared_core.pipeline import MemoRAG
from shared_core.prompts import get_prompts
from shared_core.short_answers import (
    SpanDecoding,
    SpanScoring,
    candidate_spans,
    is_yes_no,
    wants_long_answer,
)
from shared_core.types import Passage, ScoredPassage

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TEXTS = [
    "The lighthouse keeper Ada Brenn wrote every shipwreck into a logbook in 1861.",
    "Halloran rents a small room above the bakery on Wick Lane.",
    "The chapel bell was cast in 1790 and cracked during a hard frost.",
]
PASSAGES = tuple(
    ScoredPassage(Passage(f"p{i}", text, {"doc_id": f"doc-{i}"}), 1.0 - i / 10)
    for i, text in enumerate(TEXTS)
)
PROMPTS = get_prompts("en")


@pytest.fixture(scope="module")
def generator(llama, tokenizer) -> LocalGenerator:
    return LocalGenerator(llama, tokenizer, name="tiny")


@pytest.fixture(scope="module")
def embedder():
    return shared_embedder()


def _is_cited_span(answer, passages) -> None:
    """The answer is the quoted text, which is exactly where its citation points."""
    assert answer.citations
    by_id = {p.passage.id: p.passage for p in passages}
    for citation in answer.citations:
        passage = by_id[citation.passage_id]
        assert passage.text[citation.start : citation.end] == citation.quote
        assert citation.doc_id == passage.metadata["doc_id"]
    if answer.kind != "yes_no":
        (citation,) = answer.citations
        assert answer.text == citation.quote and answer.text.strip()


@pytest.mark.parametrize("method", [SpanScoring(), SpanDecoding(max_tokens=6)])
@pytest.mark.parametrize(
    "question", ["Where does Halloran live?", "When was the bell cast?", "Who kept the logbook?"]
)
def test_a_short_answer_is_a_cited_verbatim_span(generator, method, question):
    answer = method.answer(generator, PROMPTS, question, PASSAGES)
    _is_cited_span(answer, PASSAGES)
    assert answer.kind == "span"
    assert any(answer.text in p.passage.text for p in PASSAGES)


@pytest.mark.parametrize("method", [SpanScoring(), SpanDecoding()])
def test_yes_no_questions_get_yes_or_no_citing_the_top_passages(generator, method):
    answer = method.answer(generator, PROMPTS, "Was the chapel bell cast in 1790?", PASSAGES)
    assert answer.text in ("yes", "no") and answer.kind == "yes_no"
    assert [c.passage_id for c in answer.citations] == ["p0", "p1"]
    assert all(c.start == 0 and c.end == len(c.quote) for c in answer.citations)
    _is_cited_span(answer, PASSAGES)


def test_yes_or_no_is_the_option_the_model_scores_higher(generator, monkeypatch):
    for favoured in ("yes", "no"):
        other = "no" if favoured == "yes" else "yes"

        def compare(self, options, favoured=favoured):
            return [1.0, 0.0] if favoured == "yes" else [0.0, 1.0]

        monkeypatch.setattr(PromptScorer, "compare", compare)
        answer = SpanScoring().answer(generator, PROMPTS, "Is Halloran a baker?", PASSAGES)
        assert answer.text == favoured != other


def test_a_choice_question_answers_with_one_of_its_options(generator):
    passages = (
        ScoredPassage(Passage("a", "Wick Lane is older than the quay.", {"doc_id": "a"}), 1.0),
        ScoredPassage(Passage("b", "The Quay was built in 1900.", {"doc_id": "b"}), 0.9),
    )
    answer = SpanScoring().answer(
        generator, PROMPTS, "Which is older, Wick Lane or the quay?", passages
    )
    assert answer.kind == "choice" and answer.text.lower() in ("wick lane", "quay")
    _is_cited_span(answer, passages)


def test_question_kinds():
    assert is_yes_no("Are Local H and For Against both from the United States?")
    assert is_yes_no("did the crew find him?")
    assert not is_yes_no("Which band, Letters to Cleo or Screaming Trees, had more members?")
    assert not is_yes_no("Who wrote the letters?")
    assert wants_long_answer("Summarize the discussion about the remote control")
    assert wants_long_answer("What did A think about the budget?")
    assert wants_long_answer("Why did the crew turn back?")
    assert not wants_long_answer("How did Victor Frankenstein's mother die?")


def test_candidates_never_repeat_only_the_question_and_keep_their_offsets():
    plain = [p.passage for p in PASSAGES]
    spans = candidate_spans(plain, "Where does Halloran rent a room?")
    assert spans
    assert all(plain[s.index].text[s.start : s.end] == s.text for s in spans)
    assert "Halloran" not in {s.text for s in spans}
    assert "Wick Lane" in {s.text for s in spans}


def test_packed_scores_equal_scoring_each_reply_alone(generator):
    prompt = PROMPTS.short_answer.format(context=format_passages(PASSAGES), question="Who?")
    replies = [generator.format.encode(t) for t in ("Ada Brenn", "Wick Lane", "1790")]
    ends = sorted(generator.end_ids)
    packed = PromptScorer(generator, prompt).score(replies, ends)
    ids = generator.format.plain((), prompt)
    for reply, got in zip(replies, packed, strict=True):
        with torch.inference_mode():
            logits = generator.model(input_ids=torch.tensor([ids + reply])).logits[0]
        logp = torch.log_softmax(logits.float(), dim=-1)
        want = sum(float(logp[len(ids) - 1 + i, t]) for i, t in enumerate(reply))
        want += float(torch.logsumexp(logp[len(ids) + len(reply) - 1, ends], dim=0))
        assert got == pytest.approx(want, abs=1e-3)
    one_at_a_time = PromptScorer(generator, prompt)
    assert [one_at_a_time.score([r], ends, batch_tokens=1)[0] for r in replies] == pytest.approx(
        packed, abs=1e-3
    )


def test_empty_passages_are_refused(generator):
    empty = (ScoredPassage(Passage("e", "   ", {}), 1.0),)
    with pytest.raises(InputError, match="passage"):
        SpanScoring().answer(generator, PROMPTS, "Who?", empty)


# -- through the pipeline and the adapters ------------------------------------------------------


def _tiny_pipe(llama, tokenizer, embedder, **kw) -> MemoRAG:
    memory = CompressedKVMemory(
        llama, tokenizer, beacon_ratio=4, window=128, reserve_tokens=64, show_progress=False
    )
    return MemoRAG(memory=memory, embedder=embedder, **kw).memorize(TEXTS)


def test_the_pipeline_answers_short_with_citations_by_default(llama, tokenizer, embedder):
    pipe = _tiny_pipe(llama, tokenizer, embedder)
    assert pipe.config.answer_style == "auto"
    answer = pipe.answer("Where does Halloran live?", k=2)
    assert answer.citations and answer.timings["generation"] > 0
    (citation,) = answer.citations
    cited = {p.passage.id: p.passage for p in answer.passages}[citation.passage_id]
    assert cited.text[citation.start : citation.end] == answer.text == citation.quote
    assert pipe.answer("Was the bell cast in 1790?", k=2).text in ("yes", "no")


def test_qa_copies_a_phrase_of_the_memorized_text_with_its_chunk(llama, tokenizer, embedder):
    pipe = _tiny_pipe(llama, tokenizer, embedder)
    answer = pipe.answer("Where does Halloran live?", task_type="qa")
    (citation,) = answer.citations
    chunk = next(c for c in pipe.index.chunks if c.chunk_id == citation.passage_id)
    assert chunk.text[citation.start : citation.end] == answer.text == citation.quote
    assert answer.text.strip() and answer.passages == ()
    assert pipe.answer("Is Halloran a baker?", task_type="qa").text in ("yes", "no")
    free = pipe.answer("Where does Halloran live?", task_type="qa", answer_style="free")
    assert free.citations == ()


def test_free_style_is_the_generators_own_reply(llama, tokenizer, embedder):
    pipe = _tiny_pipe(llama, tokenizer, embedder, answer_style="free")
    question = "Where does Halloran live?"
    answer = pipe.answer(question, k=2, max_new_tokens=6)
    prompt = PROMPTS.answer.format(context=format_passages(answer.passages), question=question)
    assert answer.text == pipe.generator.generate(prompt, max_new_tokens=6).text.strip()
    assert answer.citations == ()
    short = pipe.answer(question, k=2, answer_style="short")  # per call
    assert short.citations
    long_form = pipe.answer("Summarize what Halloran does.", k=2, max_new_tokens=4)
    assert long_form.citations == ()  # auto: a long-form request is written freely


def test_summaries_and_dialogue_stay_free(llama, tokenizer, embedder):
    pipe = _tiny_pipe(llama, tokenizer, embedder, answer_style="short")
    from shared_core.types import ChatTurn

    history = [ChatTurn("user", "Who is Halloran?"), ChatTurn("assistant", "A doctor.")]
    reply = pipe.answer("Where does he live?", task_type="dialogue", history=history, k=2)
    assert reply.citations == ()
    assert pipe.answer(task_type="summarize", k=2, max_new_tokens=4).citations == ()


def test_a_foreign_generator_answers_free_and_refuses_short(embedder):
    pipe = MemoRAG(memory=ScriptedMemory({}), embedder=embedder, generator=ScriptedGenerator("x"))
    pipe.memorize(TEXTS)
    assert pipe.answer("Where does Halloran live?", k=2).text == "x"  # auto: free
    with pytest.raises(InputError, match="answer_style='short'"):
        pipe.answer("Where does Halloran live?", k=2, answer_style="short")
    with pytest.raises(InputError, match="answer_style"):
        pipe.answer("Where does Halloran live?", k=2, answer_style="long")


def test_answer_style_is_validated_and_saved(llama, tokenizer, embedder, tmp_path):
    with pytest.raises(InputError, match="answer_style"):
        MemoRAGConfig(answer_style="brief")
    pipe = _tiny_pipe(llama, tokenizer, embedder, answer_style="free")
    pipe.save(tmp_path / "m")
    memory = CompressedKVMemory(
        llama, tokenizer, beacon_ratio=4, window=128, reserve_tokens=64, show_progress=False
    )
    loaded = MemoRAG.from_dir(tmp_path / "m", memory=memory, embedder=embedder)
    assert loaded.config.answer_style == "free"


def test_langchain_answer_tool_carries_the_citations(llama, tokenizer, embedder):
    from langchain_memorag import create_memorag_answer_tool

    pipe = _tiny_pipe(llama, tokenizer, embedder)
    tool = create_memorag_answer_tool(pipe, k=2)
    call = {"name": tool.name, "args": {"query": "Where does Halloran live?"}, "id": "1"}
    message = tool.invoke({**call, "type": "tool_call"})
    artifact = message.artifact
    (citation,) = artifact["citations"]
    assert message.content.startswith(artifact["answer"])
    assert f"[{citation['doc_id']}]" in message.content
    assert citation["quote"] == artifact["answer"]
    assert len(artifact["documents"]) == 2


def test_llamaindex_query_engine_carries_the_citations(llama, tokenizer, embedder):
    from llamaindex_memorag import MemoRAGQueryEngine

    pipe = _tiny_pipe(llama, tokenizer, embedder)
    response = MemoRAGQueryEngine(pipe, similarity_top_k=2).query("Where does Halloran live?")
    (citation,) = response.metadata["citations"]
    assert citation["quote"] == response.response
    node_ids = [n.node.node_id for n in response.source_nodes]
    assert len(node_ids) == 2 and citation["passage_id"] in node_ids
