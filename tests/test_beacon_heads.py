"""Memory-native retrieval over the native beacon memory, on the tiny fixture model (CPU).

Entry origins (beacons: the last raw token of the ratio tokens they follow) and the token map
map every kept entry to the right document and character, over many windows, after ``add``
and after save/load (old saves without a map still load, and say why they cannot rank); the
query pass equals the model's own eager attention, never builds an attention matrix over the
text and stops after the last selected layer; a planted attention pattern (weights and keys)
ranks its passage first through the GQA mapping; head sets for other models are refused;
calibration and ``MemoRAG`` take the heads route end to end.
"""

from __future__ import annotations

import json
import shutil
import warnings
from dataclasses import replace

import pytest
import torch
from scripted import shared_embedder
from test_beacon_backend import CORPUS, MODEL, char_tokenizer

from shared_core import MemoRAG
from shared_core.errors import IncompatibleMemoryError, InputError, PersistenceError
from shared_core.head_sets import HeadSet
from shared_core.heads.calibration import calibrate_heads
from shared_core.heads.ranker import AttentionRanker, chunk_keys
from shared_core.memory.attention_memory import AttentionMemory
from shared_core.memory.attention_probe import NULL_QUERY, EntryAttention, question_rows
from shared_core.memory.beacon import NativeBeaconMemory
from shared_core.memory.beacon import attention as beacon_attention
from shared_core.memory.beacon.attention import TOKEN_FILE, entry_origins
from shared_core.memory.beacon.model import BeaconAttention
from shared_core.memory.beacon.state import plan_chunk
from shared_core.memory.entry_map import chunk_mass
from shared_core.retrieval.chunking import TokenChunker
from shared_core.types import Document

pytestmark = [
    pytest.mark.skipif(not MODEL.is_dir(), reason="beacon fixtures not found"),
    pytest.mark.usefixtures("one_torch_thread"),
]
DOCS = [Document(text, f"d{i}") for i, text in enumerate(CORPUS)]
HEADS = ((0, 1), (2, 2))


@pytest.fixture(scope="module")
def tok():
    return char_tokenizer()


def load(tok, ratio: int = 4) -> NativeBeaconMemory:
    return NativeBeaconMemory.from_pretrained(
        MODEL, tokenizer=tok, beacon_ratio=ratio, device="cpu", show_progress=False
    )


def head_set_for(mem: NativeBeaconMemory, heads=HEADS) -> HeadSet:
    return HeadSet(mem.name, mem.fingerprint(), tuple(heads), calibration={"data": ["test"]})


def simulated_origins(n_raw: int, window: int, ratio: int) -> list[int]:
    """The algorithm from the fixture README, replayed independently: raw-stream origins."""
    kept: list[int] = []
    tail: list[tuple[int, bool]] = []
    start = 0
    for i in range(n_raw):
        tail.append((i, False))
        if (i - start + 1) % ratio == 0:
            tail.append((i, True))
        if i - start + 1 == window:
            kept += [o for o, beacon in tail if beacon]
            tail, start = [], start + window
    return kept + [o for o, _ in tail]


def text_ids(mem: NativeBeaconMemory, parts: list[list[Document]]) -> list[int]:
    ids: list[int] = []
    for n, docs in enumerate(parts):
        ids += mem.format.encode(("\n\n" if n else "") + "\n\n".join(d.text for d in docs))
    return ids


def check_map(mem: NativeBeaconMemory, parts: list[list[Document]]) -> torch.Tensor:
    """Every entry's origin and the token map agree with the text; returns the origins."""
    snap = mem._snap
    docs = [d for part in parts for d in part]
    ids = text_ids(mem, parts)
    tmap = snap.token_map
    assert tmap is not None and len(tmap) == snap.text_tokens == len(ids)
    for t, token in enumerate(ids):  # one token per character
        d, c = int(tmap.doc[t]), int(tmap.char[t])
        if d >= 0:
            assert docs[d].text[c] == mem.tokenizer.decode([token]), (t, d, c)
    assert {int(d) for d in tmap.doc} == {-1, *range(len(docs))}
    ready = snap.ready
    frame = len(mem.prefix_ids)
    got = entry_origins(ready, frame, snap.text_tokens)
    raw = simulated_origins(ready.consumed, ready.window, ready.ratio)
    want = [o - frame if 0 <= o - frame < snap.text_tokens else -1 for o in raw]
    assert got.tolist() == want and len(want) == ready.entries
    return got


@pytest.mark.parametrize("ratio", [2, 4, 8])
def test_entries_map_to_their_chunks_over_many_windows(tok, ratio):
    mem = load(tok, ratio)
    mem.memorize(DOCS)
    assert mem._snap.ready.window_start // mem._snap.ready.window > 10  # many closed windows
    origins = check_map(mem, [DOCS])
    assert isinstance(mem, AttentionMemory)
    chunks = TokenChunker(chunk_tokens=12, overlap_tokens=3).split(DOCS)
    keys = chunk_keys(mem, chunks)
    mass = torch.rand(2, origins.shape[0])
    got = chunk_mass(mass, origins.repeat(2, 1), mem._snap.token_map, keys)
    tmap = mem._snap.token_map
    want = torch.zeros_like(got)
    for e, o in enumerate(origins.tolist()):
        if o >= 0 and int(tmap.doc[o]) >= 0:
            for j, (d, s, t) in enumerate(keys):
                if int(tmap.doc[o]) == d and s <= int(tmap.char[o]) < t:
                    want[:, j] += mass[:, e].double()
    torch.testing.assert_close(got, want)


def test_origins_after_add_and_save_load(tok, tmp_path):
    one = load(tok)
    one.memorize(DOCS[:2])
    one.add(DOCS[2:])
    origins = check_map(one, [DOCS[:2], DOCS[2:]])
    both = load(tok)
    both.memorize(DOCS)
    assert torch.equal(origins, check_map(both, [DOCS]))
    assert torch.equal(one._snap.token_map.doc, both._snap.token_map.doc)
    assert torch.equal(one._snap.token_map.char, both._snap.token_map.char)
    one.save(tmp_path / "m")
    again = load(tok)
    again.load(tmp_path / "m")
    assert torch.equal(check_map(again, [DOCS[:2], DOCS[2:]]), origins)
    q = "Where was Marsh born?"
    a, b = one.entry_attention(q, HEADS), again.entry_attention(q, HEADS)
    assert torch.equal(a.mass, b.mass) and torch.equal(a.origins, b.origins)
    more = Document("A new lamp was fitted in 1870.", "d9")
    again.add([more])
    check_map(again, [DOCS[:2], DOCS[2:], [more]])


def _rewrite_manifest(snap, edit) -> None:
    from shared_core.persistence import file_record

    path = snap / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    manifest["files"] = {
        p.name: file_record(p) for p in sorted(snap.iterdir()) if p.name != "manifest.json"
    }
    path.write_text(json.dumps(manifest))


def test_old_saves_load_and_say_why_they_cannot_rank(tok, tmp_path):
    mem = load(tok)
    mem.memorize(DOCS)
    mem.save(tmp_path / "m")
    snap = next(p for p in (tmp_path / "m").iterdir() if p.is_dir())
    (snap / TOKEN_FILE).unlink()  # what a save from before the token map looks like
    _rewrite_manifest(snap, lambda m: m["memory"].pop("token_map"))
    old = load(tok)
    old.load(tmp_path / "m")
    assert old.generate("Who built it?", max_new_tokens=4) == mem.generate(
        "Who built it?", max_new_tokens=4
    )
    with pytest.raises(IncompatibleMemoryError, match=r"no token map.*memorize the text again"):
        old.entry_attention("Who built it?", HEADS)
    mem.save(tmp_path / "n")
    snap = next(p for p in (tmp_path / "n").iterdir() if p.is_dir())
    _rewrite_manifest(snap, lambda m: m["memory"]["token_map"].update(tokens=3))
    with pytest.raises(PersistenceError, match="token map"):
        load(tok).load(tmp_path / "n")


def test_query_pass_matches_the_models_eager_attention(tok, monkeypatch):
    mem = load(tok)
    mem.memorize(DOCS)
    ready = mem._snap.ready
    query = "Where was Marsh born?"
    ids = mem.format.continuation(mem.intro, mem.ack, (), query)
    rows = question_rows(ids, mem.format.continuation(mem.intro, mem.ack, (), NULL_QUERY))
    heads = [(layer, h) for layer in range(3) for h in range(4)]
    got = beacon_attention.query_mass(mem.lm, ready, ids, rows, heads, mem.max_positions)
    # the model's own eager attention over the same one-step plan records every probability
    span = replace(ready, window=ready.consumed - ready.window_start + len(ids))
    plan = plan_chunk(span, ids, mem.lm.config.beacon_token_id)
    probs: list[torch.Tensor] = []
    real = torch.softmax

    def spy(x, *a, **k):
        out = real(x, *a, **k)
        if out.dim() == 4:
            probs.append(out)
        return out

    mem.lm.options.attention = "eager"
    monkeypatch.setattr(torch, "softmax", spy)
    beacons = torch.tensor([i for i, f in enumerate(plan.flags) if f])
    mem.lm.step(torch.tensor([plan.entries]), beacons, ready.past())
    assert len(probs) == 3
    picked = torch.tensor(plan.raw_rows[rows[0] : rows[1]])
    m = ready.entries
    for n, (layer, h) in enumerate(heads):
        want = probs[layer][0, h, picked, :m].mean(0)
        torch.testing.assert_close(got[n], want, atol=1e-6, rtol=1e-5)
    assert bool((got.sum(dim=1) < 1).all()) and bool((got >= 0).all())


def test_query_pass_never_builds_a_text_by_text_matrix(tok, monkeypatch, result_shapes):
    mem = load(tok)
    mem.memorize([Document(" ".join(CORPUS * 3), "long")])
    entries, text = mem._snap.ready.entries, mem._snap.text_tokens
    ids = mem.format.continuation(mem.intro, mem.ack, (), "Who built it?")
    bound = len(ids) + len(ids) // mem.beacon_ratio + 1  # the query's own entries, at most
    assert bound < entries < text
    shapes = result_shapes()
    # the model's own attention (SDPA with a causal bias, which a patched SDPA would break)
    attend = BeaconAttention._attend
    queries: list[int] = []

    def attend_spy(self, q, k, v, m):
        queries.append(q.shape[-2])
        return attend(self, q, k, v, m)

    monkeypatch.setattr(BeaconAttention, "_attend", attend_spy)
    layers_run: list[int] = []
    for i, layer in enumerate(mem.lm.model.layers):
        layer.register_forward_hook(lambda *_, i=i: layers_run.append(i))
    result = mem.entry_attention("Who built it?", [(0, 1), (1, 3)])
    assert result.mass.shape == (2, entries) and result.origins.shape == (2, entries)
    assert shapes, "the pass computed nothing"
    for shape in shapes:  # [heads, query rows, entries + query]: never entries x entries
        assert len(shape) < 2 or shape[-2] <= bound, shape
    assert queries and max(queries) <= bound
    assert set(layers_run) == {0, 1}  # layer 2 never ran: the pass stops after layer 1
    before = len(layers_run)
    mem.entry_attention("Who built it?", [(0, 1), (1, 3)])
    assert len(layers_run) - before == 2  # the "N/A" pass is cached: one pass per query


def plant(mem: NativeBeaconMemory, entry: int, layer: int = 0, head: int = 1) -> None:
    """Make ``head`` attend from the letter ``Q`` (and not from "N/A") to ``entry`` only.

    The query projection of ``head`` keeps one dimension (the slowest rotary pair, nearly
    position-free), aligned with layer ``layer``'s normed input for ``Q`` and orthogonal to
    those for ``N``, ``/``, ``A``; the memory's keys of the KV head it reads (GQA) are zero in
    that pair except at ``entry``.
    """
    lm, cfg = mem.lm, mem.lm.config
    d = cfg.head_dim
    attn = lm.model.layers[layer].self_attn
    norm = lm.model.layers[layer].input_layernorm
    with torch.no_grad():
        x = {
            c: norm(lm.model.embed_tokens.weight[mem.tokenizer.convert_tokens_to_ids(c)])
            for c in "QN/A"
        }
        u = x["Q"].clone()
        basis: list[torch.Tensor] = []
        for c in "N/A":
            v = x[c] - sum((x[c] @ b) * b for b in basis)
            basis.append(v / v.norm())
        for b in basis:
            u = u - (u @ b) * b
        rows = slice(head * d, (head + 1) * d)
        attn.q_proj.weight[rows] = 0
        attn.q_proj.bias[rows] = 0
        attn.q_proj.weight[head * d + d - 1] = 8.0 * u / (u @ x["Q"])
        snap = mem._snap
        ready = snap.ready
        kv_head = head // (cfg.num_heads // cfg.num_kv_heads)
        keys = torch.cat([ready.beacon_kv[layer][0], ready.tail_kv[layer][0]], dim=-2).clone()
        keys[0, kv_head, :, [d // 2 - 1, d - 1]] = 0
        keys[0, kv_head, entry, d - 1] = 12.0
        nb = ready.n_beacons
        beacon_kv = list(ready.beacon_kv)
        tail_kv = list(ready.tail_kv)
        beacon_kv[layer] = (keys[:, :, :nb], ready.beacon_kv[layer][1])
        tail_kv[layer] = (keys[:, :, nb:], ready.tail_kv[layer][1])
        ready = replace(ready, beacon_kv=tuple(beacon_kv), tail_kv=tuple(tail_kv))
        mem._snap = replace(snap, ready=ready)


def test_planted_attention_ranks_its_passage_first(tok):
    mem = load(tok)
    mem.memorize(DOCS)
    origins = entry_origins(mem._snap.ready, len(mem.prefix_ids), mem._snap.text_tokens)
    tmap = mem._snap.token_map
    chunks = TokenChunker(chunk_tokens=8, overlap_tokens=0).split(DOCS)
    for doc in (2, 0):  # a beacon in the middle of document 2, then of document 0
        entry = next(
            e
            for e in range(mem._snap.ready.n_beacons)
            if origins[e] >= 0
            and int(tmap.doc[origins[e]]) == doc
            and int(tmap.char[origins[e]]) > 20
        )
        plant(mem, entry)
        char = int(tmap.char[origins[entry]])
        target = next(c for c in chunks if c.doc_id == f"d{doc}" and c.start <= char < c.end)
        attention = mem.entry_attention("QQQQ", [(0, 1)])
        assert int(attention.mass[0].argmax()) == entry and float(attention.mass[0, entry]) > 0.9
        found = AttentionRanker(mem, head_set_for(mem, [(0, 1)])).search("QQQQ", chunks, 3)
        hits = found.hits
        assert hits[0].passage.id == target.chunk_id


def test_planted_masses_rank_through_the_pipeline(tok, monkeypatch):
    mem = load(tok)
    rag = MemoRAG(
        memory=mem,
        embedder=shared_embedder(),
        head_set=head_set_for(mem),
        retrieval="heads",
        heads_weight=4.0,
        retrieval_chunk_size=16,
        chunk_overlap=0,
    )
    rag.memorize(DOCS)
    target = next(c for c in rag.index.chunks if c.doc_id == "d3")

    def planted(query, heads):
        snap = mem._snap
        origins = entry_origins(snap.ready, len(mem.prefix_ids), snap.text_tokens)
        tmap = snap.token_map
        doc = torch.where(origins >= 0, tmap.doc[origins.clamp_min(0)].long(), -1)
        char = tmap.char[origins.clamp_min(0)].long()
        inside = (doc == 3) & (char >= target.start) & (char < target.end)
        mass = torch.where(inside, 1.0, 0.01).float().repeat(len(heads), 1)
        return EntryAttention(tuple(heads), mass, origins.repeat(len(heads), 1), tmap)

    monkeypatch.setattr(mem, "entry_attention", planted)
    result = rag.retrieve("Which line is it?", 3)
    assert result.route == "heads"
    assert result.passages[0].passage.id == target.chunk_id
    assert "attention" in {c.kind for c in result.passages[0].found_by}


def test_head_sets_for_other_models_are_refused(tok, llama):
    from tiny_models import tiny_tokenizer

    from shared_core.memory.compressed_kv import CompressedKVMemory

    mem = load(tok)
    mem.memorize(DOCS)
    kv = CompressedKVMemory(
        llama,
        tiny_tokenizer(),
        window=64,
        show_progress=False,
        compress="always",
        scorer="key_norm",
    )
    for foreign in (HeadSet("x", "0" * 16, HEADS), head_set_for(kv)):
        with pytest.raises(IncompatibleMemoryError, match="calibrated on"):
            AttentionRanker(mem, foreign)
        with pytest.raises(IncompatibleMemoryError, match="calibrate-heads"):
            rag = MemoRAG(memory=mem, embedder=shared_embedder(), head_set=foreign)
            rag.memorize(DOCS)
            rag.retrieve("owls?", 2)
    with pytest.raises(IncompatibleMemoryError):
        AttentionRanker(kv, head_set_for(mem))
    with pytest.raises(InputError, match="outside"):
        mem.entry_attention("q", [(3, 0)])
    assert load(tok, ratio=8).fingerprint() == mem.fingerprint()  # the heads belong to weights


def test_without_a_head_set_the_beacon_memory_takes_the_clue_path(tok):
    rag = MemoRAG(memory=load(tok), embedder=shared_embedder(), clue_strategy="none")
    rag.memorize(DOCS)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = rag.retrieve("Where was Marsh born?", 2)
        second = rag.retrieve("Who built it?", 2)
    assert first.route == second.route == "clues"
    assert first.notes and "no retrieval head set" in first.notes[0]
    assert sum("no retrieval head set" in str(w.message) for w in caught) <= 1


def _write_set(folder, docs, questions):
    folder.mkdir()
    rows = [json.dumps({"doc_id": d.doc_id, "title": "", "text": d.text}) for d in docs]
    (folder / "corpus.jsonl").write_text("\n".join(rows) + "\n")
    (folder / "questions.jsonl").write_text("\n".join(json.dumps(q) for q in questions) + "\n")


QUESTIONS = [
    {
        "id": "q1",
        "question": "Where was Marsh born?",
        "context_doc_ids": ["d0", "d1", "d2", "d3"],
        "evidence": {"doc_ids": ["d1"]},
    },
    {
        "id": "q2",
        "question": "What did the keeper's log record?",
        "context_doc_ids": ["d2", "d3"],
        "evidence": {"doc_ids": ["d3"]},
    },
]


def test_calibrated_heads_take_the_heads_route_end_to_end(tok, tmp_path):
    _write_set(tmp_path / "set", DOCS, QUESTIONS)
    calib = load(tok)
    hs = calibrate_heads(tmp_path / "set", memory=calib, top=3, show_progress=False)
    assert hs.fingerprint == calib.fingerprint() and len(hs.heads) == 3
    assert "beacon (ratio 4)" in hs.calibration["metric"]
    rag = MemoRAG(
        memory=load(tok),
        embedder=shared_embedder(),
        head_set=hs,
        retrieval_chunk_size=16,
        chunk_overlap=0,
    )
    rag.memorize(DOCS, save_dir=tmp_path / "p")
    result = rag.retrieve("Where was the builder of the lighthouse born?", 3)
    assert result.route == "heads" and "heads" in result.timings
    assert any("attention" in {c.kind for c in p.found_by} for p in result.passages)
    again = MemoRAG.from_dir(tmp_path / "p", memory=load(tok), embedder=shared_embedder())
    assert again.retrieve("Who built it?", 2).route == "heads"


def test_calibrate_heads_builds_the_beacon_memory_for_a_memorag_model(tok, tmp_path):
    from shared_core.cli import main

    _write_set(tmp_path / "set", DOCS, QUESTIONS[1:])
    folder = tmp_path / "memorag-tiny-qwen2"
    shutil.copytree(MODEL, folder)
    tok.save_pretrained(folder)
    out = tmp_path / "heads.json"
    args = ["calibrate-heads", str(tmp_path / "set"), "--model", str(folder), "--top", "2"]
    assert main([*args, "--out", str(out)]) == 0
    hs = HeadSet.load(out)
    assert hs.fingerprint == load(tok).fingerprint() and len(hs.heads) == 2
    with pytest.raises(InputError, match="backend"):
        calibrate_heads(tmp_path / "set", model=str(folder), backend="gist")
