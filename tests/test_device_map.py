"""``device_map`` reaches the model loaders and a spread model still memorizes, saves and loads.

No GPU here: accelerate's ``"auto"`` map then places every layer on the CPU. The loads are real;
a spy on ``from_pretrained`` records what reached transformers.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from scripted import shared_embedder
from transformers import AutoModelForCausalLM

from shared_core.config import DEVICE_MAPS, MemoRAGConfig
from shared_core.errors import InputError
from shared_core.models.loading import layer_devices, load_causal_lm
from shared_core.pipeline import MemoRAG

TEXT = "The lighthouse keeper wrote the logbook every night. " * 20


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """The keyword arguments of every causal-LM ``from_pretrained`` call (which still runs)."""
    calls: list[dict] = []
    real = AutoModelForCausalLM.from_pretrained.__func__

    def spy(cls, *args, **kwargs):
        calls.append(kwargs)
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", classmethod(spy))
    return calls


def test_load_causal_lm_hands_the_map_to_accelerate(tiny_llama_dir: Path, seen: list[dict]) -> None:
    lm = load_causal_lm(str(tiny_llama_dir), device_map="auto")
    assert seen[-1]["device_map"] == "auto"
    assert {d.type for d in layer_devices(lm.model)} == {"cpu"}
    load_causal_lm(str(tiny_llama_dir), device="cpu")
    assert "device_map" not in seen[-1]


def test_the_pipeline_loads_its_models_with_the_map(
    tiny_llama_dir: Path, tmp_path: Path, seen: list[dict]
) -> None:
    pipe = MemoRAG(str(tiny_llama_dir), embedder=shared_embedder(), device_map="auto", window=64)
    pipe.memorize(TEXT, save_dir=tmp_path / "mem")
    assert seen and all(call["device_map"] == "auto" for call in seen)
    again = MemoRAG(str(tiny_llama_dir), embedder=shared_embedder(), device_map="auto", window=64)
    again.load(tmp_path / "mem")
    assert again.memory.stats().kv_entries == pipe.memory.stats().kv_entries > 0
    assert again.retrieve("Who wrote the logbook?", k=1)


@pytest.mark.parametrize("value", ["gpu0", "", 3])
def test_an_unknown_device_map_is_refused_by_name(value: object) -> None:
    with pytest.raises(InputError, match="device_map"):
        MemoRAGConfig(device_map=value)  # type: ignore[arg-type]
    assert "auto" in DEVICE_MAPS
