"""Sub-questions and routing decisions written by the memory model under a JSON grammar, so
they always parse and always name one of the given tools or choices.

``MemoryQuestionGenerator`` for ``SubQuestionQueryEngine`` (``structured.sub_questions``);
``MemorySelector`` for ``RouterQueryEngine`` (``structured.pick_choice``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from llama_index.core.base.base_selector import BaseSelector, SelectorResult, SingleSelection
from llama_index.core.prompts.mixin import PromptDictType
from llama_index.core.question_gen.types import BaseQuestionGenerator, SubQuestion
from llama_index.core.schema import QueryBundle
from llama_index.core.tools.types import ToolMetadata

from shared_core.structured import ToolSpec, pick_choice, sub_questions

__all__ = ["MemoryQuestionGenerator", "MemorySelector"]


class MemoryQuestionGenerator(BaseQuestionGenerator):
    """Sub-questions from a MemoRAG engine's memory model (``max_questions`` at most)."""

    def __init__(self, engine: Any, *, max_questions: int = 3) -> None:
        self.engine = engine
        self.max_questions = max_questions

    def _get_prompts(self) -> PromptDictType:
        return {}

    def _update_prompts(self, prompts: PromptDictType) -> None:
        pass

    def generate(self, tools: Sequence[ToolMetadata], query: QueryBundle) -> list[SubQuestion]:
        specs = [ToolSpec(t.get_name(), t.description) for t in tools]
        pairs = sub_questions(
            self.engine.memory, query.query_str, specs, max_questions=self.max_questions
        )
        return [SubQuestion(sub_question=q, tool_name=name) for q, name in pairs]

    async def agenerate(
        self, tools: Sequence[ToolMetadata], query: QueryBundle
    ) -> list[SubQuestion]:
        return await asyncio.to_thread(self.generate, tools, query)


class MemorySelector(BaseSelector):
    """Picks one choice (a query engine tool, for ``RouterQueryEngine``) by its description."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def _get_prompts(self) -> PromptDictType:
        return {}

    def _update_prompts(self, prompts: PromptDictType) -> None:
        pass

    def _select(self, choices: Sequence[ToolMetadata], query: QueryBundle) -> SelectorResult:
        index, reason = pick_choice(
            self.engine.memory, query.query_str, [c.description for c in choices]
        )
        return SelectorResult(selections=[SingleSelection(index=index, reason=reason)])

    async def _aselect(self, choices: Sequence[ToolMetadata], query: QueryBundle) -> SelectorResult:
        return await asyncio.to_thread(self._select, choices, query)
