"""Memory-native retrieval mechanics on tiny random models: entry origins map to the right
chunks (after compression, ``add`` and save/load), the query pass matches eager attention and
never builds an attention matrix over the text, planted attention ranks its passage first, and
head sets round-trip and are refused for another model."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file
from scripted import shared_embedder
from tiny_models import tiny_model

from shared_core.errors import IncompatibleMemoryError, InputError, PersistenceError
from shared_core.head_sets import HeadSet, shipped_head_sets
from shared_core.heads.ranker import AttentionRanker, chunk_keys
from shared_core.memory import attention_probe
from shared_core.memory.attention_probe import EntryAttention
from shared_core.memory.compressed_kv import CompressedKVMemory
from shared_core.memory.entry_map import chunk_mass
from shared_core.models.loading import model_fingerprint
from shared_core.pipeline import MemoRAG
from shared_core.retrieval.chunking import TokenChunker
from shared_core.types import Document

DOCS = [
    Document(" ".join(f"Alpha line {i} about ferns." for i in range(12)), "a"),
    Document(" ".join(f"Beta line {i} about owls." for i in range(12)), "b"),
    Document(" ".join(f"Gamma line {i} about rivers." for i in range(12)), "c"),
]
HEADS = ((0, 1), (1, 3))


def make(model, tokenizer, **kw) -> CompressedKVMemory:
    kw.setdefault("window", 64)
    kw.setdefault("reserve_tokens", 64)
    return CompressedKVMemory(
        model, tokenizer, show_progress=False, **{"compress": "always", "scorer": "key_norm", **kw}
    )


def head_set_for(mem: CompressedKVMemory, heads=HEADS) -> HeadSet:
    return HeadSet(mem.name, model_fingerprint(mem.model), heads, calibration={"data": ["test"]})


def check_origins(mem: CompressedKVMemory, docs: list[Document]) -> int:
    """Every kept text entry maps to a (doc, char) whose character its token spells."""
    state = mem._state
    assert state is not None and state.origins is not None and state.token_map is not None
    tmap, checked = state.token_map, 0
    joined_ids = None
    for layer, origins in enumerate(state.origins):
        assert origins.shape == state.positions[layer].shape
        for o in origins[origins >= 0].unique().tolist():
            d, c = int(tmap.doc[o]), int(tmap.char[o])
            if d < 0:
                continue
            joined_ids = joined_ids or _text_ids(mem, docs)
            piece = mem.tokenizer.decode([joined_ids[o]])
            assert docs[d].text[c] in piece, (o, d, c, piece)
            checked += 1
    return checked


def _text_ids(mem: CompressedKVMemory, docs: list[Document]) -> list[int]:
    ids: list[int] = []
    for n, doc in enumerate(docs):
        ids += mem.format.encode(("\n\n" if n else "") + doc.text)
    return ids


def naive_chunk_mass(mem, mass, origins, chunks):
    tmap = mem._state.token_map
    out = torch.zeros(mass.shape[0], len(chunks), dtype=torch.float64)
    for h in range(mass.shape[0]):
        for e in range(mass.shape[1]):
            o = int(origins[h, e])
            if o < 0 or int(tmap.doc[o]) < 0:
                continue
            for j, (d, s, t) in enumerate(chunks):
                if int(tmap.doc[o]) == d and s <= int(tmap.char[o]) < t:
                    out[h, j] += float(mass[h, e])
    return out


@pytest.mark.parametrize("ratio", [1, 4])
def test_entries_map_to_their_chunks_after_compression(ratio, llama, tokenizer):
    mem = make(llama, tokenizer, beacon_ratio=ratio)
    mem.memorize(DOCS)
    assert check_origins(mem, DOCS) > 0
    chunks = TokenChunker(chunk_tokens=20, overlap_tokens=4).split(DOCS)
    keys = chunk_keys(mem, chunks)
    state = mem._state
    origins = torch.stack([state.origins[layer][h // 2] for layer, h in HEADS])
    mass = torch.rand(origins.shape)
    got = chunk_mass(mass, origins, state.token_map, keys)
    torch.testing.assert_close(got, naive_chunk_mass(mem, mass, origins, keys))
    kept = (origins >= 0).sum().item()
    assert kept == origins.shape[0] * (state.entries - len(mem.prefix_ids) - len(mem.suffix_ids))


def test_compact_positions_keep_true_origins(tokenizer):
    model = tiny_model("llama", max_positions=600)
    mem = make(model, tokenizer, beacon_ratio=4)
    text_docs = DOCS * 1
    mem.memorize(text_docs)
    state = mem._state
    assert state.mode == "compact"
    assert check_origins(mem, text_docs) > 0
    # compact positions were renumbered; origins still span the whole text
    assert int(state.origins[0].max()) > int(state.positions[0].max())


def test_origins_after_add_and_save_load(llama, tokenizer, tmp_path):
    mem = make(llama, tokenizer, beacon_ratio=2)
    mem.memorize(DOCS[:1])
    mem.add(DOCS[1:])
    assert check_origins(mem, DOCS) > 0
    assert set(mem._state.token_map.doc.tolist()) >= {0, 1, 2}
    mem.save(tmp_path / "m")
    again = make(llama, tokenizer, beacon_ratio=2)
    again.load(tmp_path / "m")
    for a, b in zip(mem._state.origins, again._state.origins, strict=True):
        assert torch.equal(a, b)
    assert torch.equal(mem._state.token_map.char, again._state.token_map.char)
    assert check_origins(again, DOCS) > 0
    chunks = TokenChunker(chunk_tokens=20, overlap_tokens=0).split(DOCS)
    ranker = AttentionRanker(again, head_set_for(again))
    hits = ranker.search("owls?", chunks, 3).hits
    assert len(hits) == 3 and {h.passage.id for h in hits} <= {c.chunk_id for c in chunks}


def test_lying_origins_are_refused(llama, tokenizer, tmp_path):
    mem = make(llama, tokenizer, beacon_ratio=2)
    mem.memorize(DOCS)
    mem.save(tmp_path / "m")
    snap = next(p for p in (tmp_path / "m").iterdir() if p.is_dir())
    path = snap / "memory.safetensors"
    tensors = load_file(str(path))
    tensors["o.0"] = tensors["o.0"] + 10_000
    save_file(tensors, str(path))
    manifest = json.loads((snap / "manifest.json").read_text())
    from shared_core.persistence import file_record

    manifest["files"]["memory.safetensors"] = file_record(path)
    (snap / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PersistenceError, match="origins"):
        make(llama, tokenizer, beacon_ratio=2).load(tmp_path / "m")


def test_query_pass_matches_eager_attention(tokenizer):
    model = tiny_model("llama")
    model.config._attn_implementation = "eager"
    mem = make(model, tokenizer, beacon_ratio=1)
    mem.memorize(DOCS[:2])
    state = mem._state
    query = "Which line is about owls?"
    ids = mem.format.continuation(mem.intro, mem.ack, (), query)
    rows = attention_probe.question_rows(
        ids, mem.format.continuation(mem.intro, mem.ack, (), "N/A")
    )
    got = attention_probe.entry_mass(
        model, _fork(state), ids, state.next_position, rows, HEADS, state.entries
    )
    full = mem.prefix_ids + _text_ids(mem, DOCS[:2]) + mem.suffix_ids + ids
    with torch.inference_mode():
        out = model(torch.tensor([full]), output_attentions=True)
    e = state.entries
    for n, (layer, head) in enumerate(HEADS):
        att = out.attentions[layer][0, head, e + rows[0] : e + rows[1], :e].mean(0)
        torch.testing.assert_close(got[n], att.float(), atol=1e-5, rtol=1e-4)


def _fork(state):
    from shared_core.memory.kv_state import cache_of as _cache_of

    return _cache_of(state.keys, state.values)


def test_query_pass_never_builds_a_text_by_text_matrix(
    llama, tokenizer, monkeypatch, result_shapes
):
    mem = make(llama, tokenizer, beacon_ratio=1)
    mem.memorize(DOCS)
    entries = mem._state.entries
    shapes = result_shapes()
    sdpa = torch.nn.functional.scaled_dot_product_attention
    queries: list[int] = []

    def sdpa_spy(q, k, v, *args, **kwargs):
        queries.append(q.shape[-2])
        return sdpa(q, k, v, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", sdpa_spy)
    result = mem.entry_attention("Which line is about owls?", HEADS)
    assert result.mass.shape == (len(HEADS), entries)
    assert shapes, "the probe computed nothing"
    for shape in shapes:  # [heads, query rows, entries + query]: never entries x entries
        assert len(shape) < 2 or shape[-2] < entries // 4, shape
    assert max(queries, default=0) < entries // 4  # the direct pass (probe_forward) has none


def test_planted_attention_ranks_its_passage_first(llama, tokenizer, monkeypatch):
    mem = make(llama, tokenizer, beacon_ratio=4)
    hs = head_set_for(mem)
    rag = MemoRAG(
        memory=mem, embedder=shared_embedder(), head_set=hs, retrieval="heads", heads_weight=4.0
    )
    rag.memorize(DOCS)
    target = next(c for c in rag.index.chunks if c.doc_id == "c")

    def planted(query, heads):
        state = mem._state
        origins = torch.stack([state.origins[layer][h // 2] for layer, h in heads])
        tmap = state.token_map
        valid = origins >= 0
        doc = torch.where(valid, tmap.doc[origins.clamp_min(0)].long(), -1)
        char = tmap.char[origins.clamp_min(0)].long()
        inside = (doc == 2) & (char >= target.start) & (char < target.end)
        mass = torch.where(inside, 1.0, 0.01).float()
        return EntryAttention(tuple(heads), mass, origins, tmap)

    monkeypatch.setattr(mem, "entry_attention", planted)
    result = rag.retrieve("Which line is it?", 3)
    assert result.route == "heads"
    assert result.passages[0].passage.id == target.chunk_id
    assert "attention" in {c.kind for c in result.passages[0].found_by}
    assert "heads" in result.timings
    scores = [p.score for p in result.passages]
    assert scores == sorted(scores, reverse=True)
    assert all(-1.0 <= s <= 1.0 for s in scores)


def test_head_set_round_trips_and_is_refused_for_another_model(llama, qwen2, tokenizer, tmp_path):
    mem = make(llama, tokenizer)
    hs = head_set_for(mem)
    hs.save(tmp_path / "h.json")
    assert HeadSet.load(tmp_path / "h.json") == hs
    other = make(qwen2, tokenizer)
    with pytest.raises(IncompatibleMemoryError, match="calibrated on"):
        AttentionRanker(other, hs)
    with pytest.raises(InputError):
        HeadSet("m", "f", ())
    (tmp_path / "bad.json").write_text('{"format": "nope"}')
    with pytest.raises(PersistenceError):
        HeadSet.load(tmp_path / "bad.json")


def test_head_set_is_saved_with_the_pipeline_and_refused_elsewhere(llama, tokenizer, tmp_path):
    mem = make(llama, tokenizer)
    hs = head_set_for(mem)
    rag = MemoRAG(memory=mem, embedder=shared_embedder(), head_set=hs)
    rag.memorize(DOCS, save_dir=tmp_path / "s")
    snap = next(p for p in (tmp_path / "s").iterdir() if p.is_dir())
    saved = json.loads((snap / "manifest.json").read_text())["pipeline"]["head_set"]
    assert HeadSet.from_json(saved) == hs
    again = MemoRAG(memory=make(llama, tokenizer), embedder=shared_embedder())
    again.load(tmp_path / "s")
    assert again.retrieve("owls?", 2).route == "heads"
    other = HeadSet("x", "0" * 16, HEADS)
    from shared_core.heads.route import AttentionRoute

    with pytest.raises(IncompatibleMemoryError):
        AttentionRoute(head_set=other).adopt_saved(snap, {"head_set": other.to_json()}, mem)


def test_no_head_set_warns_once_and_says_so(llama, tokenizer):
    rag = MemoRAG(memory=make(llama, tokenizer), embedder=shared_embedder(), clue_strategy="none")
    rag.memorize(DOCS)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = rag.retrieve("owls?", 2)
        second = rag.retrieve("ferns?", 2)
    assert first.route == second.route == "clues"
    assert first.notes and "no retrieval head set" in first.notes[0]
    assert sum("no retrieval head set" in str(w.message) for w in caught) <= 1
    strict = MemoRAG(memory=rag.memory, embedder=shared_embedder(), retrieval="heads")
    strict.memorize(DOCS)
    with pytest.raises(InputError, match="needs retrieval heads"):
        strict.retrieve("owls?", 2)


def test_shipped_head_set_is_for_the_embedded_model():
    sets = shipped_head_sets()
    assert any("SmolLM2-135M" in s.model for s in sets)
    for s in sets:
        assert s.calibration.get("data") and len(s.scores) == len(s.heads)


def _write_set(folder, docs, questions):
    folder.mkdir()
    rows = [json.dumps({"doc_id": d.doc_id, "title": "", "text": d.text}) for d in docs]
    (folder / "corpus.jsonl").write_text("\n".join(rows) + "\n")
    (folder / "questions.jsonl").write_text("\n".join(json.dumps(q) for q in questions) + "\n")


def test_calibrate_heads_reads_the_data_layout(llama, tokenizer, tmp_path):
    from shared_core.cli import main
    from shared_core.heads.calibration import calibrate_heads

    questions = [
        {
            "id": "q1",
            "question": "owls?",
            "context_doc_ids": ["a", "b", "c"],
            "evidence": {"doc_ids": ["b"]},
        },
        {
            "id": "q2",
            "question": "rivers?",
            "context_doc_ids": ["a", "c"],
            "evidence": {"doc_ids": ["c"]},
        },
    ]
    _write_set(tmp_path / "set", DOCS, questions)
    mem = make(llama, tokenizer, beacon_ratio=1)
    hs = calibrate_heads(tmp_path / "set", memory=mem, top=3, show_progress=False)
    assert len(hs.heads) == 3 and len(hs.scores) == 3
    assert list(hs.scores) == sorted(hs.scores, reverse=True)
    assert hs.fingerprint == model_fingerprint(llama)
    assert hs.calibration["data"] == ["set"] and hs.calibration["questions"] == 2
    AttentionRanker(mem, hs)  # accepted for its own model
    bad = tmp_path / "bad"
    bad.mkdir()
    with pytest.raises(InputError, match="paragraph layout"):
        calibrate_heads(bad, memory=mem)
    assert main(["calibrate-heads", "--help"]) == 0


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
def test_heads_route_over_every_search_mode_and_a_large_index(mode, llama, tokenizer, monkeypatch):
    """The heads re-rank the candidates (each search ``candidate_k`` deep), through the BM25
    wrapper too: the last candidate rises to the top when the heads attend to it, and a chunk
    no search returned is never scored, however much attention it gets."""
    pytest.importorskip("bm25s")
    docs = [
        Document(" ".join(f"{w} note {i} on topic {w}." for i in range(30)), w)
        for w in ("ferns", "owls", "rivers", "stones")
    ]
    mem = make(llama, tokenizer, beacon_ratio=4)
    rag = MemoRAG(
        memory=mem,
        embedder=shared_embedder(),
        head_set=head_set_for(mem),
        retrieval="heads",
        heads_weight=4.0,  # the planted list must reach the top 5 at any default weight
        search_mode=mode,
        search_k=2,
        candidate_k=40,
        retrieval_chunk_size=8,
        chunk_overlap=0,
    )
    rag.memorize(docs)
    query = "Which note is it?"
    chunks = rag.index.chunks
    candidates = rag.index.search(query, 40)  # the depth of each search on the heads route
    searched = {h.passage.id for h in candidates}
    assert len(chunks) > 40 + 10 and len(searched) == 40
    outside = next(c for c in reversed(chunks) if c.chunk_id not in searched)
    inside = rag.index.get(candidates[-1].passage.id)

    def planted(target):
        doc_no = [d.doc_id for d in docs].index(target.doc_id)

        def attention(query, heads):  # all the mass on one chunk
            state = mem._state
            origins = torch.stack([state.origins[layer][h // 2] for layer, h in heads])
            tmap = state.token_map
            doc = torch.where(origins >= 0, tmap.doc[origins.clamp_min(0)].long(), -1)
            char = tmap.char[origins.clamp_min(0)].long()
            hit = (doc == doc_no) & (char >= target.start) & (char < target.end)
            return EntryAttention(tuple(heads), torch.where(hit, 1.0, 0.0).float(), origins, tmap)

        return attention

    monkeypatch.setattr(mem, "entry_attention", planted(inside))
    result = rag.retrieve(query, 5)
    found = {p.passage.id: p for p in result.passages}
    assert result.route == "heads" and inside.chunk_id in found
    assert "attention" in {c.kind for c in found[inside.chunk_id].found_by}
    assert -1.0 <= found[inside.chunk_id].score <= 1.0
    monkeypatch.setattr(mem, "entry_attention", planted(outside))
    result = rag.retrieve(query, 5)
    assert outside.chunk_id not in {p.passage.id for p in result.passages}
