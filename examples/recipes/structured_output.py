"""LangChain ``with_structured_output`` on ``MemoryLLM``: a pydantic object filled from the
memory, decoded under the schema's grammar (always parses; the values are the model's).

``python examples/recipes/structured_output.py`` (embedded models, offline).
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, Field

from langchain_memorag import MemoryLLM
from shared_core import MemoRAG

TEXTS = [
    "The school in Marlow was founded in 1820 by John Smith.",
    "Mary Shelley left her library to the school in 1851.",
]


class Founding(BaseModel):
    """Who founded the school, and when."""

    founder: str = Field(description="The founder's name")
    year: int = Field(description="The year it was founded")


def run(engine: Any) -> dict[str, Any]:
    """Return the parsed object (and whether it parsed)."""
    llm = MemoryLLM(engine=engine).with_structured_output(Founding, include_raw=True)
    result = llm.invoke("Who founded the school in Marlow, and in what year?")
    parsed = result["parsed"]
    return {
        "parsed": parsed.model_dump() if parsed is not None else None,
        "error": str(result["parsing_error"]) if result["parsing_error"] else None,
    }


def main() -> None:
    engine = MemoRAG()
    engine.memorize(TEXTS)
    print(json.dumps(run(engine), indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
