"""The task types of ``MemoRAG.__call__``: each is one short recipe over the pipeline's steps.

memorag      clues from memory -> retrieval -> answer over the passages
qa           answer from the memory alone (no retrieval)
summarize    key points from memory -> retrieval per point -> summary over the passages
personalize  the memory (a user's history) infers preferences -> retrieval -> recommendation
dialogue     the follow-up is resolved through memory + history -> retrieval -> answer
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Protocol

from shared_core.clues import CopySource, parse_clue_lines
from shared_core.clues.writers import can_copy
from shared_core.errors import InputError
from shared_core.inputs import check_query
from shared_core.memory.base import Memory
from shared_core.models.generation import LocalGenerator, format_passages
from shared_core.prompts import PromptSet
from shared_core.retrieval.vector_index import VectorIndex
from shared_core.short_answers import MemoryCopying, ShortAnswerer, SpanScoring, wants_long_answer
from shared_core.types import (
    Answer,
    ChatTurn,
    Citation,
    Clue,
    Passage,
    RetrievalResult,
    TextGenerator,
)

#: How the short-answer mode chooses its phrase (docs/answers.md: measured against decoding).
SHORT_ANSWERER: ShortAnswerer = SpanScoring()


class Pipeline(Protocol):
    """What a task needs from ``MemoRAG``."""

    memory: Memory
    generator: TextGenerator
    prompts: PromptSet
    corpus_size: int

    def retrieve(
        self, query: str, k: int, *, history: Sequence[ChatTurn] = ()
    ) -> RetrievalResult: ...

    def retrieve_with(
        self, query: str, k: int, clues: Sequence[Clue], *, query_weight: float | None = None
    ) -> RetrievalResult: ...

    def copy_source(self) -> CopySource | None: ...

    @property
    def index(self) -> VectorIndex: ...


TaskFn = Callable[..., Answer]


def _answer(
    pipe: Pipeline,
    task: str,
    text: str,
    result: RetrievalResult | None,
    timings: dict[str, float],
    citations: tuple[Citation, ...] = (),
) -> Answer:
    return Answer(
        text=text.strip(),
        task_type=task,
        passages=result.passages if result else (),
        clues=result.clues if result else (),
        timings=timings,
        notes=result.notes if result else (),
        citations=citations,
    )


def short_style(style: str, generator: TextGenerator, query: str, *, custom_prompt: bool) -> bool:
    """Whether ``answer_style`` (config or call) means a short, cited answer here: ``short``
    always (refused where the generator cannot score phrases or a ``prompt_template`` is
    given); ``auto`` for a local generator, no custom prompt and no long-form request."""
    if style == "free":
        return False
    local = isinstance(generator, LocalGenerator)
    if style == "short":
        if not local:
            raise InputError(
                "answer_style='short' needs a local generator model to score phrases; the "
                "generator given only writes text: use answer_style='free'"
            )
        if custom_prompt:
            raise InputError("prompt_template applies to free answers: use answer_style='free'")
        return True
    if style != "auto":
        raise InputError(f"answer_style must be one of ('auto', 'short', 'free'), got {style!r}")
    return local and not custom_prompt and not wants_long_answer(query)


def _generate(
    speaker: TextGenerator,
    prompt: str,
    history: Sequence[ChatTurn],
    max_new_tokens: int,
    timings: dict[str, float],
    on_text: Callable[[str], None] | None = None,
) -> str:
    """Generate with ``speaker``; with ``on_text``, stream each piece to it as it comes."""
    started = time.perf_counter()
    if on_text is None:
        text = speaker.generate(prompt, history=history, max_new_tokens=max_new_tokens).text
    else:
        pieces = []
        for piece in speaker.stream(prompt, history=history, max_new_tokens=max_new_tokens):
            pieces.append(piece)
            on_text(piece)
        text = "".join(pieces)
    timings["generation"] = time.perf_counter() - started
    return text


def _fill(
    template: str | None, default: str, query: str, context: str, *, needs_input: bool = True
) -> str:
    if template is None:
        return default.format(question=query, context=context)
    if "{context}" not in template or (needs_input and "{input}" not in template):
        wanted = "{input} and {context}" if needs_input else "{context}"
        raise InputError(f"prompt_template must contain {wanted}")
    return template.replace("{input}", query).replace("{context}", context)


def memorag(
    pipe: Pipeline,
    query: str | None,
    *,
    k: int,
    history: Sequence[ChatTurn],
    prompt_template: str | None,
    max_new_tokens: int,
    use_memory_answer: bool,
    task: str = "memorag",
    on_text: Callable[[str], None] | None = None,
    answer_style: str = "free",
) -> Answer:
    query = check_query(query)
    result = pipe.retrieve(query, k, history=history)
    timings = dict(result.timings)
    custom = prompt_template is not None or use_memory_answer
    if result.passages and short_style(answer_style, pipe.generator, query, custom_prompt=custom):
        started = time.perf_counter()
        short = SHORT_ANSWERER.answer(pipe.generator, pipe.prompts, query, result.passages)  # type: ignore[arg-type]
        timings["generation"] = time.perf_counter() - started
        if on_text is not None:
            on_text(short.text)
        return _answer(pipe, task, short.text, result, timings, short.citations)
    context = format_passages(result.passages)
    if use_memory_answer:
        draft = pipe.memory.generate(
            pipe.prompts.draft_answer.format(question=query), max_new_tokens=32
        ).text.strip()
        if draft:
            context += f"\n\n[memory] The answer might be: {draft}"
    prompt = _fill(prompt_template, pipe.prompts.answer, query, context)
    text = _generate(pipe.generator, prompt, history, max_new_tokens, timings, on_text)
    return _answer(pipe, task, text, result, timings)


def qa(
    pipe: Pipeline,
    query: str | None,
    *,
    max_new_tokens: int,
    history: Sequence[ChatTurn],
    on_text: Callable[[str], None] | None = None,
    answer_style: str = "free",
    **_: object,
) -> Answer:
    query = check_query(query)
    timings: dict[str, float] = {}
    copies = answer_style != "free" and not history
    source = (
        pipe.copy_source() if copies and _memory_copies(answer_style, pipe.memory, query) else None
    )
    if source is not None:
        started = time.perf_counter()
        chunks = [Passage(c.chunk_id, c.text, {"doc_id": c.doc_id}) for c in pipe.index.chunks]
        short = MemoryCopying().answer(pipe.memory, pipe.prompts, query, source, chunks)  # type: ignore[arg-type]
        timings["generation"] = time.perf_counter() - started
        if on_text is not None:
            on_text(short.text)
        return _answer(pipe, "qa", short.text, None, timings, short.citations)
    prompt = pipe.prompts.draft_answer.format(question=query)
    text = _generate(pipe.memory, prompt, history, max_new_tokens, timings, on_text)
    return _answer(pipe, "qa", text, None, timings)


def _memory_copies(style: str, memory: Memory, query: str) -> bool:
    """``short_style`` for ``qa``: the memory itself must decode under a constraint."""
    if not can_copy(memory):
        if style == "short":
            raise InputError("answer_style='short' needs a memory that can copy from its text")
        return False
    return style == "short" or not wants_long_answer(query)


def _points_then_passages(
    pipe: Pipeline,
    query: str,
    prompt: str,
    k: int,
    timings: dict[str, float],
    *,
    generic: bool = False,
) -> tuple[list[str], RetrievalResult]:
    """Lines the memory writes for ``prompt`` become clues for one fused retrieval."""
    started = time.perf_counter()
    raw = pipe.memory.generate(prompt, max_new_tokens=192).text
    points = parse_clue_lines(raw, max_clues=8, echo_of=(prompt,))
    timings["clues"] = time.perf_counter() - started
    # a generic request ("Summarize the text.") must not outvote the memory's own points
    clues = [Clue(text=p, kind="span") for p in points]
    result = pipe.retrieve_with(query, k, clues, query_weight=0.0 if generic else None)
    timings.update(result.timings)
    return points, result


def summarize(
    pipe: Pipeline,
    query: str | None,
    *,
    k: int,
    max_new_tokens: int,
    prompt_template: str | None,
    on_text: Callable[[str], None] | None = None,
    **_: object,
) -> Answer:
    generic = not (query and query.strip())
    query = "Summarize the text." if generic else query
    timings: dict[str, float] = {}
    _, result = _points_then_passages(
        pipe,
        query,
        pipe.prompts.key_points,
        max(k, min(5, pipe.corpus_size)),
        timings,
        generic=generic,
    )
    context = format_passages(result.passages)
    if prompt_template is not None:
        prompt = _fill(prompt_template, "", query, context, needs_input=False)
    else:
        prompt = pipe.prompts.summarize.format(context=context)
    text = _generate(pipe.generator, prompt, (), max_new_tokens, timings, on_text)
    return _answer(pipe, "summarize", text, result, timings)


def personalize(
    pipe: Pipeline,
    query: str | None,
    *,
    k: int,
    max_new_tokens: int,
    on_text: Callable[[str], None] | None = None,
    **_: object,
) -> Answer:
    query = check_query(query)
    timings: dict[str, float] = {}
    preferences, result = _points_then_passages(pipe, query, pipe.prompts.preferences, k, timings)
    prompt = pipe.prompts.recommend.format(
        question=query,
        context=format_passages(result.passages),
        history="\n".join(f"- {p}" for p in preferences) or "(none inferred)",
    )
    text = _generate(pipe.generator, prompt, (), max_new_tokens, timings, on_text)
    return _answer(pipe, "personalize", text, result, timings)


def dialogue(
    pipe: Pipeline, query: str | None, *, history: Sequence[ChatTurn], **kw: object
) -> Answer:
    if not history:
        raise InputError("task_type='dialogue' needs the earlier turns: pass history=[...]")
    kw["answer_style"] = "free"  # a dialogue reply is written, never a copied phrase
    return memorag(pipe, query, history=history, task="dialogue", **kw)  # type: ignore[arg-type]


TASKS: dict[str, TaskFn] = {
    "memorag": memorag,
    "qa": qa,
    "summarize": summarize,
    "personalize": personalize,
    "dialogue": dialogue,
}


def run_task(pipe: Pipeline, task_type: str, query: str | None, **kw: object) -> Answer:
    """Dispatch ``task_type`` with a clear error for unknown names."""
    try:
        fn = TASKS[task_type]
    except KeyError:
        raise InputError(
            f"unknown task_type {task_type!r}; choose one of {', '.join(TASKS)}"
        ) from None
    return fn(pipe, query, **kw)
