"""Clue parsing, clue writers, follow-up resolution and prompt sets (no model needed)."""

from __future__ import annotations

import dataclasses
import string
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared_core.clues import (
    ClueWriter,
    CompositeClueWriter,
    DraftAnswerClues,
    NoClues,
    SpanClues,
    SurrogateClues,
    make_clue_writer,
    parse_clue_lines,
    resolve_followup,
)
from shared_core.errors import InputError
from shared_core.prompts import PLACEHOLDERS, PromptSet, detect_language, get_prompts
from shared_core.types import ChatTurn, Clue, Generation, TextGenerator

EN = get_prompts("en")
ZH = get_prompts("zh")


@dataclass
class ScriptedGenerator:
    """A fake ``TextGenerator``: returns canned outputs in order and records every call."""

    outputs: Sequence[str] = ("",)
    finish_reason: str = "stop"
    calls: list[dict[str, Any]] = field(default_factory=list)

    def generate(
        self,
        prompt: str,
        *,
        history: Sequence[ChatTurn] = (),
        max_new_tokens: int = 256,
        stop: Sequence[str] = (),
        temperature: float = 0.0,
    ) -> Generation:
        self.calls.append(
            {
                "prompt": prompt,
                "history": tuple(history),
                "max_new_tokens": max_new_tokens,
                "stop": tuple(stop),
                "temperature": temperature,
            }
        )
        text = self.outputs[min(len(self.calls), len(self.outputs)) - 1]
        return Generation(text, len(prompt.split()), len(text.split()), self.finish_reason)  # type: ignore[arg-type]

    def stream(self, prompt: str, **kwargs: Any) -> Iterator[str]:
        yield self.generate(prompt, **kwargs).text

    @property
    def prompts(self) -> list[str]:
        return [call["prompt"] for call in self.calls]


def test_fake_is_a_text_generator() -> None:
    assert isinstance(ScriptedGenerator(), TextGenerator)


# ------------------------------------------------------------------------------ parsing


def test_strips_numbering_bullets_labels_and_quotes() -> None:
    text = (
        "1. Ed Wood was an American filmmaker.\n"
        "- Scott Derrickson is an American director\n"
        "* **Clue:** Tim Burton directed the 1994 film\n"
        '  Question 2: "Where was Scott Derrickson born?"\n'
        "(3) Bela Lugosi was played by Martin Landau\n"
        "• 线索：张三于一九九零年出生在北京\n"
    )
    assert parse_clue_lines(text) == [
        "Ed Wood was an American filmmaker.",
        "Scott Derrickson is an American director",
        "Tim Burton directed the 1994 film",
        "Where was Scott Derrickson born?",
        "Bela Lugosi was played by Martin Landau",
        "张三于一九九零年出生在北京",
    ]


def test_splits_inline_numbering_only_when_sequential() -> None:
    text = "1. Who directed Ed Wood? 2. Where was Tim Burton born? 3. When was Ed Wood released?"
    assert parse_clue_lines(text) == [
        "Who directed Ed Wood?",
        "Where was Tim Burton born?",
        "When was Ed Wood released?",
    ]
    # A number inside a sentence is not a list marker.
    assert parse_clue_lines("The band sold 2. 5 million records in total") == [
        "The band sold 2. 5 million records in total"
    ]
    assert parse_clue_lines("The budget was 3.5 million dollars that year") == [
        "The budget was 3.5 million dollars that year"
    ]


def test_drops_chatter_lead_ins_and_intro_lines() -> None:
    text = (
        "Sure, here are the clues:\n"
        "I have read the article.\n"
        "Here are some facts that may help:\n"
        "According to the text, the Colisée seats 3,677 people.\n"
        "The article mentions that Terry Richardson was born in 1965.\n"
        "The article ends here.\n"
        "I hope this helps!\n"
        "好的，以下是线索\n"
    )
    assert parse_clue_lines(text) == [
        "the Colisée seats 3,677 people.",
        "Terry Richardson was born in 1965.",
    ]


def test_keeps_content_that_starts_like_chatter() -> None:
    text = "Great Britain joined the union in 1973\nOK Computer is an album by Radiohead"
    assert parse_clue_lines(text) == [
        "Great Britain joined the union in 1973",
        "OK Computer is an album by Radiohead",
    ]


def test_drops_short_lines_and_lines_without_content() -> None:
    text = "Ed Wood\nyes\nThey are both of the same.\nEd Wood directed Plan 9 from Outer Space"
    assert parse_clue_lines(text) == ["Ed Wood directed Plan 9 from Outer Space"]
    assert parse_clue_lines("Ed Wood", min_words=1) == ["Ed Wood"]


def test_drops_echoes_of_question_and_prompt() -> None:
    question = "Were Scott Derrickson and Ed Wood of the same nationality?"
    prompt = EN.span.format(question=question)
    text = (
        f"Question: {question}\n"
        "Scott Derrickson and Ed Wood of the same nationality: yes, they are the same.\n"
        "List them, one per line.\n"
        "Scott Derrickson and Ed Wood\n"
        "Who is Scott Derrickson?\n"
        "Scott Derrickson is an American director.\n"
    )
    assert parse_clue_lines(text, echo_of=(question, prompt)) == [
        "Who is Scott Derrickson?",
        "Scott Derrickson is an American director.",
    ]


def test_drops_duplicates_and_near_duplicates() -> None:
    text = (
        "Ed Wood was an American filmmaker and actor.\n"
        "ed wood was an american filmmaker and actor\n"
        "Ed Wood was an American filmmaker, and an actor.\n"
        "Tim Burton directed the film Ed Wood.\n"
    )
    assert parse_clue_lines(text) == [
        "Ed Wood was an American filmmaker and actor.",
        "Tim Burton directed the film Ed Wood.",
    ]


def test_cuts_decoding_loops_within_a_line() -> None:
    text = "The arena seats many people and the arena seats many people and the arena seats many"
    assert parse_clue_lines(text) == ["The arena seats many people and"]


def test_cjk_characters_count_as_words() -> None:
    assert parse_clue_lines("北京大学", min_words=3) == ["北京大学"]
    assert parse_clue_lines("北京", min_words=3) == []
    assert parse_clue_lines("1、张三是谁？2、李四住在哪里？") == ["张三是谁？", "李四住在哪里？"]


def test_truncates_at_a_word_boundary_and_caps_count() -> None:
    words = [f"word{i}" for i in range(200)]
    (clue,) = parse_clue_lines(" ".join(words), max_chars=50)
    assert len(clue) <= 50
    assert clue.split() == words[: len(clue.split())]
    assert len(clue) > 40
    lines = "\n".join(f"Fact number {w} is about topic {w}" for w in string.ascii_lowercase)
    assert len(parse_clue_lines(lines, max_clues=5)) == 5
    assert parse_clue_lines(lines, max_clues=0) == []
    with pytest.raises(InputError):
        parse_clue_lines(lines, max_chars=0)


def test_empty_and_whitespace() -> None:
    assert parse_clue_lines("") == []
    assert parse_clue_lines("\n\n   \n\t") == []


clue_text = st.lists(
    st.sampled_from([*"ab cXYZ12.-*:\n\"'北京。？", "Question: ", "1. ", "2) ", "Sure, ", "the "]),
    max_size=200,
).map("".join)


@settings(max_examples=200, deadline=None)
@given(text=st.one_of(st.text(max_size=600), clue_text), max_clues=st.integers(0, 10))
def test_parse_property_any_text(text: str, max_clues: int) -> None:
    for max_chars in (1, 20, 300):
        clues = parse_clue_lines(text, max_clues=max_clues, max_chars=max_chars, echo_of=(text,))
        assert isinstance(clues, list)
        assert len(clues) <= max_clues
        for clue in clues:
            assert isinstance(clue, str)
            assert clue == clue.strip()
            assert clue
            assert "\n" not in clue and "\r" not in clue
            assert len(clue) <= max_chars


@settings(max_examples=25, deadline=None)
@given(unit=st.text(min_size=1, max_size=40), sep=st.sampled_from(["", " ", "\n", ". "]))
def test_parse_is_bounded_on_endless_repetition(unit: str, sep: str) -> None:
    text = (unit + sep) * (1_000_000 // (len(unit) + len(sep)) + 1)
    start = time.perf_counter()
    clues = parse_clue_lines(text, echo_of=(text,))
    assert time.perf_counter() - start < 2.0
    assert len(clues) <= 8
    assert all(clue and len(clue) <= 300 for clue in clues)


def test_parse_is_bounded_on_one_megabyte_of_a_phrase() -> None:
    text = "Ed Wood was an American filmmaker. " * 30_000
    start = time.perf_counter()
    assert parse_clue_lines(text) == ["Ed Wood was an American filmmaker."]
    assert time.perf_counter() - start < 2.0


# ------------------------------------------------------------------------------ writers

QUESTION = "Were Scott Derrickson and Ed Wood of the same nationality?"


@pytest.mark.parametrize(
    ("writer", "kind", "weight", "tokens", "template"),
    [
        (SpanClues(EN), "span", 1.0, 64, EN.span),
        (SurrogateClues(EN), "surrogate", 1.0, 64, EN.surrogate),
        (DraftAnswerClues(EN), "answer", 0.5, 32, EN.draft_answer),
    ],
)
def test_writer_prompts_and_kinds(
    writer: ClueWriter, kind: str, weight: float, tokens: int, template: str
) -> None:
    memory = ScriptedGenerator(["Scott Derrickson is an American film director."])
    history = (ChatTurn("user", "hello there"),)
    clues = writer.write(QUESTION, memory, history=history)
    assert clues == [Clue("Scott Derrickson is an American film director.", kind, weight)]  # type: ignore[arg-type]
    (call,) = memory.calls
    assert call["prompt"] == template.format(question=QUESTION)
    assert call["history"] == history
    assert call["max_new_tokens"] == tokens
    assert call["temperature"] == 0.0
    assert call["stop"]


def test_writer_dedups_and_drops_echoes() -> None:
    output = (
        "Here are the clues:\n"
        f"1. {QUESTION}\n"
        "2. Scott Derrickson is an American director.\n"
        "3. Scott Derrickson is an American director\n"
        "4. Ed Wood was an American filmmaker.\n"
    )
    clues = SpanClues(EN).write(QUESTION, ScriptedGenerator([output]))
    assert [c.text for c in clues] == [
        "Scott Derrickson is an American director.",
        "Ed Wood was an American filmmaker.",
    ]


def test_writer_drops_a_line_cut_by_the_token_limit() -> None:
    memory = ScriptedGenerator(
        ["Ed Wood was an American filmmaker.\nScott Derrickson was born in Den"],
        finish_reason="length",
    )
    assert [c.text for c in SpanClues(EN).write(QUESTION, memory)] == [
        "Ed Wood was an American filmmaker."
    ]
    # A single cut line is still better than nothing.
    memory = ScriptedGenerator(["Scott Derrickson was born in Denver and"], finish_reason="length")
    assert [c.text for c in SpanClues(EN).write(QUESTION, memory)] == [
        "Scott Derrickson was born in Denver and"
    ]


def test_writer_options_and_validation() -> None:
    memory = ScriptedGenerator(["alpha beta gamma delta\nepsilon zeta eta theta\niota kappa mu"])
    clues = SurrogateClues(EN, weight=2.0, max_clues=2, max_new_tokens=10).write("q", memory)
    assert [c.weight for c in clues] == [2.0, 2.0]
    assert memory.calls[0]["max_new_tokens"] == 10
    assert SpanClues(EN, max_clues=0).write("q", memory) == []
    with pytest.raises(InputError):
        SpanClues(EN, weight=0.0)
    with pytest.raises(InputError):
        SpanClues(EN, max_new_tokens=0)


def test_draft_answer_short_answer_is_paired_with_query() -> None:
    memory = ScriptedGenerator(["Yes."])
    assert DraftAnswerClues(EN).write(QUESTION, memory) == []
    memory = ScriptedGenerator(["The answer is: Animorphs"])
    (clue,) = DraftAnswerClues(EN).write("Which series has companion books?", memory)
    assert clue == Clue("Which series has companion books? Animorphs", "answer", 0.5)
    memory = ScriptedGenerator(["Animorphs"])
    assert DraftAnswerClues(EN, pair_short_with_query=False).write("q", memory) == []
    memory = ScriptedGenerator(["Both were American film directors.\nMore text here please."])
    assert [c.text for c in DraftAnswerClues(EN).write(QUESTION, memory)] == [
        "Both were American film directors."
    ]


def test_composite_dedups_across_writers_and_against_query() -> None:
    memory = ScriptedGenerator(
        [
            "Scott Derrickson is an American director.\nEd Wood was an American filmmaker.",
            "Scott Derrickson is an American director\nWho was Ed Wood?",
            "scott derrickson and ed wood were of the same nationality",
        ]
    )
    writer = CompositeClueWriter([SpanClues(EN), SurrogateClues(EN), DraftAnswerClues(EN)])
    clues = writer.write(QUESTION, memory)
    assert [(c.kind, c.text) for c in clues] == [
        ("span", "Scott Derrickson is an American director."),
        ("span", "Ed Wood was an American filmmaker."),
        ("surrogate", "Who was Ed Wood?"),
    ]
    assert len(memory.calls) == 3
    capped = CompositeClueWriter([SpanClues(EN)], max_clues=1)
    assert len(capped.write(QUESTION, ScriptedGenerator([memory.outputs[0]]))) == 1


def test_composite_drops_a_clue_equal_to_the_query() -> None:
    class Echoing:
        def write(
            self, query: str, memory: TextGenerator, *, history: Sequence[ChatTurn] = ()
        ) -> list[Clue]:
            return [Clue(query.upper(), "custom"), Clue("something else entirely", "custom")]

    clues = CompositeClueWriter([Echoing()]).write(QUESTION, ScriptedGenerator())
    assert [c.text for c in clues] == ["something else entirely"]


def test_writers_are_deterministic() -> None:
    output = "- Ed Wood was an American filmmaker.\n- Tim Burton directed the film."
    first = SpanClues(EN).write(QUESTION, ScriptedGenerator([output]))
    second = SpanClues(EN).write(QUESTION, ScriptedGenerator([output]))
    assert first == second


@pytest.mark.parametrize(
    ("spec", "kinds"),
    [
        ("span", ["span"]),
        ("surrogate", ["surrogate"]),
        ("answer", ["answer"]),
        ("span+surrogate", ["span", "surrogate"]),
        ("span+surrogate+answer", ["span", "surrogate", "answer"]),
        (" Span + SURROGATE ", ["span", "surrogate"]),
        ("span+span", ["span"]),
        ("none", []),
        ("", []),
    ],
)
def test_make_clue_writer_names(spec: str, kinds: list[str]) -> None:
    writer = make_clue_writer(spec, EN)
    assert isinstance(writer, ClueWriter)
    outputs = ["Alpha beta gamma delta", "Epsilon zeta eta theta?", "Iota kappa lambda mu"]
    memory = ScriptedGenerator(outputs)
    assert [c.kind for c in writer.write("question", memory)] == kinds
    assert len(memory.calls) == len(kinds)


def test_make_clue_writer_passes_prompts_and_instances_through() -> None:
    writer = make_clue_writer("span", ZH)
    memory = ScriptedGenerator(["张三于一九九零年出生在北京"])
    writer.write("张三是哪一年出生的？", memory)
    assert memory.prompts == [ZH.span.format(question="张三是哪一年出生的？")]
    custom = NoClues()
    assert make_clue_writer(custom, EN) is custom


@pytest.mark.parametrize("spec", ["spam", "span+bogus", "span surrogate"])
def test_make_clue_writer_unknown_name(spec: str) -> None:
    with pytest.raises(InputError, match="unknown clue strategy"):
        make_clue_writer(spec, EN)


def test_make_clue_writer_rejects_non_writers() -> None:
    with pytest.raises(InputError):
        make_clue_writer(42, EN)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ follow-ups

HISTORY = (
    ChatTurn("user", "Tell me about Victor"),
    ChatTurn("assistant", "Victor is a chef who lives in Lyon."),
)


def test_resolve_without_history_returns_question_unchanged() -> None:
    generator = ScriptedGenerator(["Something else"])
    assert resolve_followup("did he eat?", (), generator, EN) == "did he eat?"
    assert generator.calls == []


@pytest.mark.parametrize(
    "output",
    [
        "Did Victor eat?",
        "Rewritten question: Did Victor eat?",
        'The next question is: "Did Victor eat?"',
    ],
)
def test_resolve_uses_the_model_rewrite(output: str) -> None:
    generator = ScriptedGenerator([output])
    assert resolve_followup("did he eat?", HISTORY, generator, EN) == "Did Victor eat?"
    (call,) = generator.calls
    assert "Tell me about Victor" in call["prompt"]
    assert "did he eat?" in call["prompt"]
    assert call["temperature"] == 0.0


@pytest.mark.parametrize(
    "output",
    [
        "",
        "   \n",
        "Rewrite the last question so it makes sense without the conversation",
        "did he eat?",
        "did she eat?",
        "User: Tell me about Victor",
        "Did Victor eat " + " ".join(f"word{i}" for i in range(300)),
        "Victor lives in Lyon and is a chef.",
        "Sure, here is the question:",
    ],
)
def test_resolve_falls_back_on_unusable_output(output: str) -> None:
    generator = ScriptedGenerator([output])
    assert resolve_followup("did he eat?", HISTORY, generator, EN) == "did he eat? Victor"


@pytest.mark.parametrize("output", ["What is the capital of France?", "", "Hello! How can I help?"])
def test_resolve_keeps_a_standalone_question(output: str) -> None:
    generator = ScriptedGenerator([output])
    question = "What is the capital of France?"
    assert resolve_followup(question, HISTORY, generator, EN) == question


def test_resolve_fallback_for_an_elliptical_question() -> None:
    generator = ScriptedGenerator([""])
    assert resolve_followup("And his age?", HISTORY, generator, EN) == "And his age? Victor"
    assert resolve_followup("Why?", HISTORY, generator, EN) == "Why? Victor"


def test_resolve_fallback_uses_the_latest_user_turn() -> None:
    history = (
        ChatTurn("system", "be nice"),
        ChatTurn("user", "Who wrote Animorphs?"),
        ChatTurn("assistant", "K. A. Applegate."),
        ChatTurn("user", "Tell me about Katherine Applegate please"),
        ChatTurn("assistant", "She is an American author."),
    )
    generator = ScriptedGenerator([""])
    assert (
        resolve_followup("where was she born?", history, generator, EN)
        == "where was she born? Katherine Applegate"
    )


def test_resolve_ignores_the_question_repeated_as_last_turn() -> None:
    generator = ScriptedGenerator([""])
    history = (*HISTORY, ChatTurn("user", "did he eat?"))
    assert resolve_followup("did he eat?", history, generator, EN) == "did he eat? Victor"
    assert generator.prompts[0].count("did he eat?") == 1
    only = (ChatTurn("user", "did he eat?"),)
    assert resolve_followup("did he eat?", only, ScriptedGenerator([""]), EN) == "did he eat?"


def test_resolve_chinese() -> None:
    history = (ChatTurn("user", "介绍一下张三"), ChatTurn("assistant", "张三是一名厨师。"))
    generator = ScriptedGenerator([""])
    result = resolve_followup("他住在哪里？", history, generator, ZH)
    assert result.startswith("他住在哪里？") and "张三" in result
    assert "用户" in generator.calls[0]["prompt"]


# ------------------------------------------------------------------------------ prompts


@pytest.mark.parametrize("language", ["en", "zh"])
def test_prompt_sets_have_all_fields_and_placeholders(language: str) -> None:
    prompts = get_prompts(language)
    assert prompts.language == language
    values = {"question": "Q?", "context": "[1] passage", "history": "User: hi"}
    for name, expected in PLACEHOLDERS.items():
        template = getattr(prompts, name)
        assert template.strip(), name
        found = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
        assert found == set(expected), name
        rendered = template.format(**values)
        for placeholder in expected:
            assert values[placeholder] in rendered
        assert len(template) < 400, f"{name} should stay short for small models"


def test_get_prompts_aliases_and_unknown() -> None:
    assert get_prompts() is get_prompts("en")
    assert get_prompts("EN-us") is get_prompts("en")
    assert get_prompts("zh_CN") is get_prompts("zh")
    assert get_prompts("chinese") is get_prompts("zh")
    with pytest.raises(InputError, match="no prompts for language"):
        get_prompts("fr")
    with pytest.raises(InputError):
        get_prompts(None)  # type: ignore[arg-type]


def test_prompt_set_is_frozen_and_validated() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        EN.span = "x"  # type: ignore[misc]
    custom = dataclasses.replace(EN, span="Evidence for: {question}")
    assert isinstance(custom, PromptSet)
    with pytest.raises(InputError, match="missing"):
        dataclasses.replace(EN, span="no placeholder here")
    with pytest.raises(InputError, match="unexpected"):
        dataclasses.replace(EN, summarize="{context} {question}")
    with pytest.raises(InputError, match="format string"):
        dataclasses.replace(EN, gist="{context")


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("The quick brown fox jumps over the lazy dog.", "en"),
        ("", "en"),
        ("12345 !!!", "en"),
        ("张三是一名厨师，住在北京。他每天早上去市场买菜。", "zh"),
        ("MemoRAG 是一个基于记忆的检索增强生成框架，可以处理长文本。", "zh"),
        ("An English article that mentions 北京 once in a long sentence of words.", "en"),
        ("北京" * 10 + " some english words" * 100, "en"),
    ],
)
def test_detect_language(text: str, language: str) -> None:
    assert detect_language(text) == language


def test_detect_language_reads_only_the_head() -> None:
    assert detect_language("english words " * 1000 + "中文" * 100_000) == "en"


def test_lead_ins_cut_off_before_any_new_word_are_dropped():
    prompts = get_prompts("en")
    span_prompt = prompts.span.format(question="Were Scott Derrickson and Ed Wood both American?")
    out = parse_clue_lines(
        "The facts that matter for this question are\nThe text is\n"
        "Who was Scott Derrickson?\nScott Derrickson was born in Denver and",
        echo_of=(span_prompt,),
    )
    assert out == ["Who was Scott Derrickson?", "Scott Derrickson was born in Denver and"]
    assert (
        parse_clue_lines("The user likes or is interested in", echo_of=(prompts.preferences,)) == []
    )


# -- anchoring ------------------------------------------------------------------------------


def test_anchoring_adds_only_the_clues_new_words_to_the_query() -> None:
    from shared_core.clues import anchor_clues, novel_words

    query = "Which series has companion books?"
    clue = "The Hork-Bajir Chronicles is the second companion book to the Animorphs series"
    assert novel_words(clue, query) == ["Hork-Bajir", "Chronicles", "second", "book", "Animorphs"]
    keys = anchor_clues(
        [
            Clue(clue, "span", 1.0),
            Clue("Which series has companion books about Animorphs?", "surrogate", 0.5),
            Clue("my own key", "custom"),
            Clue(query, "query", 2.0),
        ],
        query,
    )
    assert keys[0] == Clue(f"{query} Hork-Bajir Chronicles second book Animorphs", "span", 1.0)
    # one new word only ("Animorphs"): dropped; other kinds pass unchanged
    assert [k.kind for k in keys] == ["span", "custom", "query"]
    assert keys[1:] == [Clue("my own key", "custom"), Clue(query, "query", 2.0)]
    # a possessive or hyphenated form of a query word is not new
    assert novel_words("Frankenstein's ship sailed north", "Where is Frankenstein's ship?") == [
        "sailed",
        "north",
    ]
    assert anchor_clues([Clue("雷雨 出版 年份", "span")], "哪年") == [
        Clue("哪年 雷 雨 出 版 份", "span")
    ]


@pytest.mark.parametrize("alias", ["sur", "spans", "draft", "off", "copied", "span,surrogate"])
def test_only_the_five_documented_strategy_names_are_accepted(alias: str) -> None:
    with pytest.raises(InputError, match="unknown clue strategy"):
        make_clue_writer(alias)
