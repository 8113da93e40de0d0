"""Thin helpers wiring MemoRAG retrievers and LLMs into LlamaIndex query engines and tools;
``MemoRAGQueryEngine`` answers with the engine itself and carries the answer's citations."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from llama_index.core.base.base_query_engine import BaseQueryEngine
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.base.response.schema import Response
from llama_index.core.callbacks.base import CallbackManager
from llama_index.core.llms import LLM
from llama_index.core.prompts.mixin import PromptMixinType
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import QueryBundle
from llama_index.core.tools import QueryEngineTool

from llamaindex_memorag.retrievers import _to_node
from shared_core.types import Answer

if TYPE_CHECKING:
    from shared_core.types import RetrievalEngine

DEFAULT_TOOL_DESCRIPTION = (
    "Answers questions about the memorized documents. MemoRAG first recalls clues from a "
    "long-term memory of the whole text, then retrieves the passages they point to. "
    "Input: a full natural-language question."
)


def memorag_query_engine(
    retriever: BaseRetriever, llm: LLM, *, streaming: bool = False, **kwargs: Any
) -> RetrieverQueryEngine:
    """``RetrieverQueryEngine.from_args(retriever, llm=llm, streaming=streaming, **kwargs)``.

    ``llm`` is required so LlamaIndex never falls back to its global (OpenAI) default.
    """
    if llm is None:
        raise ValueError("pass llm= (e.g. MemoryLLM(engine=...)); the global default is OpenAI")
    return RetrieverQueryEngine.from_args(retriever, llm=llm, streaming=streaming, **kwargs)


def memorag_query_engine_tool(
    query_engine: BaseQueryEngine,
    name: str = "memorag",
    description: str = DEFAULT_TOOL_DESCRIPTION,
    **kwargs: Any,
) -> QueryEngineTool:
    """``QueryEngineTool.from_defaults(query_engine, name=name, description=description)``."""
    return QueryEngineTool.from_defaults(query_engine, name=name, description=description, **kwargs)


class MemoRAGQueryEngine(BaseQueryEngine):
    """A query engine over ``engine.answer``: the answer (a short phrase copied from the
    passages under ``answer_style="short"``/``"auto"``), the passages as ``source_nodes``,
    and ``metadata["citations"]``: where in which passage the answer was found."""

    def __init__(
        self,
        engine: RetrievalEngine,
        *,
        similarity_top_k: int | None = None,
        answer_style: str | None = None,
        max_new_tokens: int = 256,
        callback_manager: CallbackManager | None = None,
    ) -> None:
        if not callable(getattr(engine, "answer", None)):
            raise ValueError("engine must be a MemoRAG (it has no answer())")
        self._engine = engine
        self._k, self._style, self._max_new_tokens = similarity_top_k, answer_style, max_new_tokens
        super().__init__(callback_manager=callback_manager)

    def _response(self, answer: Answer) -> Response:
        return Response(
            response=answer.text,
            source_nodes=[_to_node(scored, per_query=True) for scored in answer.passages],
            metadata={
                "citations": [c.as_dict() for c in answer.citations],
                "task_type": answer.task_type,
            },
        )

    def _ask(self, query_bundle: QueryBundle) -> Answer:
        return self._engine.answer(  # type: ignore[attr-defined, no-any-return]
            query_bundle.query_str,
            k=self._k,
            answer_style=self._style,
            max_new_tokens=self._max_new_tokens,
        )

    def _query(self, query_bundle: QueryBundle) -> Response:
        return self._response(self._ask(query_bundle))

    async def _aquery(self, query_bundle: QueryBundle) -> Response:
        return self._response(await asyncio.to_thread(self._ask, query_bundle))

    def _get_prompt_modules(self) -> PromptMixinType:
        return {}
