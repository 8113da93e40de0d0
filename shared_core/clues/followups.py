"""Follow-up questions: one that leans on the chat history is rewritten as a standalone one."""

from __future__ import annotations

import re
from collections.abc import Sequence

from shared_core.clues.parsing import (
    CHATTER,
    CJK,
    CJK_CHAR,
    MAX_SCAN_CHARS,
    STOPWORDS,
    normalised,
    parse_clue_lines,
    truncate,
    word_tokens,
)
from shared_core.prompts import PromptSet, get_prompts
from shared_core.types import ChatTurn, TextGenerator

#: Dialogue shown to the rewriter: the last few turns, each cut to a few hundred chars.
_HISTORY_TURNS = 6
_HISTORY_TURN_CHARS = 400
_FALLBACK_WORDS = 8

_DEICTIC = frozenset(
    "he she it they him her them his hers its their theirs this that these those there".split()
)
_ZH_DEICTIC = ("他", "她", "它", "这", "那", "其")


def _content_words(text: str) -> list[str]:
    """Words of ``text`` that carry content (not stopwords), in order, case kept."""
    words: list[str] = []
    for match in re.finditer(f"[{CJK_CHAR}]+|[^\\W_][\\w'-]*", text[:MAX_SCAN_CHARS]):
        word = match.group().strip("'-")
        if CJK.match(word) or (len(word) > 1 and word.lower() not in STOPWORDS):
            words.append(word)
    return words


def _has_deictic(text: str) -> bool:
    return bool(_DEICTIC.intersection(word_tokens(text))) or any(ch in text for ch in _ZH_DEICTIC)


def _render_history(history: Sequence[ChatTurn], prompts: PromptSet) -> str:
    lines = []
    for turn in list(history)[-_HISTORY_TURNS:]:
        if turn.role == "system" or not turn.content.strip():
            continue
        label = prompts.user_label if turn.role == "user" else prompts.assistant_label
        lines.append(f"{label}: {truncate(' '.join(turn.content.split()), _HISTORY_TURN_CHARS)}")
    return "\n".join(lines)


def _looks_standalone(question: str) -> bool:
    """No pronoun to resolve and enough content words to stand on its own."""
    return not _has_deictic(question) and len(_content_words(question)) >= 2


def _fallback_rewrite(question: str, history: Sequence[ChatTurn]) -> str:
    """The question plus the content words of the latest user turn that it lacks."""
    turns = [t for t in history if t.role == "user" and t.content.strip()]
    turns = turns or [t for t in history if t.role != "system" and t.content.strip()]
    if not turns:
        return question
    present = {w.lower() for w in _content_words(question)}
    extra: list[str] = []
    for word in _content_words(turns[-1].content):
        if word.lower() not in present:
            present.add(word.lower())
            extra.append(word)
        if len(extra) >= _FALLBACK_WORDS:
            break
    return f"{question.strip()} {' '.join(extra)}".strip() if extra else question


def _usable_rewrite(candidate: str, question: str) -> bool:
    """Whether a model rewrite can replace ``question`` for retrieval."""
    if not candidate or CHATTER.match(candidate):
        return False
    if len(candidate) > max(3 * len(question), len(question) + 200):
        return False
    norm = normalised(candidate)
    if not norm:
        return False
    if norm == normalised(question):
        # Unchanged: fine for a question that was standalone already, not for "did he eat?".
        return not _has_deictic(question)
    # It must still be the same question: keep most of its content words ...
    wanted = {w.lower() for w in _content_words(question)}
    have = {w.lower() for w in _content_words(candidate)}
    if wanted and len(wanted & have) * 2 < len(wanted):
        return False
    # ... and a pronoun must have been resolved: some name from the dialogue must come in.
    if _has_deictic(question):
        return bool(have - wanted)
    return True


def resolve_followup(
    question: str,
    history: Sequence[ChatTurn],
    generator: TextGenerator,
    prompts: PromptSet | None = None,
    *,
    max_new_tokens: int = 48,
) -> str:
    """Rewrite a follow-up ``question`` as a standalone question for retrieval.

    ``history`` holds the earlier turns (a last user turn equal to ``question`` is ignored).
    Without history the question is returned unchanged. The generator's rewrite is used when it
    looks usable (non-empty, not an echo of the prompt, not far longer than the question, still
    about the question); otherwise the question gets the content words of the latest user turn
    appended, so "did he eat?" after "Tell me about Victor" still carries "Victor" (a question
    with no pronoun and two or more content words is kept as it is).
    """
    prompts = prompts if prompts is not None else get_prompts()
    history = list(history)
    last = history[-1] if history else None
    if (
        last is not None
        and last.role == "user"
        and normalised(last.content) == normalised(question)
    ):
        history.pop()  # the caller passed the question itself as the last turn
    rendered = _render_history(history, prompts)
    if not rendered or not question.strip():
        return question
    prompt = prompts.resolve_followup.format(history=rendered, question=question.strip())
    stop = (f"\n{prompts.user_label}:", f"\n{prompts.assistant_label}:", "\n\n")
    generation = generator.generate(
        prompt, max_new_tokens=max_new_tokens, stop=stop, temperature=0.0
    )
    instructions = prompts.resolve_followup.format(history="", question="")
    lines = parse_clue_lines(
        generation.text, max_clues=1, min_words=1, max_chars=1000, echo_of=(instructions,)
    )
    candidate = lines[0] if lines else ""
    if _usable_rewrite(candidate, question):
        return candidate
    return question if _looks_standalone(question) else _fallback_rewrite(question, history)
