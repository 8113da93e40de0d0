"""Shared fixtures: tiny config-built models and a hub-free tokenizer."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

from tiny_models import tiny_model, tiny_tokenizer  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for a module: on a busy 2-core machine, 2 spinning threads are
    several times slower. Use with ``pytestmark = pytest.mark.usefixtures(...)``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def result_shapes(monkeypatch: pytest.MonkeyPatch) -> Callable[[], list[tuple[int, ...]]]:
    """Call it to record, from then on, the shape of every ``torch.matmul`` and
    ``torch.softmax`` result into the list it returns."""

    def start() -> list[tuple[int, ...]]:
        shapes: list[tuple[int, ...]] = []
        for name in ("matmul", "softmax"):
            real = getattr(torch, name)

            def spy(*args, _real=real, **kwargs):
                result = _real(*args, **kwargs)
                shapes.append(tuple(result.shape))
                return result

            monkeypatch.setattr(torch, name, spy)
        return shapes

    return start


@pytest.fixture(scope="session")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture(scope="session")
def llama():
    return tiny_model("llama")


@pytest.fixture(scope="session")
def qwen2():
    return tiny_model("qwen2")


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama and its tokenizer saved as a model folder (for loading by path)."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    tiny_model("llama").save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder
