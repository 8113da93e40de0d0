"""Mechanics of the compressed KV memory, on tiny random models."""

from __future__ import annotations

import json
import math
import re
import threading
from pathlib import Path

import pytest
import torch
from tiny_models import next_token_logits, tiny_model

from shared_core.errors import (
    IncompatibleMemoryError,
    InputError,
    LimitError,
    NoMemoryError,
    PersistenceError,
)
from shared_core.memory.compressed_kv import CompressedKVMemory
from shared_core.memory.positions import rerotate, rope_inv_freq

TEXT = " ".join(
    f"Sentence {i} says the {w} is near."
    for i, w in enumerate(["fox", "dog", "owl", "cat", "bee", "elk"] * 8)
)


def make(model, tokenizer, **kw) -> CompressedKVMemory:
    kw.setdefault("window", 128)
    kw.setdefault("reserve_tokens", 64)
    return CompressedKVMemory(
        model, tokenizer, show_progress=False, **{"compress": "always", "scorer": "key_norm", **kw}
    )


def plain_logits(mem: CompressedKVMemory, text: str, prompt: str) -> torch.Tensor:
    ids = (
        mem.prefix_ids
        + mem.format.encode(text)
        + mem.suffix_ids
        + mem.format.continuation(mem.intro, mem.ack, (), prompt)
    )
    with torch.inference_mode():
        return mem.model(torch.tensor([ids])).logits[0, -1]


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_ratio_one_windowed_equals_one_prefill(kind, tokenizer):
    mem = make(tiny_model(kind), tokenizer, beacon_ratio=1)
    mem.memorize(TEXT)
    assert mem.stats().windows > 3
    got = next_token_logits(mem, "Where is the owl?")
    want = plain_logits(mem, TEXT, "Where is the owl?")
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("ratio", [2, 4, 8])
def test_kept_entries_per_window(ratio, llama, tokenizer):
    mem = make(llama, tokenizer, beacon_ratio=ratio)
    stats = mem.memorize(TEXT)
    n = stats.tokens_read
    kept = sum(math.ceil(min(128, n - s) / ratio) for s in range(0, n, 128))
    frame = len(mem.prefix_ids) + len(mem.suffix_ids)
    assert stats.kv_entries == frame + kept
    assert stats.memory_bytes * ratio <= stats.full_kv_bytes + frame * ratio * (
        stats.memory_bytes // stats.kv_entries
    )


def test_absolute_positions_are_true_text_positions(llama, tokenizer):
    mem = make(llama, tokenizer, beacon_ratio=4)
    mem.memorize(TEXT)
    state = mem._state
    p = len(mem.prefix_ids)
    for pos in state.positions:
        assert torch.equal(pos[:, :p], torch.arange(p).expand(pos.shape[0], -1))
        assert (pos[:, 1:] > pos[:, :-1]).all()  # strictly increasing per head
        body = pos[:, p : -len(mem.suffix_ids)]
        assert body.min() >= p and body.max() < p + state.text_tokens
    assert state.mode == "absolute"
    assert state.next_position == p + state.text_tokens + len(mem.suffix_ids)


def test_rerotate_moves_keys_to_new_positions(llama):
    inv = rope_inv_freq(llama)
    rotary = llama.model.rotary_emb
    k = torch.randn(2, 5, 16)
    pos_a, pos_b = torch.arange(10, 15), torch.arange(3, 8)

    def rope(x, pos):
        cos, sin = rotary(x, pos[None])
        half = x.shape[-1] // 2
        rot = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
        return x * cos + rot * sin

    moved = rerotate(rope(k, pos_a), (pos_b - pos_a).expand(2, -1), inv)
    torch.testing.assert_close(moved, rope(k, pos_b), atol=1e-5, rtol=1e-5)


def test_compact_mode_reaches_past_trained_positions(tokenizer):
    model = tiny_model("qwen2", max_positions=1024)
    mem = make(model, tokenizer, beacon_ratio=4)
    stats = mem.memorize(TEXT * 2)  # ~3.6k tokens, far past 1,024 positions
    assert stats.position_mode == "compact"
    assert stats.tokens_read > 1024
    for pos in mem._state.positions:
        assert torch.equal(pos, torch.arange(pos.shape[-1]).expand_as(pos))
    assert mem._state.next_position == stats.kv_entries
    assert mem.generate("Which animal?", max_new_tokens=3).completion_tokens <= 3


def test_compact_ratio_one_matches_absolute(llama, tokenizer):
    a = make(llama, tokenizer, beacon_ratio=1, position_mode="absolute")
    c = make(llama, tokenizer, beacon_ratio=1, position_mode="compact")
    a.memorize(TEXT)
    c.memorize(TEXT)
    torch.testing.assert_close(next_token_logits(a, "q?"), next_token_logits(c, "q?"))


def test_prompts_roll_back(llama, tokenizer):
    mem = make(llama, tokenizer, beacon_ratio=4)
    mem.memorize(TEXT)
    before = [k.clone() for k in mem._state.keys]
    ptrs = [k.data_ptr() for k in mem._state.keys]
    first = mem.generate("Where is the dog?", max_new_tokens=8)
    mem.generate("Something else entirely, longer prompt here.", max_new_tokens=8)
    again = mem.generate("Where is the dog?", max_new_tokens=8)
    assert first == again
    assert [k.data_ptr() for k in mem._state.keys] == ptrs
    for old, new in zip(before, mem._state.keys, strict=True):
        assert torch.equal(old, new)


def test_stream_concatenates_to_generate_and_stops(llama, tokenizer):
    mem = make(llama, tokenizer, beacon_ratio=2)
    mem.memorize(TEXT)
    full = mem.generate("Tell me.", max_new_tokens=12)
    assert "".join(mem.stream("Tell me.", max_new_tokens=12)) == full.text
    assert full.prompt_tokens > 0 and full.completion_tokens == 12
    if len(full.text) > 3:
        stop = full.text[2:4]
        cut = mem.generate("Tell me.", max_new_tokens=12, stop=[stop])
        assert stop not in cut.text and cut.finish_reason == "stop"


def test_add_equals_one_shot_at_ratio_one(llama, tokenizer):
    first, second = TEXT[:900], TEXT[900:1800]
    one = make(llama, tokenizer, beacon_ratio=1)
    one.memorize([first, second])
    inc = make(llama, tokenizer, beacon_ratio=1)
    inc.memorize(first)
    inc.add(second)
    assert inc.stats().tokens_read == one.stats().tokens_read
    torch.testing.assert_close(
        next_token_logits(inc, "q?"), next_token_logits(one, "q?"), atol=1e-4, rtol=1e-4
    )
    assert [d["doc_id"] for d in inc.documents] == ["doc-0", "doc-1"]


def test_add_switches_to_compact_when_absolute_overflows(tokenizer):
    mem = make(tiny_model("llama", max_positions=1024), tokenizer, beacon_ratio=4)
    mem.memorize(TEXT[:500])
    assert mem.stats().position_mode == "absolute"
    mem.add(TEXT)
    assert mem.stats().position_mode == "compact"
    mem.generate("ok?", max_new_tokens=2)


def test_save_load_round_trip_is_bit_exact(llama, tokenizer, tmp_path):
    mem = make(llama, tokenizer, beacon_ratio=4)
    mem.memorize(TEXT)
    mem.save(tmp_path / "m")
    other = make(llama, tokenizer, beacon_ratio=4)
    other.load(tmp_path / "m")
    for a, b in zip(
        mem._state.keys + mem._state.values, other._state.keys + other._state.values, strict=True
    ):
        assert torch.equal(a, b)
    assert other.generate("Where?", max_new_tokens=6) == mem.generate("Where?", max_new_tokens=6)
    assert other.stats().tokens_read == mem.stats().tokens_read


@pytest.mark.parametrize("bad", ["", "   \n\t ", b"\xff\xfe\x00binary", "abc\x00def", 42, []])
def test_bad_text_is_refused_and_memory_kept(bad, llama, tokenizer):
    mem = make(llama, tokenizer, beacon_ratio=4)
    mem.memorize(TEXT[:500])
    before = mem.generate("q", max_new_tokens=4)
    with pytest.raises(InputError):
        mem.memorize(bad)
    with pytest.raises(InputError):
        mem.add(bad)
    assert mem.generate("q", max_new_tokens=4) == before


def test_text_over_the_limit_is_refused_with_advice(tokenizer):
    mem = make(tiny_model("llama", max_positions=512), tokenizer, beacon_ratio=2)
    with pytest.raises(LimitError, match="beacon_ratio"):
        mem.memorize(TEXT * 3)
    assert mem.is_empty
    with pytest.raises(LimitError, match="max_chars"):
        CompressedKVMemory(
            mem.model, tokenizer, max_chars=100, compress="always", scorer="key_norm"
        ).memorize(TEXT)


def test_prompt_without_memory_and_overlong_prompt(llama, tokenizer):
    mem = make(llama, tokenizer)
    with pytest.raises(NoMemoryError):
        mem.generate("hello")
    mem.memorize(TEXT[:400])
    with pytest.raises(LimitError, match="positions"):
        mem.generate("x " * 5000, max_new_tokens=8)
    with pytest.raises(LimitError, match="max_new_tokens"):
        mem.generate("hi", max_new_tokens=10**6)


@pytest.fixture
def saved(llama, tokenizer, tmp_path) -> Path:
    mem = make(llama, tokenizer, beacon_ratio=4)
    mem.memorize(TEXT[:800])
    mem.save(tmp_path / "m")
    return tmp_path / "m"


def _snapshot(root: Path) -> Path:
    return root / (root / "CURRENT").read_text().strip()


def test_load_refuses_foreign_model_ratio_and_version(saved, tokenizer, llama):
    with pytest.raises(IncompatibleMemoryError, match="model_fingerprint"):
        make(tiny_model("llama", seed=1), tokenizer, beacon_ratio=4).load(saved)
    with pytest.raises(IncompatibleMemoryError, match="beacon_ratio"):
        make(llama, tokenizer, beacon_ratio=8).load(saved)
    manifest = _snapshot(saved) / "manifest.json"
    data = json.loads(manifest.read_text())
    data["format_version"] = 99
    manifest.write_text(json.dumps(data))
    with pytest.raises(IncompatibleMemoryError, match="format_version"):
        make(llama, tokenizer, beacon_ratio=4).load(saved)


def test_load_refuses_missing_truncated_tampered(saved, llama, tokenizer, tmp_path):
    mem = make(llama, tokenizer, beacon_ratio=4)
    with pytest.raises(PersistenceError, match="does not exist"):
        mem.load(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PersistenceError, match="no saved memory"):
        mem.load(tmp_path / "empty")
    tensors = _snapshot(saved) / "memory.safetensors"
    blob = tensors.read_bytes()
    tensors.write_bytes(blob[:-100])
    with pytest.raises(PersistenceError, match="truncated"):
        mem.load(saved)
    tensors.write_bytes(blob[:-4] + b"\x00\x00\x00\x01")
    with pytest.raises(PersistenceError, match="sha256"):
        mem.load(saved)
    assert mem.is_empty


def test_save_refuses_another_memory_without_overwrite(saved, llama, tokenizer):
    other = make(llama, tokenizer, beacon_ratio=4)
    other.memorize("A completely different text about ships and ice.")
    with pytest.raises(InputError, match="overwrite"):
        other.save(saved)
    other.save(saved, overwrite=True)
    fresh = make(llama, tokenizer, beacon_ratio=4)
    fresh.load(saved)
    assert fresh.stats().tokens_read == other.stats().tokens_read


def test_threads_share_one_memory(llama, tokenizer):
    mem = make(llama, tokenizer, beacon_ratio=4)
    mem.memorize(TEXT)
    prompts = [f"Question number {i}?" for i in range(8)]
    alone = {p: mem.generate(p, max_new_tokens=6).text for p in prompts}
    results: dict[str, str] = {}

    def ask(p: str) -> None:
        results[p] = mem.generate(p, max_new_tokens=6).text

    threads = [threading.Thread(target=ask, args=(p,)) for p in prompts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == alone
    assert mem.generate(prompts[0], max_new_tokens=6).text == alone[prompts[0]]


# -- compress="when_needed": compress only as much as the positions require ------------------
def _per_entry(mem: CompressedKVMemory) -> float:
    return float(mem.stats().extra["tokens per entry"])


def test_when_needed_keeps_everything_while_the_text_fits(llama, tokenizer):
    mem = make(llama, tokenizer, beacon_ratio=8, compress="when_needed")
    stats = mem.memorize(TEXT)
    frame = len(mem.prefix_ids) + len(mem.suffix_ids)
    assert stats.kv_entries == stats.tokens_read + frame and _per_entry(mem) == 1.0


def test_when_needed_picks_the_smallest_ratio_that_fits(tokenizer):
    model = tiny_model("llama", max_positions=1024)
    mem = make(model, tokenizer, beacon_ratio=8, compress="when_needed")
    stats = mem.memorize(TEXT)
    assert stats.tokens_read > 1024  # over the positions: full KV cannot hold it
    fixed = {r: make(model, tokenizer, beacon_ratio=r).memorize(TEXT).kv_entries for r in (2, 3)}
    assert stats.kv_entries == fixed[2] > fixed[3]  # ratio 2 fits, so it is not compressed more
    with pytest.raises(LimitError):
        make(model, tokenizer, beacon_ratio=1, compress="when_needed").memorize(TEXT)


def test_when_needed_compresses_added_text_harder_as_the_corpus_grows(tokenizer):
    model = tiny_model("llama", max_positions=2048)
    mem = make(model, tokenizer, beacon_ratio=16, compress="when_needed")
    first = mem.memorize(TEXT)  # fits: full KV
    first_ratio = first.tokens_read / (first.kv_entries - len(mem.prefix_ids + mem.suffix_ids))
    second = mem.add(TEXT)
    added_ratio = (second.tokens_read - first.tokens_read) / (second.kv_entries - first.kv_entries)
    assert first_ratio == 1 and added_ratio > 2 and second.position_mode == "compact"
    with pytest.raises(LimitError, match="positions left after the kept entries"):
        mem.add(TEXT * 3)  # the kept entries leave no room, whatever the ratio
    assert mem.stats().tokens_read == second.tokens_read  # the refused add changed nothing


def test_when_needed_refuses_past_beacon_ratio_and_says_what_to_raise(tokenizer):
    mem = make(
        tiny_model("llama", max_positions=512), tokenizer, beacon_ratio=2, compress="when_needed"
    )
    with pytest.raises(LimitError, match=r"raise beacon_ratio to about (\d+)") as refused:
        mem.memorize(TEXT * 2)
    needed = re.search(r"raise beacon_ratio to about (\d+)", str(refused.value))
    assert needed is not None and int(needed.group(1)) > 2
    assert mem.is_empty  # nothing half-read was kept


# -- key_norm_cover: every block of text keeps entries --------------------------------------
def test_covering_scorer_keeps_every_block_and_the_lowest_norms_within_it():
    from shared_core.memory.scorers import CoveringKeyNormScorer, KeyNormScorer, get_scorer, select

    torch.manual_seed(0)
    keys = torch.randn(2, 256, 8)
    keys[:, :128] *= 0.1  # the first half has far smaller keys: plain key norm keeps only it
    plain = select(KeyNormScorer().score(keys, keys), 16)
    assert int(plain.max()) < 128
    cover = select(get_scorer("key_norm_cover").score(keys, keys), 16)
    assert (cover // 32 == torch.arange(8).repeat_interleave(2)).all()  # 2 per 32-token block
    norms = keys.norm(dim=-1)
    for h in range(2):
        for b in range(8):
            block = norms[h, b * 32 : (b + 1) * 32]
            kept = cover[h][cover[h] // 32 == b] - b * 32
            assert set(kept.tolist()) == set(block.argsort()[:2].tolist())
    with pytest.raises(InputError, match="block"):
        CoveringKeyNormScorer(block=0)


def test_covering_scorer_runs_in_the_memory(llama, tokenizer):
    mem = make(llama, tokenizer, beacon_ratio=4, scorer="key_norm_cover")
    stats = mem.memorize(TEXT)
    assert stats.kv_entries < stats.tokens_read and mem.stats().extra["scorer"] == "key_norm_cover"
