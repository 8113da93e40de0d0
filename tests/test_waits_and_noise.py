"""Long waits show progress, a warning is said once per cause per pipeline, loops stop, and
``print_stats`` keeps memorize and load figures apart."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import pytest
import torch
from fakes import ScriptedEngine
from tiny_models import tiny_tokenizer

from shared_core import MemoRAG
from shared_core.memory.reading import memorize_bar
from shared_core.models import decoding
from shared_core.models.decoding import Decoder, RunRequest, looping
from shared_core.types import GenerationOptions

TEXTS = ["Marie Curie was born in Warsaw.", "Radium glows faintly in the dark."]


class CycleModel:
    """A stand-in causal LM whose greedy reply cycles through ``cycle`` forever."""

    device = torch.device("cpu")

    def __init__(self, cycle: list[int], vocab: int = 300) -> None:
        self.cycle, self.vocab, self.steps = cycle, vocab, 0
        self.config = SimpleNamespace(eos_token_id=None)

    def __call__(self, **_: object) -> SimpleNamespace:
        logits = torch.zeros(1, 1, self.vocab)
        logits[0, -1, self.cycle[self.steps % len(self.cycle)]] = 1.0
        self.steps += 1
        return SimpleNamespace(logits=logits)


def decode(model: CycleModel, max_new_tokens: int, **kwargs: object) -> Decoder:
    request = RunRequest("hi", options=GenerationOptions(max_new_tokens=max_new_tokens))
    decoder = Decoder(
        model,
        tiny_tokenizer(),
        [1, 2],
        request,
        cache=None,
        start_position=0,
        stop_ids=set(),
        **kwargs,
    )
    decoder.run()
    return decoder


def test_a_degenerate_loop_stops_instead_of_running_to_the_cap():
    looped = decode(CycleModel([70, 71, 72, 73, 74, 75, 76, 77, 78, 79]), 200)
    assert looped.generation.finish_reason == "stop"
    assert len(looped.tokens) == 30  # three runs of ten, not 200
    varied = decode(CycleModel(list(range(40, 240))), 150)  # no repeat within 150 tokens
    assert (len(varied.tokens), varied.generation.finish_reason) == (150, "length")


def test_looping_needs_back_to_back_repeats():
    assert looping([1, 2, 3, 4] * 4) and not looping([1, 2, 3, 4] * 3)
    assert looping(list(range(9)) * 3) and not looping(list(range(9)) * 2)
    assert looping(list(range(20)) * 2) and not looping(list(range(20)) + list(range(19)))
    assert not looping([1, 2, 3] * 5)  # runs under 4 tokens ("ha ha") need more than that
    assert not looping([7, 8, 9, 10, 1, 7, 8, 9, 10, 2, 7, 8, 9, 10, 3, 7, 8, 9, 10])


def test_a_slow_reply_shows_a_progress_bar_unless_turned_off(monkeypatch, capsys):
    monkeypatch.setattr(decoding, "PROGRESS_DELAY_S", 0.0)
    decode(CycleModel(list(range(40, 240))), 12)
    assert "generate" in capsys.readouterr().err
    decode(CycleModel(list(range(40, 240))), 12, show_progress=False)
    assert "generate" not in capsys.readouterr().err


def test_a_fast_reply_shows_nothing(capsys):
    decode(CycleModel(list(range(40, 240))), 12)  # well under PROGRESS_DELAY_S
    assert capsys.readouterr().err == ""


def test_k_over_the_corpus_is_warned_once_per_pipeline():
    engine = ScriptedEngine(TEXTS)
    with pytest.warns(UserWarning, match="k=3 is more than the 2 passages") as first:
        engine.retrieve("Where was Curie born?", k=3)
        engine.retrieve("What glows?", k=3)
        engine.retrieve("What glows?", k=5)
    assert sum("more than the" in str(w.message) for w in first) == 1
    with pytest.warns(UserWarning, match="more than the 2 passages"):
        ScriptedEngine(TEXTS).retrieve("What glows?", k=3)  # another pipeline: its own warning
    engine.add(["Pierre studied crystals."])
    with pytest.warns(UserWarning, match="more than the 3 passages"):  # a new corpus size
        engine.retrieve("What glows?", k=5)


def test_no_clues_is_warned_once_per_pipeline():
    engine = ScriptedEngine(TEXTS)  # its scripted memory writes no clue for these queries
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for query in ("What glows?", "Who was born in Warsaw?", "What glows?"):
            result = engine.retrieve(query, k=1)
    said = [w for w in caught if "wrote no clues" in str(w.message)]
    assert len(said) == 1
    assert any("no clues" in note for note in result.notes)  # every result still says so


def test_the_memorize_bar_asked_for_ends_on_its_own_line():
    assert memorize_bar(10, 1, True).leave is True  # print_stats text starts on a new line
    assert memorize_bar(10, 9, None).leave is False  # shown on its own: clears itself


def test_print_stats_after_a_load_does_not_pass_the_memorize_time_off_as_the_loads(
    tiny_llama_dir, tmp_path, capsys
):
    engine = MemoRAG(str(tiny_llama_dir), device="cpu", window=64, retrieval="clues")
    engine.memorize(TEXTS, save_dir=tmp_path / "m", print_stats=True)
    memorized = capsys.readouterr().out
    assert "memorize time:" in memorized and "loaded:" not in memorized
    again = MemoRAG(str(tiny_llama_dir), device="cpu", window=64, retrieval="clues")
    again.load(tmp_path / "m", print_stats=True)
    loaded = capsys.readouterr().out
    assert "memorize time:" in loaded
    assert "loaded:            in " in loaded and "(memorized earlier)" in loaded
    assert again.stats()["load_seconds"] > 0 and engine.stats()["load_seconds"] is None
