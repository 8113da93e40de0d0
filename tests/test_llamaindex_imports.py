"""Import hygiene and the public surface of ``llamaindex_memorag``."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import llamaindex_memorag

PACKAGE_DIR = Path(llamaindex_memorag.__file__).parent
ROOT = PACKAGE_DIR.parent


def test_public_names() -> None:
    assert sorted(llamaindex_memorag.__all__) == [
        "MEMORAG_METADATA_KEYS",
        "MemoRAGEmbedding",
        "MemoRAGQueryEngine",
        "MemoRAGQueryTransform",
        "MemoRAGRetriever",
        "MemoryLLM",
        "MemoryQuestionGenerator",
        "MemorySelector",
        "__version__",
        "memorag_query_engine",
        "memorag_query_engine_tool",
    ]
    for name in llamaindex_memorag.__all__:
        assert hasattr(llamaindex_memorag, name), name
    import shared_core

    assert llamaindex_memorag.__version__ == shared_core.__version__


def test_import_does_not_pull_in_langchain() -> None:
    code = (
        "import sys, llamaindex_memorag\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0].startswith('langchain'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)


def test_library_code_imports_only_llama_index_core_frameworks() -> None:
    for path in sorted(PACKAGE_DIR.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            else:
                continue
            for module in modules:
                assert not module.startswith("langchain"), f"{path.name} imports {module}"
                if module.startswith("llama_index"):
                    assert module.startswith("llama_index.core"), f"{path.name} imports {module}"
