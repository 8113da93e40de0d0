"""The direct query pass (``probe_forward``) gives the hook pass's masses: batched with "N/A",
with the shared frame (``Prior``) reused, over full and compressed KV, absolute and compact
positions, Llama and Qwen2 (biases), and whatever the last selected layer."""

from __future__ import annotations

import pytest
import torch
from tiny_models import tiny_model

from shared_core.memory import attention_probe, compressed_kv, probe_forward
from shared_core.memory.compressed_kv import CompressedKVMemory
from shared_core.memory.entry_map import TokenMap, chunk_mass
from shared_core.memory.kv_state import cache_of
from shared_core.types import Document

DOCS = [
    Document(" ".join(f"Alpha line {i} about ferns." for i in range(12)), "a"),
    Document(" ".join(f"Beta line {i} about owls." for i in range(12)), "b"),
    Document(" ".join(f"Gamma line {i} about rivers." for i in range(12)), "c"),
]
QUERIES = ["Which line is about owls?", "ferns", "Gamma: rivers, line 7?"]


def _memory(kind: str, ratio: int, max_positions: int, tokenizer) -> CompressedKVMemory:
    model = tiny_model(kind, max_positions=max_positions)
    mem = CompressedKVMemory(
        model,
        tokenizer,
        beacon_ratio=ratio,
        window=64,
        reserve_tokens=64,
        show_progress=False,
        compress="always",
        scorer="key_norm",
    )
    mem.memorize(DOCS)
    return mem


def _hooks_only(monkeypatch) -> None:
    for module in (attention_probe, compressed_kv):
        monkeypatch.setattr(module, "supports_direct", lambda model: False)


HEAD_SETS = [((0, 1), (1, 3)), ((1, 0), (1, 2), (0, 3)), ((0, 2),)]


@pytest.mark.parametrize(
    ("kind", "ratio", "max_positions"),
    [("llama", 1, 4096), ("llama", 4, 4096), ("qwen2", 2, 4096), ("llama", 4, 600)],
)
def test_direct_pass_equals_the_hook_pass(kind, ratio, max_positions, tokenizer, monkeypatch):
    mem = _memory(kind, ratio, max_positions, tokenizer)
    if max_positions == 600:
        assert mem._state.mode == "compact"
    assert probe_forward.supports_direct(mem.model)
    # per head set: the 1st query runs with "N/A" (one batch), the next ones reuse the frame
    fast = {heads: [mem.entry_attention(q, heads) for q in QUERIES] for heads in HEAD_SETS}
    assert all(mem._null_mass[h][2] is not None for h in HEAD_SETS[-1:])
    mem._null_mass = {}
    _hooks_only(monkeypatch)
    for heads in HEAD_SETS:
        slow = [mem.entry_attention(q, heads) for q in QUERIES]
        assert mem._null_mass[heads][2] is None
        for a, b in zip(fast[heads], slow, strict=True):
            assert a.mass.shape == (len(heads), mem._state.entries)
            torch.testing.assert_close(a.mass, b.mass, atol=1e-6, rtol=1e-4)
            assert torch.equal(a.origins, b.origins)


def test_entry_mass_keeps_its_signature_on_both_paths(llama, tokenizer, monkeypatch):
    mem = CompressedKVMemory(
        llama,
        tokenizer,
        window=64,
        reserve_tokens=64,
        show_progress=False,
        compress="always",
        scorer="key_norm",
    )
    mem.memorize(DOCS[:2])
    state = mem._state
    ids = mem.format.continuation(mem.intro, mem.ack, (), QUERIES[0])
    null = mem.format.continuation(mem.intro, mem.ack, (), "N/A")
    rows = attention_probe.question_rows(ids, null)
    heads = ((1, 3), (0, 0))
    args = (ids, state.next_position, rows, heads, state.entries)
    fast = attention_probe.entry_mass(llama, cache_of(state.keys, state.values), *args)
    _hooks_only(monkeypatch)
    slow = attention_probe.entry_mass(llama, cache_of(state.keys, state.values), *args)
    torch.testing.assert_close(fast, slow, atol=1e-6, rtol=1e-4)
    assert fast.shape == (2, state.entries) and fast.dtype == torch.float32


def test_a_new_memory_state_drops_the_cached_frame(llama, tokenizer):
    mem = CompressedKVMemory(
        llama,
        tokenizer,
        window=64,
        reserve_tokens=64,
        show_progress=False,
        compress="always",
        scorer="key_norm",
    )
    mem.memorize(DOCS[:1])
    mem.entry_attention(QUERIES[0], ((0, 1),))
    first = mem._null_mass[((0, 1),)]
    mem.add(DOCS[1:])
    after = mem.entry_attention(QUERIES[0], ((0, 1),))
    again = mem._null_mass[((0, 1),)]
    assert again[0] is mem._state and again[0] is not first[0]
    assert after.mass.shape[-1] == mem._state.entries


def test_supports_direct_only_for_plain_llama_style_models(llama, qwen2):
    assert probe_forward.supports_direct(llama) and probe_forward.supports_direct(qwen2)
    llama.train()
    try:
        assert not probe_forward.supports_direct(llama)
    finally:
        llama.eval()
    assert not probe_forward.supports_direct(torch.nn.Linear(2, 2))


def test_chunk_mass_sums_each_heads_entries_per_chunk():
    gen = torch.Generator().manual_seed(0)
    tokens = 300
    doc = torch.randint(-1, 3, (tokens,), generator=gen, dtype=torch.int32)  # -1: separator
    char = torch.randint(0, 500, (tokens,), generator=gen, dtype=torch.int32)
    tmap = TokenMap(doc, char)
    origins = torch.randint(-1, tokens, (5, 400), generator=gen)
    mass = torch.randn(5, 400, generator=gen)
    chunks = [(0, 0, 200), (0, 150, 500), (1, 10, 11), (2, 0, 499), (3, 0, 10), (1, 0, 0)]
    got = chunk_mass(mass, origins, tmap, chunks)
    want = torch.zeros(5, len(chunks), dtype=torch.float64)
    for h in range(5):
        for e in range(400):
            o = int(origins[h, e])
            if o < 0 or int(doc[o]) < 0:
                continue
            for j, (d, s, t) in enumerate(chunks):
                if int(doc[o]) == d and s <= int(char[o]) < t:
                    want[h, j] += float(mass[h, e])
    torch.testing.assert_close(got, want)
    assert chunk_mass(mass, origins, tmap, []).shape == (5, 0)
    empty = chunk_mass(mass, torch.full_like(origins, -1), TokenMap.empty(), chunks[:2])
    assert torch.equal(empty, torch.zeros(5, 2, dtype=torch.float64))


def test_pass_threads_caps_and_restores():
    from shared_core.memory import cpu_threads

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with cpu_threads.pass_threads("cpu"):
            assert torch.get_num_threads() == cpu_threads.PASS_THREADS
            with cpu_threads.pass_threads("cpu"):
                assert torch.get_num_threads() == cpu_threads.PASS_THREADS
            assert torch.get_num_threads() == cpu_threads.PASS_THREADS
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
