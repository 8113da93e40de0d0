"""Gist memory and the native beacon memory's control flow (against a stand-in model)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from types import SimpleNamespace

import pytest
import torch
from tiny_models import tiny_tokenizer

import shared_core.models.loading
from shared_core.errors import IncompatibleMemoryError, InputError, NoMemoryError
from shared_core.memory import create_memory
from shared_core.memory.beacon import NativeBeaconMemory
from shared_core.memory.gist import GistMemory
from shared_core.types import ChatTurn, Generation


class EchoGenerator:
    """Gists are the first words of the chunk; answers name how many history turns came."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[ChatTurn, ...]]] = []

    def generate(
        self,
        prompt: str,
        *,
        history: Sequence[ChatTurn] = (),
        max_new_tokens: int = 256,
        stop: Sequence[str] = (),
        temperature: float = 0.0,
    ) -> Generation:
        self.calls.append((prompt, tuple(history)))
        if history:
            return Generation(
                text=f"answer after {len(history)} turns", prompt_tokens=1, completion_tokens=4
            )
        body = prompt.split("\n")[-1] if "\n" in prompt else prompt
        return Generation(
            text="GIST " + " ".join(body.split()[:4]), prompt_tokens=1, completion_tokens=5
        )

    def stream(self, prompt: str, **kw: object) -> Iterator[str]:
        yield self.generate(prompt, **kw).text  # type: ignore[arg-type]


TEXT = "\n\n".join(
    f"Paragraph {i}. The lighthouse keeper number {i} kept a log." * 20 for i in range(6)
)


def test_gist_memory_summarises_chunks_and_answers_over_them(tmp_path):
    gen = EchoGenerator()
    mem = GistMemory(gen, chunk_tokens=200)
    stats = mem.memorize(TEXT)
    assert stats.windows == len(mem.gists) > 1
    assert all(g.startswith("GIST") for g in mem.gists)
    reply = mem.generate(
        "Who kept the log?", history=[ChatTurn("user", "hi"), ChatTurn("assistant", "hello")]
    )
    prompt, history = gen.calls[-1]
    assert prompt == "Who kept the log?"
    assert history[0].role == "user" and mem.gists[0] in history[0].content
    assert [t.content for t in history[2:]] == ["hi", "hello"]
    assert reply.text == "answer after 4 turns"
    before = len(mem.gists)
    mem.add("A second text about a ship frozen in the ice near the pole." * 5)
    assert len(mem.gists) > before and [d["doc_id"] for d in mem.documents] == ["doc-0", "doc-1"]
    mem.save(tmp_path / "g")
    other = GistMemory(EchoGenerator())
    other.load(tmp_path / "g")
    assert other.gists == mem.gists and other.documents == mem.documents
    with pytest.raises(NoMemoryError):
        GistMemory(gen).generate("q")


class StandInBeaconState:
    """Mimics the remote-code ``model.memory``: a compressed state it can export and reset."""

    def __init__(self) -> None:
        self.state = torch.zeros(4)
        self.resets: list[bool] = []

    def reset(self, **state: object) -> None:
        self.resets.append(bool(state))
        if state:
            nested = state["beacons"]
            self.state = nested["kv"][0].clone()  # type: ignore[index]
        else:
            self.state = torch.zeros(4)

    def export(self) -> dict[str, object]:
        return {"beacons": {"kv": [self.state.clone(), self.state * 2]}, "ratio": 4, "sink": None}


class StandInBeaconModel(torch.nn.Module):
    """Feeding tokens folds them into the memory; generate emits tokens that depend on it."""

    def __init__(self) -> None:
        super().__init__()
        self.memory = StandInBeaconState()
        self.config = SimpleNamespace(
            name_or_path="TommyChien/memorag-standin", num_hidden_layers=1
        )
        self.embed = torch.nn.Embedding(300, 4)

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def forward(self, input_ids: torch.Tensor) -> None:
        self.memory.state = self.memory.state + input_ids.float().sum() % 97

    def generate(self, input_ids: torch.Tensor, max_new_tokens: int, **kw: object) -> torch.Tensor:
        self.forward(input_ids)  # a prompt extends the memory, as real generation does
        token = 97 + int(self.memory.state[0]) % 26  # a letter that depends on the memory
        new = torch.full((1, max_new_tokens), token)
        return torch.cat([input_ids, new], dim=1)


def test_native_beacon_restores_its_state_before_every_prompt(tmp_path):
    model = StandInBeaconModel()
    mem = NativeBeaconMemory(model, tiny_tokenizer(), name="TommyChien/memorag-standin")
    mem.memorize("The archive holds the ledger of the river company.")
    assert model.memory.resets == [False]
    first = mem.generate("What does the archive hold?", max_new_tokens=3)
    second = mem.generate("What does the archive hold?", max_new_tokens=3)
    assert first.text == second.text and len(first.text) == 3  # rolled back between prompts
    assert model.memory.resets[1:] == [True, True]
    mem.save(tmp_path / "b")
    fresh = NativeBeaconMemory(
        StandInBeaconModel(), tiny_tokenizer(), name="TommyChien/memorag-standin"
    )
    fresh.load(tmp_path / "b")
    assert fresh.generate("What does the archive hold?", max_new_tokens=3).text == first.text
    mem.add("More ledgers arrived by boat.")
    assert [d["doc_id"] for d in mem.documents] == ["doc-0", "doc-1"]
    with pytest.raises(IncompatibleMemoryError, match="beacon_ratio"):
        NativeBeaconMemory(
            StandInBeaconModel(),
            tiny_tokenizer(),
            name="TommyChien/memorag-standin",
            beacon_ratio=8,
        ).load(tmp_path / "b")


def test_native_beacon_refuses_a_model_without_beacon_memory(llama, tokenizer):
    with pytest.raises(InputError, match="trust_remote_code"):
        NativeBeaconMemory(llama, tokenizer)


def test_create_memory_routes_memorag_checkpoints_to_native_beacon(monkeypatch):
    seen: dict[str, object] = {}

    def fake_load(name, **kw):
        seen.update(kw, name=name)
        return shared_core.models.loading.LoadedLM(
            StandInBeaconModel(), tiny_tokenizer(), str(name)
        )

    monkeypatch.setattr(shared_core.models.loading, "load_causal_lm", fake_load)
    mem = create_memory("TommyChien/memorag-qwen2-7b-inst", access_token="tok", cache_dir="/c")
    assert isinstance(mem, NativeBeaconMemory)
    assert seen["trust_remote_code"] is True
    assert seen["access_token"] == "tok" and seen["cache_dir"] == "/c"
    with pytest.raises(InputError, match="unknown memory backend"):
        create_memory("x", backend="nope")
