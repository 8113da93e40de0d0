"""Prompt templates for the memory, the clue writers and the generator, in English and Chinese.

Templates are plain ``str.format`` strings. The placeholders each field takes are listed in
``PLACEHOLDERS``; ``PromptSet`` checks them when it is built, so a custom set (made with
``dataclasses.replace``) cannot silently drop the question or the passages.

The wording is kept short and plain on purpose: the embedded default memory is a 135M model
that copies any elaborate layout it is shown back into its output.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, fields
from types import MappingProxyType

from shared_core.errors import InputError

#: Placeholders every template field must contain (and may not exceed).
PLACEHOLDERS: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "memory_intro": frozenset(),
        "memory_ack": frozenset(),
        "span": frozenset({"question"}),
        "surrogate": frozenset({"question"}),
        "draft_answer": frozenset({"question"}),
        "key_points": frozenset(),
        "preferences": frozenset(),
        "resolve_followup": frozenset({"history", "question"}),
        "answer": frozenset({"context", "question"}),
        "short_answer": frozenset({"context", "question"}),
        "yes_no": frozenset({"context", "question"}),
        "summarize": frozenset({"context"}),
        "recommend": frozenset({"context", "history", "question"}),
        "gist": frozenset({"context"}),
    }
)


@dataclass(frozen=True)
class PromptSet:
    """Every prompt the engine sends, for one language.

    Memory side (sent as user turns *after* the memorized text, so they take no ``{context}``):
      ``memory_intro`` precedes the memorized text inside the first user turn and
      ``memory_ack`` is the canned assistant reply after it; ``span``, ``surrogate`` and
      ``draft_answer`` write clues for ``{question}``; ``key_points`` lists the main points of
      the whole text; ``preferences`` infers a user's interests from a memorized history.

    Generator side: ``resolve_followup`` rewrites ``{question}`` as a standalone question given
    the dialogue ``{history}``; ``answer`` answers ``{question}`` over numbered passages
    ``{context}``; ``short_answer`` / ``yes_no`` frame the same for a reply the model only
    chooses (a phrase of the passages, or yes/no: ``short_answers.py``); ``summarize``
    summarises ``{context}``; ``recommend`` recommends for the
    request ``{question}`` from ``{context}`` given the user's inferred preferences in
    ``{history}``; ``gist`` compresses one chunk ``{context}`` for a text-only memory.

    ``user_label`` / ``assistant_label`` name the speakers when a dialogue is rendered as text.
    """

    language: str
    memory_intro: str
    memory_ack: str
    span: str
    surrogate: str
    draft_answer: str
    key_points: str
    preferences: str
    resolve_followup: str
    answer: str
    short_answer: str
    yes_no: str
    summarize: str
    recommend: str
    gist: str
    user_label: str = "User"
    assistant_label: str = "Assistant"

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, str):
                raise InputError(f"prompt {f.name!r} must be a str, got {type(value).__name__}")
            expected = PLACEHOLDERS.get(f.name)
            if expected is None:
                continue
            found = _placeholders(value, f.name)
            if found != expected:
                missing = sorted(expected - found)
                extra = sorted(found - expected)
                raise InputError(
                    f"prompt {f.name!r} must use exactly the placeholders "
                    f"{sorted(expected)}; missing {missing}, unexpected {extra}"
                )


def _placeholders(template: str, name: str) -> frozenset[str]:
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise InputError(f"prompt {name!r} is not a valid format string: {exc}") from None
    return frozenset(field for _, field, _, _ in parsed if field is not None)


ENGLISH = PromptSet(
    language="en",
    memory_intro="Read this text carefully. I will ask you questions about it later.\n\n",
    memory_ack="I have read the text.",
    span="Which facts in the text matter for this question: {question}\nList them, one per line.",
    surrogate=(
        "Question: {question}\n"
        "Write 2 or 3 short search questions that would find the facts needed to answer it. "
        "Name the people, places or things in each. One question per line."
    ),
    draft_answer="Question: {question}\nAnswer in one short sentence.",
    key_points="List the main points of the text. One short sentence per line.",
    preferences=(
        "The text is a user's history. List what this user likes or is interested in. "
        "One item per line."
    ),
    resolve_followup=(
        "Rewrite the question below so it can be understood on its own. Replace words like "
        "he, she, it or they with the names they refer to.\n\n"
        "Conversation:\n{history}\n\nQuestion: {question}\nRewritten question:"
    ),
    answer=(
        "Passages:\n{context}\n\n"
        "Answer the question using only the passages above. Be concise. "
        "If the passages do not say, answer that you do not know.\n"
        "Question: {question}"
    ),
    short_answer=(
        "Passages:\n{context}\n\n"
        "Question: {question}\n"
        "Answer with only the few words from the passages that answer the question."
    ),
    yes_no="Passages:\n{context}\n\nQuestion: {question}\nAnswer yes or no.",
    summarize="Passages:\n{context}\n\nSummarize the passages above in a few sentences.",
    recommend=(
        "Passages:\n{context}\n\n"
        "What the user likes:\n{history}\n\n"
        "Request: {question}\n"
        "Recommend items from the passages that fit what the user likes, "
        "with one short reason each."
    ),
    gist=(
        "Summarize this text briefly. Keep every name, number, date and key fact. "
        "Plain text only.\n\n{context}"
    ),
)

CHINESE = PromptSet(
    language="zh",
    memory_intro="请仔细阅读下面的文本，稍后我会就它提问。\n\n",
    memory_ack="我已读完这段文本。",
    span="文本中哪些事实与这个问题有关：{question}\n请逐条列出，每行一条。",
    surrogate=(
        "问题：{question}\n"
        "请写出2到3个简短的检索问题，用来查找回答它所需的事实，每个问题写明涉及的人物、地点或事物，"
        "每行一个。"
    ),
    draft_answer="问题：{question}\n请用一句话简短回答。",
    key_points="请列出这段文本的要点，每行一句。",
    preferences="这段文本是某位用户的历史记录。请列出这位用户的喜好或兴趣，每行一项。",
    resolve_followup=(
        "请改写下面的问题，使其脱离对话也能看懂：把他、她、它、他们等代词换成所指的名称。\n\n"
        "对话：\n{history}\n\n问题：{question}\n改写后的问题："
    ),
    answer=(
        "段落：\n{context}\n\n"
        "请只根据上面的段落回答问题，简洁作答。若段落中没有答案，请回答不知道。\n"
        "问题：{question}"
    ),
    short_answer="段落：\n{context}\n\n问题：{question}\n请只用段落中回答问题的几个词作答。",
    yes_no="段落：\n{context}\n\n问题：{question}\n请回答是或否。",
    summarize="段落：\n{context}\n\n请用几句话概括上面的段落。",
    recommend=(
        "段落：\n{context}\n\n"
        "用户的喜好：\n{history}\n\n"
        "请求：{question}\n"
        "请从段落中推荐符合用户喜好的内容，每项附一句简短理由。"
    ),
    gist="请简要概括这段文本，保留所有名称、数字、日期和关键事实，只用纯文本。\n\n{context}",
    user_label="用户",
    assistant_label="助手",
)

_BY_LANGUAGE: Mapping[str, PromptSet] = MappingProxyType({"en": ENGLISH, "zh": CHINESE})
_ALIASES: Mapping[str, str] = MappingProxyType({"english": "en", "chinese": "zh"})


def get_prompts(language: str = "en") -> PromptSet:
    """Return the prompt set for ``language`` ("en", "zh"; region tags like "zh-CN" are fine)."""
    if not isinstance(language, str):
        raise InputError(f"language must be a str such as 'en' or 'zh', got {language!r}")
    key = language.strip().lower().replace("_", "-")
    key = _ALIASES.get(key, key.split("-", 1)[0])
    try:
        return _BY_LANGUAGE[key]
    except KeyError:
        raise InputError(
            f"no prompts for language {language!r}; choose one of {sorted(_BY_LANGUAGE)}"
        ) from None


#: How much of a text ``detect_language`` looks at.
_DETECT_CHARS = 4000
#: Share of CJK ideographs among letters above which a text counts as Chinese.
_ZH_SHARE = 0.2
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def detect_language(text: str) -> str:
    """Guess "zh" or "en" from the share of CJK ideographs in the first few thousand chars."""
    sample = text[:_DETECT_CHARS]
    cjk = len(_CJK.findall(sample))
    if not cjk:
        return "en"
    letters = sum(1 for ch in sample if ch.isalpha())
    return "zh" if cjk / max(letters, 1) >= _ZH_SHARE else "en"
