"""The native beacon memory end to end on the fixture model (tiny, random weights, CPU).

A character tokenizer built offline (ids < the model's 128) with a ChatML-like template stands
in for the checkpoint's tokenizer. The engine below it is proven against the upstream
fixtures in ``test_beacon_fixtures.py``; here the interface, framing, rollback, persistence,
limits, the pipeline and both adapters are checked.
"""

from __future__ import annotations

import json
import shutil
import string
import threading
from pathlib import Path

import pytest
import torch
from scripted import shared_embedder
from tiny_models import next_token_logits
from tokenizers import Tokenizer, decoders, models
from transformers import PreTrainedTokenizerFast

from shared_core import MemoRAG
from shared_core.errors import IncompatibleMemoryError, InputError, LimitError, NoMemoryError
from shared_core.memory import create_memory
from shared_core.memory.beacon import BeaconConfig, NativeBeaconMemory
from shared_core.memory.beacon.config import UnsupportedBeaconConfig
from shared_core.models.decoding import TokenConstraint
from shared_core.types import ChatTurn

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "beacon"
MODEL = FIXTURES / "qwen2" / "model"
pytestmark = [
    pytest.mark.skipif(not MODEL.is_dir(), reason=f"beacon fixtures not at {FIXTURES}"),
    pytest.mark.usefixtures("one_torch_thread"),
]

TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
TEXT = (
    "The lighthouse on Skerry Point was built by Alan Marsh in 1851. Marsh was born in Leith. "
    "Herring boats from Wick sailed past the point every autumn. The keeper's log records a "
    "great storm in the winter of 1862."
)
CORPUS = [
    "The lighthouse on Skerry Point was built by the engineer Alan Marsh in 1851.",
    "Alan Marsh was born in Leith and trained as a stonemason before turning to engineering.",
    "Herring boats from Wick sailed past the point every autumn.",
    "The keeper's log records a great storm in the winter of 1862.",
]


def char_tokenizer() -> PreTrainedTokenizerFast:
    """One token per character: 3 specials, printable ASCII, padded to 128 ids."""
    specials = ["<unk>", "<|im_start|>", "<|im_end|>"]  # ids 0, 1 (bos), 2 (eos)
    vocab = {s: i for i, s in enumerate(specials)}
    for ch in [c for c in string.printable if c not in "\x0b\x0c\r"]:
        vocab[ch] = len(vocab)
    for extra in range(128 - len(vocab)):
        vocab[chr(0xC0 + extra)] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens(specials)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        unk_token="<unk>",
        pad_token="<unk>",
    )
    fast.chat_template = TEMPLATE
    return fast


@pytest.fixture(scope="module")
def tok() -> PreTrainedTokenizerFast:
    return char_tokenizer()


def load(tok: PreTrainedTokenizerFast, ratio: int = 4, **kw: object) -> NativeBeaconMemory:
    return NativeBeaconMemory.from_pretrained(
        MODEL, tokenizer=tok, beacon_ratio=ratio, device="cpu", show_progress=False, **kw
    )


@pytest.fixture(scope="module")
def mem(tok: PreTrainedTokenizerFast) -> NativeBeaconMemory:
    memory = load(tok)
    memory.memorize(TEXT)
    return memory


def test_memorize_frames_the_text_and_keeps_only_beacons(mem, tok):
    stats = mem.stats()
    n_text = len(tok(TEXT, add_special_tokens=False)["input_ids"])
    total = len(mem.prefix_ids) + n_text + len(mem.suffix_ids)
    ready = mem._snap.ready
    assert stats.backend == "beacon" and stats.tokens_read == n_text and ready.consumed == total
    assert ready.n_beacons == (total // 16) * 4  # window 16, ratio 4: 4 beacons per window
    assert stats.kv_entries == ready.n_beacons + ready.n_tail < total
    assert stats.memory_bytes < stats.full_kv_bytes
    assert stats.capacity_tokens == (512 - 16) * 4 + 16 == mem.capacity_tokens()
    assert "beacons kept" in stats.extra and tok.decode(mem.prefix_ids).startswith(
        "<|im_start|>user"
    )
    # the prompt continues the memory through the same engine: check against a manual feed
    prompt_ids = mem.format.continuation(mem.intro, mem.ack, (), "Who built it?")
    eng = mem.engine
    state, _ = eng.feed(eng.empty(4), mem.prefix_ids + tok(TEXT)["input_ids"])
    state, _ = eng.feed(state, mem.suffix_ids)
    _, want = eng.feed(state, prompt_ids)
    assert torch.allclose(next_token_logits(mem, "Who built it?"), want, atol=1e-5)


def test_prompts_roll_back_and_stream_matches_generate(mem):
    before = mem._snap
    first = mem.generate("Who built the lighthouse?", max_new_tokens=12)
    second = mem.generate("Who built the lighthouse?", max_new_tokens=12)
    assert first == second and mem._snap is before  # the memory never changes
    assert first.completion_tokens <= 12 and first.prompt_tokens > 5
    pieces = list(mem.stream("Who built the lighthouse?", max_new_tokens=12))
    assert "".join(pieces) == first.text
    other = mem.generate("Who built the lighthouse?", history=[ChatTurn("user", "hi")])
    assert other.prompt_tokens > first.prompt_tokens


def test_concurrent_prompts_never_see_each_others_tokens(mem):
    prompts = [f"Question number {i}: what happened in {1850 + i}?" for i in range(6)]
    alone = {p: mem.generate(p, max_new_tokens=10).text for p in prompts}
    got: dict[str, str] = {}
    errors: list[BaseException] = []

    def ask(p: str) -> None:
        try:
            for _ in range(2):
                text = mem.generate(p, max_new_tokens=10).text
                assert got.setdefault(p, text) == text
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=ask, args=(p,)) for p in prompts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and got == alone


def test_add_continues_the_text_like_one_memorize(tok):
    one = load(tok)
    one.memorize(CORPUS[:2])
    one.add(CORPUS[2:])
    both = load(tok)
    both.memorize(CORPUS)
    assert [d["doc_id"] for d in one.documents] == [d["doc_id"] for d in both.documents]
    assert one.stats().tokens_read == both.stats().tokens_read
    q = "Where was Marsh born?"
    # the same entries, beacons and counters; chunks split differently only move rounding
    a, b = one._snap.ready, both._snap.ready
    assert (a.consumed, a.n_beacons, a.tail_flags) == (b.consumed, b.n_beacons, b.tail_flags)
    assert torch.allclose(next_token_logits(one, q), next_token_logits(both, q), atol=1e-5)
    with pytest.raises(InputError, match="already"):
        one.add([{"id": "doc-0", "text": "again"}])


def test_save_load_round_trip_and_refusals(mem, tok, tmp_path):
    mem.save(tmp_path / "m")
    fresh = load(tok)
    stats = fresh.load(tmp_path / "m")
    assert stats.kv_entries == mem.stats().kv_entries and fresh.lineage == mem.lineage
    q = "What did the keeper's log record?"
    assert torch.equal(next_token_logits(fresh, q), next_token_logits(mem, q))
    assert fresh.generate(q, max_new_tokens=8) == mem.generate(q, max_new_tokens=8)
    fresh.add("A new lamp arrived in 1870.")
    assert len(fresh.documents) == 2 and fresh.lineage == mem.lineage
    with pytest.raises(IncompatibleMemoryError, match="beacon_ratio"):
        load(tok, ratio=2).load(tmp_path / "m")
    with pytest.raises(NoMemoryError):
        load(tok).generate("q")


def test_limits_capacity_and_bad_ratios(tok):
    small = load(tok, ratio=2)  # capacity (512 - 16) * 2 + 16 = 1008 tokens
    assert small.capacity_tokens() == 1008
    with pytest.raises(LimitError, match="1,008"):
        small.memorize("x" * 1100)
    small.memorize("y" * 600)
    with pytest.raises(LimitError, match="positions"):
        small.generate("q", max_new_tokens=400)
    with pytest.raises(InputError, match="divide"):
        load(tok, ratio=3)


def test_unsupported_configs_are_refused_clearly():
    base = {
        "model_type": "qwen2",
        "vocab_size": 8,
        "hidden_size": 8,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 8,
        "max_position_embeddings": 64,
        "beacon_window": 16,
        "beacon_ratio": [2, 4, 8],
        "beacon_pos": "interleave",
        "beacon_attn": "full-coverage",
        "beacon_param": ["q", "k", "v"],
    }
    cfg = BeaconConfig.from_dict(base)
    assert cfg.ratio == 4 and cfg.beacon_ratios == (2, 4, 8) and cfg.attention_bias
    for key, value in [
        ("beacon_pos", "append"),
        ("beacon_attn", "segmentation"),
        ("beacon_param", ["q", "k", "v", "o"]),
        ("beacon_sink_size", 4),
        ("beacon_stride", 8),
        ("model_type", "llama"),
        ("rope_scaling", {"type": "linear", "factor": 2.0}),
    ]:
        with pytest.raises(UnsupportedBeaconConfig, match=key.split("_")[0]):
            BeaconConfig.from_dict({**base, key: value})


def test_hub_ids_go_through_snapshot_download(tok, monkeypatch):
    import huggingface_hub

    seen: dict[str, object] = {}

    def fake_download(repo_id: str, **kw: object) -> str:
        seen.update(kw, repo_id=repo_id)
        return str(MODEL)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    memory = NativeBeaconMemory.from_pretrained(
        "TommyChien/memorag-qwen2-7b-inst",
        cache_dir="/c",
        access_token="tok",
        revision="abc",
        tokenizer=tok,
        device="cpu",
    )
    assert (seen["repo_id"], seen["cache_dir"], seen["token"], seen["revision"]) == (
        "TommyChien/memorag-qwen2-7b-inst",
        "/c",
        "tok",
        "abc",
    )
    assert memory.name == "TommyChien/memorag-qwen2-7b-inst"
    assert "*.safetensors" in seen["allow_patterns"] and "*.bin" not in seen["allow_patterns"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU errors")
def test_gpu_only_options_fail_clearly_without_cuda(tok):
    from shared_core.errors import MemoRAGError

    with pytest.raises(MemoRAGError, match="needs CUDA"):
        load(tok, device_map="auto")
    with pytest.raises(MemoRAGError, match="needs CUDA"):
        load(tok, load_in_4bit=True)
    with pytest.raises(InputError, match="device_map"):
        load(tok, device_map="balanced")
    # flash-attention is optional: without it (or on CPU) SDPA runs, with the same results
    assert load(tok, enable_flash_attn=True).lm.options.attention == "sdpa"


def test_generate_constrained_copies_from_the_text(mem, tok):
    text_ids = tok("Skerry Point", add_special_tokens=False)["input_ids"]

    class Only(TokenConstraint):  # allows exactly the text's tokens, in order
        def __init__(self) -> None:
            self.i = 0

        def allowed(self):  # type: ignore[override]
            return {text_ids[self.i]} if self.i < len(text_ids) else set(mem.end_ids)

        def advance(self, token: int) -> None:
            self.i += 1

    out = mem.generate_constrained("Name the place.", Only(), max_new_tokens=20)
    assert out.text == "Skerry Point"


def test_create_memory_loads_a_memorag_folder_natively(tok, tmp_path):
    folder = tmp_path / "memorag-tiny-qwen2"
    shutil.copytree(MODEL, folder)
    tok.save_pretrained(folder)
    memory = create_memory(str(folder), device="cpu", beacon_ratio=8)
    assert isinstance(memory, NativeBeaconMemory) and memory.beacon_ratio == 8
    # Compressed-KV settings other than their defaults are refused for the beacon memory,
    # never dropped silently.
    for option in ({"window": 1024}, {"scorer": "key_norm"}, {"reserve_tokens": 64}):
        with pytest.raises(InputError, match=next(iter(option))):
            create_memory(str(folder), device="cpu", **option)
    assert memory.config.capacity_tokens() == (512 - 16) * 8 + 16
    with pytest.raises(InputError, match="memorag checkpoint"):
        create_memory(None, backend="beacon")


def test_pipeline_and_both_adapters_on_the_beacon_memory(tok, tmp_path):
    pipe = MemoRAG(
        memory=load(tok),
        embedder=shared_embedder(),
        clue_strategy="copy+surrogate",
        retrieval_chunk_size=64,
    )
    pipe.memorize(CORPUS, save_dir=tmp_path / "p")
    question = "Where was the builder of the lighthouse born?"
    result = pipe.retrieve(question, 3)
    assert len(result.passages) == 3 and result.clues[0].kind == "query"
    for task, kw in [
        ("memorag", {}),
        ("qa", {}),
        ("summarize", {}),
        ("personalize", {}),
        ("dialogue", {"history": [ChatTurn("user", "hi"), ChatTurn("assistant", "hello")]}),
    ]:
        answer = pipe.answer(
            None if task == "summarize" else question, task_type=task, k=2, max_new_tokens=6, **kw
        )
        assert isinstance(answer.text, str) and answer.task_type == task
    pipe.add(["A new lamp was fitted in 1870."])
    assert pipe.memory.stats().documents == 5
    again = MemoRAG.from_dir(tmp_path / "p", memory=load(tok), embedder=shared_embedder())
    assert again.memory.stats().documents == 4

    lc = pytest.importorskip("langchain_memorag")
    li = pytest.importorskip("llamaindex_memorag")
    docs = lc.MemoRAGRetriever.from_engine(pipe, k=2).invoke(question)
    nodes = li.MemoRAGRetriever(pipe, similarity_top_k=2).retrieve(question)
    assert [d.id for d in docs] == [n.node.node_id for n in nodes] and len(docs) == 2
    reply = lc.MemoryLLM(engine=pipe, max_tokens=5).invoke("Who built the lighthouse?")
    assert isinstance(reply.content, str)


def test_gpu_check_exits_cleanly_without_cuda_and_its_cpu_smoke_runs(tmp_path, capsys):
    from benchmarks import engine as gpu_check

    if not torch.cuda.is_available():
        assert gpu_check.gpu_main([]) == 0
        assert capsys.readouterr().out.strip() == "no CUDA"
        assert not (tmp_path / "gpu_check.json").exists()
    args = ["--device", "cpu", "--tiny", "--lengths", "64", "--gen-tokens", "2"]
    assert gpu_check.gpu_main([*args, "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "gpu_check_tiny.json").read_text())
    assert results["parity"][0]["passed"] and results["parity"][0]["worst_abs_diff"] < 1e-4
    assert results["timing"][0]["tokens"] == 64 and results["timing"][0]["entries_kept"] > 0
    assert (tmp_path / "gpu_check_tiny.md").read_text().startswith("# gpu_check_tiny")
